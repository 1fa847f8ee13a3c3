"""Matplotlib figures for notebooks: view pairs, training curves, 2-D embeddings, retrieval.

Each function returns a `matplotlib.figure.Figure` (titled, axes labelled) and draws nothing
else; matplotlib is imported when a function is called (`pip install "keras_byol[notebooks]"`).
Images are (N, H, W, C) uint8 in [0, 255] or float in [0, 1], C = 1 or 3.
"""

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            'keras_byol.plots needs matplotlib: pip install "keras_byol[notebooks]"'
        ) from error
    return plt


def _displayable(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32), 0.0, 1.0)
    return image[..., 0] if image.shape[-1] == 1 else image


def _show(axis, image, title=None):
    image = _displayable(image)
    axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=9)


def show_view_pairs(images, view1, view2, *, max_images=8):
    """Originals (top row) above their view 1 and view 2 (rows 2 and 3).

    Args:
        images: (N, H, W, C) source images; view1, view2: (N, S, S, 3) their two views.
    """
    plt = _pyplot()
    n = min(len(images), max_images)
    figure, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for column in range(n):
        _show(axes[0, column], images[column], "image" if column == 0 else None)
        _show(axes[1, column], view1[column], "view 1" if column == 0 else None)
        _show(axes[2, column], view2[column], "view 2" if column == 0 else None)
    figure.suptitle("BYOL's two random views of each image")
    figure.tight_layout()
    return figure


def plot_history(history, keys=None):
    """One panel per logged metric against the epoch (loss, τ, learning rate, monitors).

    Args:
        history: `model.fit(...).history`, {metric: [value per epoch]}.
        keys: metrics to draw (default: every metric with a finite value).
    """
    plt = _pyplot()
    keys = [
        k
        for k in (keys or sorted(history))
        if k in history and np.isfinite(np.asarray(history[k], np.float64)).any()
    ]
    if not keys:
        raise ValueError(f"No metric to plot; the history has {sorted(history)}.")
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for axis, key in zip(axes.flat, keys):
        values = np.asarray(history[key], np.float64)
        axis.plot(np.arange(1, len(values) + 1), values, marker="o", label=key)
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.legend()
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_visible(False)
    figure.suptitle("Training curves")
    figure.tight_layout()
    return figure


def plot_embedding_2d(points, labels, *, title="Embeddings in 2-D", class_names=None):
    """A scatter of 2-D points (e.g. t-SNE of encoder features) coloured by class.

    Args:
        points: (N, 2) coordinates; labels: (N,) int class of each point.
    """
    plt = _pyplot()
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(
            f"points must be (N, 2) with N labels; got {points.shape}, {labels.shape}."
        )
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    colours = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
    for label in np.unique(labels):
        chosen = labels == label
        name = class_names[label] if class_names is not None else str(label)
        axis.scatter(*points[chosen].T, s=8, color=colours(int(label) % colours.N), label=name)
    axis.set_title(title)
    axis.set_xlabel("dimension 1")
    axis.set_ylabel("dimension 2")
    axis.legend(title="class", markerscale=2, fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def show_retrieval(query_images, bank_images, indices, similarities=None, *, max_queries=6):
    """One row per query: the query image, then its nearest bank images, best first.

    Args:
        query_images: (Q, H, W, C); bank_images: (N, H, W, C); indices: (Q, k) bank indices
        from `evaluation.nearest_neighbors`; similarities: (Q, k) cosine similarities.
    """
    plt = _pyplot()
    indices = np.asarray(indices)
    rows, k = min(len(query_images), max_queries), indices.shape[1]
    figure, axes = plt.subplots(rows, k + 1, figsize=(1.5 * (k + 1), 1.6 * rows), squeeze=False)
    for row in range(rows):
        _show(axes[row, 0], query_images[row], "query" if row == 0 else None)
        for column, index in enumerate(indices[row]):
            title = None
            if similarities is not None:
                title = f"{similarities[row][column]:.2f}"
            elif row == 0:
                title = f"#{column + 1}"
            _show(axes[row, column + 1], bank_images[index], title)
    figure.suptitle("Nearest neighbours by cosine similarity of encoder features")
    figure.tight_layout()
    return figure


def normalization_ablation(summary):
    """The normalization ablation (`keras_byol.ablation.summarize`): collapse and accuracy.

    Left: the collapse monitor's `projection_std` per epoch for each variant (mean over
    seeds), with the healthy level 1/√d dashed. Right: linear and 20-NN accuracy of each
    variant beside the same architecture with random weights (bars at the mean over seeds,
    whiskers from min to max). A variant whose every run diverged has no curve and no bars.
    """
    plt = _pyplot()
    if not summary:
        raise ValueError("The ablation summary is empty: run at least one variant.")
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(12.5, 4.2))
    for entry in summary:
        values = entry["projection_std_curve"]
        if values:
            curves.plot(np.arange(1, len(values) + 1), values, marker="o", label=entry["label"])
    curves.axhline(
        summary[0]["healthy_projection_std"], color="grey", linestyle="--", label="1/√d (healthy)"
    )
    curves.set_title("Collapse monitor")
    curves.set_xlabel("epoch")
    curves.set_ylabel("projection_std (0 = collapsed)")
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)

    columns = (
        ("linear", "BYOL linear"),
        ("random_linear", "random linear"),
        ("knn20", "BYOL 20-NN"),
        ("random_knn20", "random 20-NN"),
    )
    width = 0.8 / len(columns)
    positions = np.arange(len(summary))
    for offset, (key, label) in enumerate(columns):
        spreads = [entry[key] for entry in summary]
        means = np.array([s["mean"] if s else np.nan for s in spreads])
        low = np.array([s["mean"] - s["min"] if s else 0.0 for s in spreads])
        high = np.array([s["max"] - s["mean"] if s else 0.0 for s in spreads])
        bars.bar(
            positions + (offset - 1.5) * width, means, width, yerr=[low, high], label=label,
            hatch="//" if key.startswith("random") else None, capsize=2,
        )  # fmt: skip
    bars.set_xticks(positions)
    bars.set_xticklabels([entry["label"] for entry in summary], rotation=20, ha="right", fontsize=8)
    bars.set_ylabel("held-out accuracy")
    bars.set_ylim(0, 1)
    bars.set_title("Accuracy of the frozen encoder")
    bars.legend(fontsize=8)
    bars.grid(alpha=0.3, axis="y")
    figure.suptitle("Normalization ablation (same recipe, seed and budget per variant)")
    figure.tight_layout()
    return figure

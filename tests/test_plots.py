"""Notebook helpers: nearest-neighbour retrieval (exact) and the figures (drawn with Agg)."""

import numpy as np
import pytest

from keras_byol import evaluation

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from keras_byol import plots  # noqa: E402


def test_nearest_neighbors_equal_a_brute_force_sort():
    rng = np.random.default_rng(0)
    bank, query = rng.standard_normal((50, 6)), rng.standard_normal((7, 6))
    indices, similarity = evaluation.nearest_neighbors(query, bank, k=4, chunk_size=3)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cosine = unit(query) @ unit(bank).T
    np.testing.assert_array_equal(indices, np.argsort(-cosine, axis=1)[:, :4])
    np.testing.assert_allclose(similarity, -np.sort(-cosine, axis=1)[:, :4], rtol=1e-5)
    # an image's own feature is its own best match
    self_indices, _ = evaluation.nearest_neighbors(bank[:5], bank, k=1)
    np.testing.assert_array_equal(self_indices[:, 0], np.arange(5))


def test_nearest_neighbors_bad_input():
    with pytest.raises(ValueError, match="k must be in"):
        evaluation.nearest_neighbors(np.ones((2, 3)), np.ones((4, 3)), k=5)
    with pytest.raises(ValueError, match="same D"):
        evaluation.nearest_neighbors(np.ones((2, 3)), np.ones((4, 2)), k=1)


def test_figures_have_the_panels_and_titles():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 12, 12, 1), dtype=np.uint8)
    views = rng.random((5, 8, 8, 3), dtype=np.float32)
    figure = plots.show_view_pairs(images, views, views[::-1], max_images=4)
    assert len(figure.axes) == 12 and figure.axes[4].get_title() == "view 1"
    assert len(figure.axes[0].get_images()) == 1

    history = {"loss": [2.0, 1.5, 1.4], "tau": [0.99, 0.995, 1.0], "probe_accuracy": [None] * 3}
    figure = plots.plot_history({k: v for k, v in history.items() if k != "probe_accuracy"})
    titles = [axis.get_title() for axis in figure.axes if axis.get_visible()]
    assert titles == ["loss", "tau"] and figure.axes[0].get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="No metric"):
        plots.plot_history({"loss": [float("nan")]})

    points, labels = rng.standard_normal((30, 2)), np.arange(30) % 3
    figure = plots.plot_embedding_2d(points, labels, class_names=["a", "b", "c"])
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["a", "b", "c"]

    indices, similarity = evaluation.nearest_neighbors(views.reshape(5, -1), views.reshape(5, -1))
    figure = plots.show_retrieval(views, views, indices[:, :3], similarity[:, :3])
    assert len(figure.axes) == 5 * 4 and figure.axes[1].get_title() == "1.00"

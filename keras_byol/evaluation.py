"""Evaluation of the online encoder: linear probe, kNN, the spec's linear protocol,
fine-tuning and label subsets (semi-supervised), and loading exported encoders.

Images are float32 in [0, 1], (N, H, W, 3); labels int (N,) ≥ 0. Functions taking
`train`/`test` accept (images, labels) arrays or `tf.data` datasets of such batches.
"""

import math
import os

import keras
import numpy as np


def extract_features(encoder, images, batch_size=256):
    """(N, D) float32 features of the encoder in inference mode (BatchNorm moving stats).

    `images`: an (N, H, W, 3) array or a dataset of image batches.
    """
    features = np.asarray(encoder.predict(images, batch_size=batch_size, verbose=0), np.float32)
    check_features(features)
    return features


def check_features(features):
    """Raises ValueError unless `features` is (N, D): what every protocol here needs."""
    if np.ndim(features) != 2:
        raise ValueError(
            f"The encoder must output (batch, features); it outputs shape {np.shape(features)}. "
            "End it with keras.layers.GlobalAveragePooling2D() (or Flatten)."
        )


def load_encoder(path):
    """The encoder stored at `path`, as a Keras model (images → (B, D) features).

    Args:
        path: a `.keras` file (a `keras_byol.BYOL` — its ONLINE encoder is returned — or an
            encoder model), or a SavedModel folder written by `export.export_encoder` (its
            `serve` signature, wrapped in `keras.layers.TFSMLayer`; inference mode only).

    Raises:
        ValueError: no such file, or a SavedModel without a `serve` signature.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ValueError(f"No model file at {path!r}.")
        model = _loaded(path, keras.models.load_model, "a .keras model file")
        return getattr(model, "encoder", model)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"{path!r} is neither a .keras file nor a SavedModel folder; pass "
            "WORKDIR/encoder (the export) or WORKDIR/byol.keras of a training run."
        )
    import tensorflow as tf

    signatures = _loaded(path, tf.saved_model.load, "a SavedModel").signatures
    if "serve" not in signatures:
        raise ValueError(
            f"The SavedModel at {path!r} has no 'serve' signature (it has "
            f"{sorted(signatures)}). Export the encoder with keras_byol.export.export_encoder, "
            "or pass the .keras model instead."
        )
    (spec,) = signatures["serve"].structured_input_signature[1].values()
    encoder = keras.Sequential(
        [keras.Input(tuple(spec.shape[1:])), keras.layers.TFSMLayer(path, call_endpoint="serve")]
    )
    encoder.from_saved_model = True
    return encoder


def _loaded(path, load, kind):
    """load(path), or a ValueError saying the file is damaged (truncated, bad bytes)."""
    try:
        return load(path)
    except Exception as error:  # Keras and TensorFlow raise many types for a bad file
        text = str(error).strip()
        first_line = text.splitlines()[0][:300] if text else ""
        raise ValueError(
            f"{path!r} is not a readable {kind} ({type(error).__name__}: {first_line}); it "
            "is truncated or damaged. Copy it again, or export it again from the run's "
            "checkpoint."
        ) from None


def label_subset(labels, fraction, seed=0):
    """Positions of a fixed, class-balanced, seeded fraction of the labelled examples.

    Each class keeps fraction × its count examples (rounded half up), chosen by a
    seeded permutation: the semi-supervised protocol's 1% / 10% subsets.

    Raises:
        ValueError: fraction outside (0, 1], or a class left without any example.
    """
    labels = np.asarray(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1]; got {fraction}.")
    _check_labels(labels, labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(math.floor(fraction * len(members) + 0.5))  # round half up
        if count == 0:
            raise ValueError(
                f"label_fraction={fraction} leaves class {label} (with {len(members)} "
                f"examples) empty; use a fraction of at least {1 / len(members):.3g}."
            )
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    epochs=100,
    batch_size=256,
    base_learning_rate=0.2,
    seed=0,
):
    """Top-1 accuracy of a linear classifier on frozen features (the spec's optimizer).

    Features are standardized with the training statistics; the classifier is trained with
    SGD, Nesterov momentum 0.9, LR base × batch/256 with cosine decay, no weight decay.

    Returns:
        float, top-1 accuracy on the test features.
    """
    _check_labels(train_labels, test_labels)
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    keras.utils.set_random_seed(seed)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(base_learning_rate * batch_size / 256, steps)
    classifier = keras.Sequential(
        [keras.Input((x_train.shape[1],)), keras.layers.Dense(num_classes)]
    )
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(x_train, train_labels, batch_size=batch_size, epochs=epochs, verbose=0)
    return float(classifier.evaluate(x_test, test_labels, verbose=0)[1])


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k=20,
    temperature=None,
    chunk_size=1024,
):
    """Top-1 accuracy of a k-NN vote on cosine similarity, in chunks of test features.

    `temperature=None` gives a plain majority vote; a float weights each neighbour by
    exp(similarity / temperature) (the k=200, T=0.1 monitor of peers). Ties go to the lowest
    class index (as `np.bincount(...).argmax()` in the quality peer).
    """
    _check_labels(train_labels, test_labels)
    train, test = _unit_rows(train_features), _unit_rows(test_features)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test), chunk_size):
        similarity = test[start : start + chunk_size] @ train.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, neighbours, axis=1)
        weights = np.ones_like(weights) if temperature is None else np.exp(weights / temperature)
        votes = np.zeros((len(neighbours), num_classes))
        np.add.at(votes, (np.arange(len(neighbours))[:, None], train_labels[neighbours]), weights)
        correct += int(np.sum(votes.argmax(1) == test_labels[start : start + chunk_size]))
    return correct / len(test)


def linear_and_knn(encoder, train, test, *, epochs=100, k=20, seed=0):
    """Linear-probe and k-NN top-1 accuracy of a frozen encoder's features.

    Args:
        encoder: a Keras model (B, H, W, 3) float [0, 1] → (B, D).
        train, test: (images (N, H, W, 3) float32 in [0, 1], labels (N,) int) tuples.
        epochs: linear-probe epochs; k: neighbours of the majority vote.

    Returns:
        {"linear": float, f"knn{k}": float}.
    """
    train_features = extract_features(encoder, train[0])
    test_features = extract_features(encoder, test[0])
    return {
        "linear": linear_probe(
            train_features, train[1], test_features, test[1], epochs=epochs, seed=seed
        ),
        f"knn{k}": knn_accuracy(train_features, train[1], test_features, test[1], k=k),
    }


def _unit_rows(features):
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_neighbors(query_features, bank_features, k=5, *, chunk_size=1024):
    """Indices (Q, k) of the k most cosine-similar bank rows for each query, best first.

    Args:
        query_features: (Q, D) features; bank_features: (N, D) features, N ≥ k.

    Returns:
        (indices (Q, k) int64, similarities (Q, k) float32), similarity descending.
    """
    query, bank = _unit_rows(query_features), _unit_rows(bank_features)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Features must be (Q, D) and (N, D) with the same D; got {query.shape} and "
            f"{bank.shape}."
        )
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be in [1, {len(bank)}] (the bank size); got {k}.")
    indices, similarities = [], []
    for start in range(0, len(query), chunk_size):
        similarity = query[start : start + chunk_size] @ bank.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-top_similarity, axis=1, kind="stable")
        indices.append(np.take_along_axis(top, order, axis=1))
        similarities.append(np.take_along_axis(top_similarity, order, axis=1))
    return np.concatenate(indices).astype(np.int64), np.concatenate(similarities)


def _check_labels(train_labels, test_labels):
    if (
        len(train_labels) == 0
        or len(test_labels) == 0
        or min(train_labels.min(), test_labels.min()) < 0
    ):
        raise ValueError(
            "Evaluation needs class labels for every train and test example; this source has "
            "none (label −1). Use a labelled split or a folder with one subfolder per class."
        )


# ------------------------------------------------------------------ classifier protocols
def _classification_metrics(num_classes):
    top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5")
    return [keras.metrics.SparseCategoricalAccuracy(name="top1"), top5]


def _sgd(base_learning_rate, batch_size, total_steps):
    """SGD, Nesterov momentum 0.9, LR base × batch/256 with cosine decay to 0, no decay."""
    schedule = keras.optimizers.schedules.CosineDecay(
        base_learning_rate * batch_size / 256, max(1, total_steps)
    )
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def _classifier(encoder, num_classes, seed, trainable):
    """encoder → Dense(num_classes) logits; a frozen encoder runs BatchNorm in inference."""
    encoder.trainable = trainable
    inputs = keras.Input(tuple(encoder.inputs[0].shape[1:]))
    features = encoder(inputs)
    keras.utils.set_random_seed(seed)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="classifier")(features))


def _batches(x, y, batch_size, shuffle_seed=None):
    """(x, y) batches; reshuffled every epoch with `shuffle_seed` (the same order for any x)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def _fit_and_score(model, train, test, *, epochs, steps_per_epoch, batch_size, lr, classes):
    model.compile(
        optimizer=_sgd(lr, batch_size, epochs * steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_classification_metrics(classes),
    )
    model.fit(train, epochs=epochs, verbose=0)
    scores = model.evaluate(test, verbose=0, return_dict=True)
    return {"top1": float(scores["top1"]), "top5": float(scores["top5"])}


def _images_and_labels(source, image_size, split, batch_size=256, class_names=None):
    """Center-cropped (or resized) evaluation images and labels of `source`, in memory."""
    from keras_byol import data

    batches = list(
        data.eval_dataset(
            source,
            batch_size=batch_size,
            image_size=image_size,
            split=split,
            class_names=class_names,
        )
    )
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    return images, labels


def _test_images_and_labels(train_source, test_source, image_size, split):
    """`_images_and_labels` of the test source; a test folder is labelled with the training
    folder's class list (a test class the training folder lacks is an error)."""
    from keras_byol import data

    class_names = None
    if isinstance(train_source, (str, os.PathLike)) and data.is_folder(train_source):
        class_names = data.folder_class_names(os.fspath(train_source))
    return _images_and_labels(test_source, image_size, split, class_names=class_names)


def _subset(labels, label_fraction, seed):
    if label_fraction is None or label_fraction == 1.0:
        return None
    return label_subset(labels, label_fraction, seed)


def _setup(train_source, test_source, image_size, label_fraction, seed, train_split, test_split):
    """What every classifier protocol needs: labels checked, the subset, the test images."""
    from keras_byol import data

    labels = data.labels_of(train_source, train_split)
    _check_labels(labels, labels)
    subset = _subset(labels, label_fraction, seed)
    test_images, test_labels = _test_images_and_labels(
        train_source, test_source, image_size, test_split
    )
    _check_labels(labels, test_labels)
    return {
        "classes": data.num_classes(train_source),
        "subset": subset,
        "examples": len(labels) if subset is None else len(subset),
        "test": (test_images, test_labels),
    }


def _augmented_train(train_source, setup, *, batch_size, image_size, seed, split):
    """Random resized crop + flip batches of the (subset of the) training examples."""
    from keras_byol import data

    return data.labelled_train_dataset(
        train_source, batch_size=batch_size, image_size=image_size, split=split, seed=seed,
        indices=setup["subset"], shuffle_buffer=min(setup["examples"], 50_000),
    )  # fmt: skip


def linear_eval(
    encoder,
    train_source,
    test_source,
    *,
    image_size,
    epochs=90,
    batch_size=256,
    base_learning_rate=0.2,
    augment=True,
    precompute=True,
    label_fraction=None,
    seed=0,
    train_split="train",
    test_split="test",
):
    """The spec's linear evaluation of a frozen encoder: top-1 and top-5 on the test split.

    A linear classifier on the frozen encoder (BatchNorm in inference mode), trained with
    SGD, Nesterov momentum 0.9, LR base × batch/256, cosine decay, no weight decay, on
    random resized crops + flips (`augment=True`); test images are center-cropped (0.875)
    or, for small images, resized. With `augment=False` the training images are the test
    preprocessing; then `precompute=True` (the fast path) computes the features once and
    trains the classifier on them, which gives the result of the full model up to float
    error.

    Args:
        encoder: a Keras model images (B, S, S, 3) in [0, 1] → (B, D) (`load_encoder`).
        train_source, test_source: labelled sources as in `data.pretrain_dataset` (tfds name,
            folder, or (images, labels) arrays).
        label_fraction: train on a fixed, balanced, seeded fraction of the labels.

    Returns:
        {"top1": float, "top5": float, "train_examples": int}.
    """
    setup = _setup(
        train_source, test_source, image_size, label_fraction, seed, train_split, test_split
    )
    classes, examples = setup["classes"], setup["examples"]
    test_images, test_labels = setup["test"]
    was_trainable = encoder.trainable
    run = dict(epochs=epochs, steps_per_epoch=math.ceil(examples / batch_size),
               batch_size=batch_size, lr=base_learning_rate, classes=classes)  # fmt: skip
    if augment:
        train = _augmented_train(
            train_source, setup, batch_size=batch_size, image_size=image_size, seed=seed,
            split=train_split,
        )  # fmt: skip
        model = _classifier(encoder, classes, seed, trainable=False)
        result = _fit_and_score(model, train, _batches(test_images, test_labels, batch_size), **run)
    else:
        images, labels = _images_and_labels(train_source, image_size, train_split)
        if setup["subset"] is not None:
            images, labels = images[setup["subset"]], labels[setup["subset"]]
        if precompute:
            train_x, test_x = (
                extract_features(encoder, images),
                extract_features(encoder, test_images),
            )
            keras.utils.set_random_seed(seed)
            model = keras.Sequential(
                [keras.Input((train_x.shape[1],)), keras.layers.Dense(classes, name="classifier")]
            )
        else:
            train_x, test_x = images, test_images
            model = _classifier(encoder, classes, seed, trainable=False)
        train = _batches(train_x, labels, batch_size, shuffle_seed=seed)
        result = _fit_and_score(model, train, _batches(test_x, test_labels, batch_size), **run)
    encoder.trainable = was_trainable
    return {**result, "train_examples": int(examples)}


def fine_tune(
    encoder,
    train_source,
    test_source,
    *,
    image_size,
    epochs=30,
    batch_size=256,
    base_learning_rate=0.02,
    label_fraction=None,
    seed=0,
    train_split="train",
    test_split="test",
):
    """Fine-tuning (semi-supervised with `label_fraction`): the linear protocol with the
    encoder unfrozen (BatchNorm in training mode), on random resized crops + flips.

    A copy of `encoder` is trained; the argument is left unchanged. The paper swept the base
    LR over {0.005, 0.01, 0.02, 0.05, 0.1} × batch/256 for its 1% / 10% subsets.

    Returns:
        {"top1": float, "top5": float, "train_examples": int}.

    Raises:
        ValueError: a SavedModel encoder (it has inference mode only: pass the .keras model).
    """
    if getattr(encoder, "from_saved_model", False):
        raise ValueError(
            "Fine-tuning needs the Keras encoder: pass WORKDIR/byol.keras (a SavedModel runs "
            "BatchNorm in inference mode only)."
        )
    setup = _setup(
        train_source, test_source, image_size, label_fraction, seed, train_split, test_split
    )
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    train = _augmented_train(
        train_source, setup, batch_size=batch_size, image_size=image_size, seed=seed,
        split=train_split,
    )  # fmt: skip
    result = _fit_and_score(
        _classifier(copy, setup["classes"], seed, trainable=True),
        train,
        _batches(*setup["test"], batch_size),
        epochs=epochs,
        steps_per_epoch=math.ceil(setup["examples"] / batch_size),
        batch_size=batch_size,
        lr=base_learning_rate,
        classes=setup["classes"],
    )
    return {**result, "train_examples": int(setup["examples"]), "encoder": copy}


def knn_eval(
    encoder,
    train_source,
    test_source,
    *,
    image_size,
    k=200,
    temperature=0.1,
    label_fraction=None,
    seed=0,
    train_split="train",
    test_split="test",
):
    """Weighted k-NN (cosine, k = 200, T = 0.1) top-1 of the frozen encoder's features.

    Returns:
        {"top1": float, "k": int, "temperature": float, "train_examples": int}.
    """
    images, labels = _images_and_labels(train_source, image_size, train_split)
    _check_labels(labels, labels)
    subset = _subset(labels, label_fraction, seed)
    if subset is not None:
        images, labels = images[subset], labels[subset]
    test_images, test_labels = _test_images_and_labels(
        train_source, test_source, image_size, test_split
    )
    k = min(k, len(labels))
    top1 = knn_accuracy(
        extract_features(encoder, images),
        labels,
        extract_features(encoder, test_images),
        test_labels,
        k=k,
        temperature=temperature,
    )
    return {"top1": top1, "k": k, "temperature": temperature, "train_examples": len(labels)}

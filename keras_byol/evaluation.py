"""Evaluation of the online encoder: linear probe, kNN, the spec's linear protocol,
fine-tuning and label subsets (semi-supervised), and loading exported encoders.

Images are float32 in [0, 1], (N, H, W, 3); labels int (N,) ≥ 0. The protocols take
sources (a tfds name, a folder or an `ImageFolder`, (images, labels) arrays) and stream them:
features are computed batch by batch from `data.eval_dataset`, so a split of images is never
held in memory (the k-NN bank and the precomputed-feature probe keep only the features).
There is one linear classifier protocol (`linear_eval`, the spec's); `linear_probe` is its
classifier on precomputed features and `linear_and_knn` its short variant.
"""

import math
import os
import warnings
import zipfile

import keras
import numpy as np

from keras_byol import sources
from keras_byol.callbacks import trained_steps

# Similarities computed at once by the k-NN protocols (a (rows, bank) float32 block and its
# argpartition): 16M values, ≈ 64 MB, so the bank size sets the rows per chunk.
SIMILARITY_CHUNK = 2**24
NO_LABELS = (
    "Evaluation needs class labels for every train and test example; this source has none "
    "(label −1). Use a labelled split or a folder with one subfolder per class."
)


def extract_features(encoder, images, batch_size=256):
    """(N, D) float32 features of the encoder in inference mode (BatchNorm moving stats).

    `images`: an (N, H, W, 3) array (uint8 in [0, 255] is divided by 255 first) or a
    dataset of float image batches.
    """
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0  # encoders take floats in [0, 1]
    features = np.asarray(encoder.predict(images, batch_size=batch_size, verbose=0), np.float32)
    check_features(features)
    return features


def features_and_labels(encoder, batches):
    """(features (N, D) float32, labels (N,) int64, ids (N,)) of a dataset of
    (images, labels[, ids]) batches, computed batch by batch (only features are kept).

    Ids are the examples' ids (`data.eval_dataset(..., ids=True)`); without them, the
    running index."""
    features, labels, ids = [], [], []
    for batch in batches:
        features.append(np.asarray(encoder.predict_on_batch(np.asarray(batch[0])), np.float32))
        labels.append(np.asarray(batch[1], np.int64))
        if len(batch) > 2:
            ids.append(np.asarray(batch[2]))
    if not features:
        raise ValueError("The evaluation data is empty: no batch to compute features of.")
    features, labels = np.concatenate(features), np.concatenate(labels)
    check_features(features)
    ids = np.concatenate(ids) if ids else np.arange(len(labels))
    return features, labels, ids


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

    The model's `byol_step` attribute is the optimizer step of its weights where the file
    records it (the job's exports and BYOL .keras files), else None.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ValueError(f"No model file at {path!r}.")
        if not zipfile.is_zipfile(path):  # Keras would say "File not found" of it
            raise ValueError(
                f"{path!r} is not a readable .keras model file (not a zip archive); it is "
                "truncated or damaged. Copy it again, or export it again from the run's "
                "checkpoint."
            )
        model = _loaded(path, keras.models.load_model, ".keras model file")
        encoder = getattr(model, "encoder", model)
        encoder.byol_step = trained_steps(model)
        return encoder
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"{path!r} is neither a .keras file nor a SavedModel folder; pass "
            "WORKDIR/encoder (the export) or WORKDIR/byol.keras of a training run."
        )
    import tensorflow as tf

    from keras_byol.export import exported_step  # TensorFlow: optional on JAX

    signatures = _loaded(path, tf.saved_model.load, "SavedModel").signatures
    if "serve" not in signatures:
        raise ValueError(
            f"The SavedModel at {path!r} has no 'serve' signature (it has "
            f"{sorted(signatures)}). Export the encoder with keras_byol.export.export_encoder, "
            "or pass the .keras model instead."
        )
    (spec,) = signatures["serve"].structured_input_signature[1].values()
    if keras.backend.backend() == "tensorflow":
        layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    else:
        layer = SavedModelCallback(path)
    encoder = keras.Sequential([keras.Input(tuple(spec.shape[1:])), layer])
    encoder.from_saved_model = True
    encoder.byol_step = exported_step(path)
    return encoder


class SavedModelCallback(keras.layers.Layer):
    """An exported encoder's `serve` endpoint as a layer on the JAX backend, where
    `keras.layers.TFSMLayer` cannot run: TensorFlow computes the features on the host
    (`jax.pure_callback`), in inference mode and without gradients, as a frozen encoder
    is used by the linear and k-NN protocols (fine-tuning needs the .keras model)."""

    def __init__(self, path, **kwargs):
        import tensorflow as tf

        super().__init__(trainable=False, **kwargs)
        self.saved_model_path = os.fspath(path)
        self._served = tf.saved_model.load(self.saved_model_path)
        (output,) = self._served.signatures["serve"].structured_outputs.values()
        self.features = int(output.shape[-1])

    def _serve(self, images):
        return np.asarray(self._served.serve(np.asarray(images, np.float32)), np.float32)

    def call(self, images):
        import jax

        result = jax.ShapeDtypeStruct((images.shape[0], self.features), "float32")
        return jax.pure_callback(self._serve, result, keras.ops.cast(images, "float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.features)


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
    epochs=90,
    batch_size=256,
    base_learning_rate=0.2,
    seed=0,
    num_classes=None,
):
    """The linear protocol's classifier trained on precomputed frozen features.

    A Dense layer trained with SGD, Nesterov momentum 0.9, LR base × batch/256 with cosine
    decay, no weight decay, on the features (not standardized), reshuffled every epoch with
    `seed`: what `linear_eval(augment=False)` runs.

    Returns:
        {"top1": float, "top5": float} on the test features.
    """
    _check_labels(train_labels, test_labels)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    keras.utils.set_random_seed(seed)
    dense = keras.layers.Dense(num_classes, name="classifier")
    classifier = keras.Sequential([keras.Input((train_features.shape[1],)), dense])
    return _fit_and_score(
        classifier,
        _batches(train_features, train_labels, batch_size, shuffle_seed=seed),
        _batches(test_features, test_labels, batch_size),
        epochs=epochs,
        steps_per_epoch=math.ceil(len(train_labels) / batch_size),
        batch_size=batch_size,
        lr=base_learning_rate,
        classes=num_classes,
    )


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k=20,
    temperature=None,
    chunk_size=None,
):
    """Top-1 accuracy of a k-NN vote on cosine similarity, in chunks of test features.

    `chunk_size`: test rows per chunk; None keeps each chunk's similarities to about
    `SIMILARITY_CHUNK` values whatever the bank size (at most 1,024 rows).

    `temperature=None` gives a plain majority vote; a float weights each neighbour by
    exp(similarity / temperature) (the k=200, T=0.1 monitor of peers). Ties go to the lowest
    class index (as `np.bincount(...).argmax()` in the quality peer).
    """
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    for name, features, labels in (
        ("train", train_features, train_labels),
        ("test", test_features, test_labels),
    ):
        if len(features) != len(labels):
            raise ValueError(
                f"knn_accuracy: {len(features)} {name} features but {len(labels)} {name} "
                "labels; pass one label per feature row."
            )
    _check_labels(train_labels, test_labels)
    train, test = _unit_rows(train_features), _unit_rows(test_features)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    chunk_size = chunk_size or _chunk_rows(len(train))
    for start in range(0, len(test), chunk_size):
        similarity = test[start : start + chunk_size] @ train.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, neighbours, axis=1)
        weights = np.ones_like(weights) if temperature is None else np.exp(weights / temperature)
        votes = np.zeros((len(neighbours), num_classes))
        np.add.at(votes, (np.arange(len(neighbours))[:, None], train_labels[neighbours]), weights)
        correct += int(np.sum(votes.argmax(1) == test_labels[start : start + chunk_size]))
    return correct / len(test)


def linear_and_knn(encoder, train, test, *, image_size=None, epochs=100, k=20, seed=0):
    """The end-of-pretraining report, on features computed once: `linear_eval(augment=False)`
    (the linear protocol's classifier on center-crop features, `linear_probe`) and
    `knn_eval(k=k, temperature=None)` (a majority vote).

    Args:
        encoder: a Keras model (B, S, S, 3) float [0, 1] → (B, D).
        train, test: labelled sources (see `linear_eval`; tfds: the train and test splits),
            e.g. (images, labels) tuples.
        image_size: S (default: the encoder's input size).
        epochs: linear-classifier epochs; k: neighbours of the majority vote.

    Returns:
        {"linear": top-1, f"knn{k}": top-1}.
    """
    image_size = image_size or int(encoder.inputs[0].shape[1])
    setup = _setup(train, test, None, "train")
    batches = _eval_batches(setup["train"], image_size, "train")
    train_x, train_y, _ = features_and_labels(encoder, batches)
    test_x, test_y, _ = features_and_labels(encoder, _test_batches(setup, image_size, "test", 256))
    linear = linear_probe(
        train_x, train_y, test_x, test_y, epochs=epochs, seed=seed, num_classes=setup["classes"]
    )
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=min(k, len(train_y)), temperature=None)
    return {"linear": linear["top1"], f"knn{k}": knn}


def _chunk_rows(bank_rows):
    """Query rows per chunk so that a chunk's similarities hold ≈ SIMILARITY_CHUNK values."""
    return max(1, min(1024, SIMILARITY_CHUNK // max(bank_rows, 1)))


def _unit_rows(features):
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_neighbors(query_features, bank_features, k=5, *, chunk_size=None):
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
    chunk_size = chunk_size or _chunk_rows(len(bank))
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
        raise ValueError(NO_LABELS)
    classes = len(np.unique(train_labels))
    if classes < 2:
        raise ValueError(
            f"Evaluation needs at least 2 classes; the training labels hold {classes} (a "
            "classifier of one class scores 1.0 and measures nothing). A folder gives one "
            "class per first-level subfolder: put each class's images in its own."
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
    # Repeated, with the steps of an epoch given: on a stream of unknown length (a filtered
    # subset, a folder) Keras otherwise finds each epoch's end by running out of data, warns,
    # and steps past the schedule's planned end.
    model.fit(
        train.repeat(), epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, verbose=0
    )  # shuffled by the dataset itself
    with warnings.catch_warnings():
        # A test stream of unknown length (a folder) ends by running out of data, which is
        # its end here; Keras warns of it as of a training input cut short.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        scores = model.evaluate(test, verbose=0, return_dict=True)
    return {"top1": float(scores["top1"]), "top5": float(scores["top5"])}


def _listed(train_source, test_source):
    """The sources, a folder listed once (a test folder with the training classes)."""
    train_source = sources.source_from(train_source)
    class_names = train_source.class_names if train_source.kind == "folder" else None
    return train_source, sources.source_from(test_source, class_names)


def _eval_batches(source, image_size, split, batch_size=256, subset=None):
    """`data.eval_dataset` batches with ids, only the examples in `subset` (ids) when given."""
    from keras_byol import data  # TensorFlow: optional on JAX

    batches = data.eval_dataset(
        source, batch_size=batch_size, image_size=image_size, split=split, ids=True
    )
    if subset is None:
        return batches
    member = data._member_of(subset)
    return batches.unbatch().filter(lambda x, y, i: member(i)).batch(batch_size)


def _subset(ids, labels, label_fraction):
    """The label subset's example ids: `label_subset` with seed 0 over the examples sorted
    by id, so one fixed subset for every seed and every order the source is read in."""
    if label_fraction is None or label_fraction == 1.0:
        return None
    order = np.argsort(ids, kind="stable")
    return ids[order][label_subset(labels[order], label_fraction, seed=0)]


def _setup(train_source, test_source, label_fraction, train_split):
    """What every classifier protocol needs: folders listed once, labels checked, the subset."""
    from keras_byol import data  # TensorFlow: optional on JAX

    train_source, test_source = _listed(train_source, test_source)
    ids, labels = data.labelled_ids(train_source, train_split)
    _check_labels(labels, labels)
    subset = _subset(ids, labels, label_fraction)
    return {
        "train": train_source,
        "test": test_source,
        "classes": data.num_classes(train_source),
        "subset": subset,
        "examples": len(labels) if subset is None else len(subset),
    }


def _test_batches(setup, image_size, split, batch_size):
    """(images, labels) batches of the test source (streamed; labels checked first)."""
    from keras_byol import data  # TensorFlow: optional on JAX

    if data.num_classes(setup["test"]) is None:
        raise ValueError(NO_LABELS)
    batches = _eval_batches(setup["test"], image_size, split, batch_size)
    return batches.map(lambda x, y, i: (x, y))


def _augmented_train(setup, *, batch_size, image_size, seed, split):
    """Random resized crop + flip batches of the (subset of the) training examples."""
    from keras_byol import data  # TensorFlow: optional on JAX

    return data.labelled_train_dataset(
        setup["train"], batch_size=batch_size, image_size=image_size, split=split, seed=seed,
        subset=setup["subset"], shuffle_buffer=min(setup["examples"], 50_000),
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
    preprocessing; then `precompute=True` (the fast path) computes the features once, batch
    by batch, and trains the classifier on them (`linear_probe`), which gives the result of
    the full model up to float error; `precompute=False` streams the images through the
    frozen encoder every epoch, shuffled within 1,024 examples (all of them, in the fast
    path's order, for up to 1,024 training examples).

    Args:
        encoder: a Keras model images (B, S, S, 3) in [0, 1] → (B, D) (`load_encoder`).
        train_source, test_source: labelled sources as in `data.pretrain_dataset` (tfds name,
            folder, or (images, labels) arrays).
        label_fraction: train on a fixed, class-balanced fraction of the labels: the same
            examples for every seed (`label_subset` with seed 0 over the examples' ids).

    Returns:
        {"top1": float, "top5": float, "train_examples": int}.
    """
    setup = _setup(train_source, test_source, label_fraction, train_split)
    classes, examples = setup["classes"], setup["examples"]
    was_trainable = encoder.trainable
    run = dict(epochs=epochs, steps_per_epoch=math.ceil(examples / batch_size),
               batch_size=batch_size, lr=base_learning_rate, classes=classes)  # fmt: skip
    test = _test_batches(setup, image_size, test_split, batch_size)
    if augment:
        train = _augmented_train(
            setup, batch_size=batch_size, image_size=image_size, seed=seed, split=train_split
        )
        model = _classifier(encoder, classes, seed, trainable=False)
        result = _fit_and_score(model, train, test, **run)
    elif precompute:
        batches = _eval_batches(setup["train"], image_size, train_split, subset=setup["subset"])
        train_x, labels, _ = features_and_labels(encoder, batches)
        test_x, test_labels, _ = features_and_labels(encoder, test)
        result = linear_probe(
            train_x, labels, test_x, test_labels, epochs=epochs, batch_size=batch_size,
            base_learning_rate=base_learning_rate, seed=seed, num_classes=classes,
        )  # fmt: skip
        examples = len(labels)
    else:
        model = _classifier(encoder, classes, seed, trainable=False)  # seeds, then the order
        train = (
            _eval_batches(setup["train"], image_size, train_split, subset=setup["subset"])
            .unbatch()
            .map(lambda x, y, i: (x, y))
            .shuffle(min(examples, 1024), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
        )
        result = _fit_and_score(model, train, test, **run)
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
    setup = _setup(train_source, test_source, label_fraction, train_split)
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    train = _augmented_train(
        setup, batch_size=batch_size, image_size=image_size, seed=seed, split=train_split
    )
    result = _fit_and_score(
        _classifier(copy, setup["classes"], seed, trainable=True),
        train,
        _test_batches(setup, image_size, test_split, batch_size),
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

    The feature bank is computed batch by batch (only the (N, D) float32 features are kept);
    the similarities in chunks of test features. `temperature=None`: a plain majority vote.

    Returns:
        {"top1": float, "k": int, "temperature": float, "train_examples": int}.
    """
    del seed  # the subset is the same for every seed; k-NN has no other randomness
    setup = _setup(train_source, test_source, label_fraction, train_split)
    batches = _eval_batches(setup["train"], image_size, train_split, subset=setup["subset"])
    features, labels, _ = features_and_labels(encoder, batches)
    test_features, test_labels, _ = features_and_labels(
        encoder, _test_batches(setup, image_size, test_split, 256)
    )
    k = min(k, len(labels))
    top1 = knn_accuracy(features, labels, test_features, test_labels, k=k, temperature=temperature)
    return {"top1": top1, "k": k, "temperature": temperature, "train_examples": len(labels)}

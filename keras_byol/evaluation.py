"""Evaluation of a frozen (online) encoder: linear probe and weighted kNN on its features."""

import math

import keras
import numpy as np


def extract_features(encoder, images, batch_size=256):
    """(N, D) float32 features of the encoder in inference mode (BatchNorm moving stats)."""
    return np.asarray(encoder.predict(images, batch_size=batch_size, verbose=0), np.float32)


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

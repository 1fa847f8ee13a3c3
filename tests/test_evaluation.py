"""Evaluation helpers and monitors against brute-force references."""

import keras
import numpy as np
import pytest

import keras_byol
from keras_byol import evaluation
from keras_byol.monitors import CollapseMonitor, KNNMonitor

from conftest import tiny_encoder, view_batches


def _np_knn(train, train_labels, test, test_labels, k, temperature):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    correct = 0
    for x, y in zip(test, test_labels):
        sim = train @ x
        top = np.argsort(-sim)[:k]
        votes = np.zeros(train_labels.max() + 1)
        for i in top:
            votes[train_labels[i]] += 1.0 if temperature is None else np.exp(sim[i] / temperature)
        correct += int(np.argmax(votes)) == y  # ties: the lowest class index, as the peer
    return correct / len(test)


@pytest.mark.parametrize("k,temperature,chunk", [(1, None, 7), (5, None, 1024), (20, 0.1, 3)])
def test_knn_matches_brute_force(k, temperature, chunk):
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((60, 8)), rng.standard_normal((25, 8))
    train_labels, test_labels = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    got = evaluation.knn_accuracy(
        train, train_labels, test, test_labels, k=k, temperature=temperature, chunk_size=chunk
    )
    assert got == pytest.approx(_np_knn(train, train_labels, test, test_labels, k, temperature))


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 16)) * 4
    labels = rng.integers(0, 3, 300)
    features = centers[labels] + rng.standard_normal((300, 16))
    accuracy = evaluation.linear_probe(
        features[:200], labels[:200], features[200:], labels[200:], epochs=20
    )["top1"]
    assert accuracy > 0.95
    shuffled = rng.permutation(labels[:200])
    chance = evaluation.linear_probe(
        features[:200], shuffled, features[200:], labels[200:], epochs=20
    )["top1"]
    assert chance < 0.6


def test_evaluation_needs_labels():
    features = np.ones((4, 2))
    with pytest.raises(ValueError, match="class labels"):
        evaluation.knn_accuracy(features, np.array([0, 1, -1, 0]), features, np.zeros(4, int))


def _model():
    keras.utils.set_random_seed(0)
    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer="sgd")
    return model


def test_collapse_monitor_warns_only_below_the_threshold():
    monitor = CollapseMonitor()
    monitor.set_model(_model())
    with pytest.warns(RuntimeWarning, match="collapsing"):
        monitor.on_epoch_end(0, {"projection_std": 0.01})  # 0.2/√8 ≈ 0.071
    with warnings_as_errors():
        monitor.on_epoch_end(1, {"projection_std": 0.3})


def test_knn_monitor_logs_the_accuracy_of_the_online_encoder():
    model = _model()
    images, _ = view_batches(40)
    labels = np.arange(40) % 4
    monitor = KNNMonitor(
        (images[:30], labels[:30]), (images[30:], labels[30:]), k=5, every_n_epochs=2
    )
    history = model.fit(
        {"view1": images, "view2": images[::-1]},
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[monitor],
    )
    assert "knn_accuracy" in history.history and len(history.history["knn_accuracy"]) == 1
    expected = evaluation.knn_accuracy(
        evaluation.extract_features(model.encoder, images[:30]),
        labels[:30],
        evaluation.extract_features(model.encoder, images[30:]),
        labels[30:],
        k=5,
        temperature=0.1,
    )
    assert history.history["knn_accuracy"][0] == pytest.approx(expected)


class warnings_as_errors:
    """Context manager: any warning inside fails the test."""

    def __enter__(self):
        import warnings

        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *args):
        return self._context.__exit__(*args)

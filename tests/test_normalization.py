"""FusedBatchNormalization equals keras.layers.BatchNormalization (outputs, gradients, state)."""

import keras
import numpy as np
import pytest

from keras_byol.normalization import FusedBatchNormalization

BACKEND = keras.backend.backend()


def _pair(shape, **kwargs):
    """A Keras BN and a fused BN built for `shape`, with the same random γ, β and statistics."""
    rng = np.random.default_rng(0)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    plain.build(shape)
    fused.build(shape)
    for weight in plain.weights:
        values = rng.random(weight.shape, dtype=np.float32) + 0.5
        weight.assign(values)
    fused.set_weights(plain.get_weights())
    return plain, fused


@pytest.mark.parametrize("shape", [(16, 5, 5, 8), (32, 12)])
def test_training_step_equals_keras_batchnorm(shape):
    plain, fused = _pair(shape)
    x = 3.0 * np.random.default_rng(1).standard_normal(shape).astype("float32") + 1.0
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)
    for a, b in zip(fused.weights, plain.weights):  # moving mean and (biased) variance
        np.testing.assert_allclose(a.numpy() if hasattr(a, "numpy") else a, b, rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the fused kernel is TensorFlow's")
def test_gradients_equal_keras_batchnorm():
    import tensorflow as tf

    plain, fused = _pair((8, 4, 4, 6))
    x = tf.constant(np.random.default_rng(2).standard_normal((8, 4, 4, 6)).astype("float32"))
    upstream = tf.constant(np.random.default_rng(3).standard_normal((8, 4, 4, 6)), tf.float32)
    grads = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads.append(tape.gradient(loss, [x, layer.gamma.value, layer.beta.value]))
    for g_plain, g_fused in zip(*grads):
        np.testing.assert_allclose(g_fused, g_plain, atol=1e-4, rtol=1e-4)


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
    # Channels-first: the Keras path, same result.
    plain, fused = _pair((4, 3, 5, 5), axis=1)
    x = np.random.default_rng(4).random((4, 3, 5, 5), dtype=np.float32)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-6)


def test_config_roundtrip(tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.9, name="bn")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    assert loaded.get_layer("bn").momentum == 0.9

"""FusedBatchNormalization equals keras.layers.BatchNormalization (outputs, gradients, state),
and inside per_view_statistics one call on concatenated views equals a call per view."""

import keras
import numpy as np
import pytest

from keras_byol.normalization import FusedBatchNormalization, per_view_statistics

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


def _two_views(shape):
    """Two batches of `shape` with different means and scales (joint statistics differ)."""
    rng = np.random.default_rng(5)
    view1 = 3.0 * rng.standard_normal(shape).astype("float32") + 1.0
    view2 = 0.5 * rng.standard_normal(shape).astype("float32") - 2.0
    return view1, view2


@pytest.mark.parametrize("shape", [(6, 5, 5, 8), (6, 12)])
def test_per_view_statistics_equal_a_call_per_view(shape):
    _, per_view = _pair(shape)
    _, together = _pair(shape)
    _, joint = _pair(shape)
    view1, view2 = _two_views(shape)
    both = np.concatenate([view1, view2])
    expected = np.concatenate([per_view(view1, training=True), per_view(view2, training=True)])
    with per_view_statistics(2):
        actual = together(both, training=True)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    for a, b in zip(together.weights, per_view.weights):  # two moving-average updates
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
    with per_view_statistics(2):  # inference mode: the moving statistics, as without it
        np.testing.assert_allclose(
            together(both, training=False), per_view(both, training=False), atol=1e-5
        )
    # Outside the context the statistics are joint, and the result differs.
    assert np.max(np.abs(np.asarray(joint(both, training=True)) - expected)) > 0.1


@pytest.mark.skipif(BACKEND != "tensorflow", reason="gradients through tf.GradientTape")
def test_per_view_statistics_gradients_equal_a_call_per_view():
    import tensorflow as tf

    shape = (4, 3, 3, 5)
    _, per_view = _pair(shape)
    _, together = _pair(shape)
    view1, view2 = (tf.constant(v) for v in _two_views(shape))
    upstream = tf.constant(np.random.default_rng(6).standard_normal((8,) + shape[1:]), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([view1, view2])
        outputs = tf.concat([per_view(view1, training=True), per_view(view2, training=True)], 0)
        loss = tf.reduce_sum(outputs * upstream)
    expected = tape.gradient(loss, [view1, view2, per_view.gamma.value, per_view.beta.value])
    with tf.GradientTape() as tape:
        tape.watch([view1, view2])
        with per_view_statistics(2):
            outputs = together(tf.concat([view1, view2], 0), training=True)
        loss = tf.reduce_sum(outputs * upstream)
    actual = tape.gradient(loss, [view1, view2, together.gamma.value, together.beta.value])
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=1e-4, rtol=1e-4)


def test_per_view_statistics_reject_what_they_cannot_split():
    with pytest.raises(ValueError, match="views >= 1"):
        with per_view_statistics(0):
            pass
    _, channels_first = _pair((4, 3, 5, 5), axis=1)
    with pytest.raises(ValueError, match="last axis.*concat_views=False"):
        with per_view_statistics(2):
            channels_first(np.zeros((4, 3, 5, 5), "float32"), training=True)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the fused kernel is TensorFlow's")
def test_synchronized_layers_keep_the_fused_kernel_on_one_replica():
    """synchronized=True (the keras_byol default) costs nothing on one device: the training
    step still runs FusedBatchNormV3 (test_distribute shows 2 replicas synchronized)."""
    import tensorflow as tf

    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True)
    layer.build((8, 4, 4, 6))
    graph = (
        tf.function(lambda x: layer(x, training=True))
        .get_concrete_function(tf.TensorSpec((8, 4, 4, 6), tf.float32))
        .graph
    )
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    assert layer.get_config()["synchronized"] is True

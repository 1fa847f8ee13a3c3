"""Loss against an independent NumPy reference (spec: ℓ = 2 − 2 cos, both directions summed)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_byol import losses


def _np_regression(p, z):
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return 2.0 - 2.0 * np.sum(p * z, axis=-1)


def test_regression_loss_matches_two_minus_two_cosine():
    rng = np.random.default_rng(1)
    p, z = rng.standard_normal((6, 16)), rng.standard_normal((6, 16))
    got = np.asarray(losses.regression_loss(p.astype("float32"), z.astype("float32")))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, _np_regression(p, z), rtol=1e-5, atol=1e-6)


def test_regression_loss_extremes_and_scale_invariance():
    v = np.array([[1.0, 2.0, 3.0]], "float32")
    assert float(losses.regression_loss(v, 5 * v)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.regression_loss(v, -v)[0]) == pytest.approx(4.0, abs=1e-5)
    zero = np.zeros((1, 3), "float32")
    assert np.isfinite(float(losses.regression_loss(zero, v)[0]))


def test_byol_loss_is_symmetric_sum_averaged_over_batch():
    rng = np.random.default_rng(2)
    p1, p2, z1, z2 = (rng.standard_normal((5, 8)).astype("float32") for _ in range(4))
    expected = np.mean(_np_regression(p1, z2) + _np_regression(p2, z1))
    got = float(losses.byol_loss(p1, p2, z1, z2))
    assert got == pytest.approx(expected, rel=1e-5)
    # Swapping the views leaves the loss unchanged; pairing p1 with z1 would not.
    assert float(losses.byol_loss(p2, p1, z2, z1)) == pytest.approx(got, rel=1e-6)
    assert got != pytest.approx(np.mean(_np_regression(p1, z1) + _np_regression(p2, z2)))


def _gradients(fn, arrays):
    """d fn(*arrays) / d arrays with the active backend's autodiff (None = no path)."""
    if keras.backend.backend() == "jax":
        import jax

        return list(jax.grad(fn, argnums=tuple(range(len(arrays))))(*arrays))
    variables = [tf.Variable(a) for a in arrays]
    with tf.GradientTape() as tape:
        loss = fn(*variables)
    return tape.gradient(loss, variables)


def test_byol_loss_stops_gradient_into_target():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((4, 8)).astype("float32") for _ in range(4)]
    g = _gradients(losses.byol_loss, arrays)
    assert np.sum(np.abs(np.asarray(g[0]))) > 0 and np.sum(np.abs(np.asarray(g[1]))) > 0
    for target_gradient in g[2:]:
        assert target_gradient is None or not np.any(np.asarray(target_gradient))


def test_loss_is_float32_for_half_precision_inputs():
    p = np.random.default_rng(4).standard_normal((4, 8)).astype("float16")
    loss = losses.byol_loss(p, p, p, p)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"

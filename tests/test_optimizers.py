"""LARS against a NumPy reference: decay into the gradient, trust ratio, momentum, exclusions."""

import keras
import numpy as np
import pytest

from keras_byol.optimizers import LARS


def _np_lars(weights, grads_per_step, lr, momentum, wd, eta, adapted):
    weights = [w.copy() for w in weights]
    moms = [np.zeros_like(w) for w in weights]
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(weights, grads)):
            u = g.copy()
            if adapted[i]:
                u = u + wd * w
                wn, un = np.linalg.norm(w), np.linalg.norm(u)
                u = u * (eta * wn / un if wn > 0 and un > 0 else 1.0)
            moms[i] = momentum * moms[i] + u
            weights[i] = w - lr * moms[i]
    return weights


def test_lars_matches_numpy_reference_with_exclusions():
    rng = np.random.default_rng(0)
    init = [
        rng.standard_normal((3, 3, 2, 4)).astype("float32"),  # conv kernel: adapted
        rng.standard_normal((4,)).astype("float32"),  # bias / BN: excluded
        np.zeros((5, 2), "float32"),  # zero weights: trust ratio 1
    ]
    variables = [keras.Variable(w) for w in init]
    grads = [[rng.standard_normal(w.shape).astype("float32") for w in init] for _ in range(4)]
    opt = LARS(learning_rate=0.5, momentum=0.9, weight_decay=1e-2, eta=1e-3)
    for step_grads in grads:
        opt.apply(step_grads, variables)
    expected = _np_lars(init, grads, 0.5, 0.9, 1e-2, 1e-3, adapted=[True, False, True])
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(np.asarray(v), e, rtol=1e-5, atol=1e-6)


def test_lars_trust_ratio_actually_changes_the_step():
    w = np.full((4, 4), 2.0, "float32")
    g = np.full((4, 4), 100.0, "float32")
    v = keras.Variable(w)
    LARS(learning_rate=1.0, momentum=0.0, weight_decay=0.0, eta=1e-3).apply([g], [v])
    # η‖w‖/‖g‖ · g = 1e-3 · 8/400 · 100 = 2e-3 per element.
    np.testing.assert_allclose(np.asarray(v), w - 2e-3, rtol=1e-5)


def test_lars_exclusion_by_name():
    rng = np.random.default_rng(1)
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    init = [np.asarray(v).copy() for v in layer.weights]
    grads = [rng.standard_normal(v.shape).astype("float32") for v in layer.weights]
    opt = LARS(
        learning_rate=0.1, momentum=0.9, weight_decay=0.1, exclude_from_adaptation=["kernel"]
    )
    opt.apply(grads, layer.weights)
    expected = _np_lars(init, [grads], 0.1, 0.9, 0.1, 1e-3, adapted=[False, True])
    for v, e in zip(layer.weights, expected):
        np.testing.assert_allclose(np.asarray(v), e, rtol=1e-5, atol=1e-7)


def test_lars_config_roundtrip_and_validation():
    opt = LARS(learning_rate=0.3, momentum=0.8, weight_decay=1.5e-6, eta=2e-3)
    restored = LARS.from_config(opt.get_config())
    assert (restored.momentum, restored.lars_weight_decay, restored.eta) == (0.8, 1.5e-6, 2e-3)
    with pytest.raises(ValueError, match="momentum"):
        LARS(momentum=1.5)
    with pytest.raises(ValueError, match="eta"):
        LARS(eta=0.0)

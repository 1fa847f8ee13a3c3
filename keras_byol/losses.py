"""BYOL's regression loss: normalized-MSE between an online prediction and a target projection."""

from keras import ops

_EPSILON = 1e-12


def _l2_normalize(x, axis=-1):
    """x / max(‖x‖, ε): the official code's normalization (ε ≈ 1e-12 under the norm)."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, _EPSILON * _EPSILON))


def regression_loss(p, z):
    """ℓ(p, z) = ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z), per example.

    Args:
        p: online predictions, float tensor of shape (B, d).
        z: target projections, float tensor of shape (B, d). The caller is responsible
            for the stop-gradient on `z` (see `byol_loss`).

    Returns:
        float32 tensor of shape (B,) with values in [0, 4].
    """
    p = _l2_normalize(ops.cast(p, "float32"))
    z = _l2_normalize(ops.cast(z, "float32"))
    return ops.sum(ops.square(p - z), axis=-1)


def byol_loss(p1, p2, z1, z2):
    """The symmetric BYOL loss: mean over the batch of ℓ(p₁, sg(z′₂)) + ℓ(p₂, sg(z′₁)).

    Args:
        p1: online prediction q(g(f(view1))), shape (B, d).
        p2: online prediction q(g(f(view2))), shape (B, d).
        z1: target projection g_ξ(f_ξ(view1)), shape (B, d).
        z2: target projection g_ξ(f_ξ(view2)), shape (B, d).

    Returns:
        float32 scalar in [0, 8].

    Example:
        >>> p = keras.random.normal((4, 8))
        >>> float(byol_loss(p, p, p, p))  # identical directions → 0
        0.0
    """
    # The target is a teacher: no gradient flows into it (sg in the paper).
    z1 = ops.stop_gradient(z1)
    z2 = ops.stop_gradient(z2)
    # Each online view predicts the target projection of the *other* view.
    return ops.mean(regression_loss(p1, z2) + regression_loss(p2, z1))


def projection_std(projection):
    """The collapse statistic: the std over the batch of the L2-normalized (B, d)
    projections, averaged over d. About 1/√d when healthy, → 0 when collapsed."""
    projection = ops.cast(projection, "float32")
    normalized = projection / ops.maximum(ops.norm(projection, axis=-1, keepdims=True), 1e-12)
    return ops.mean(ops.std(normalized, axis=0))

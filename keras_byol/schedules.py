"""BYOL schedules: cosine target decay τ, warm-up + cosine learning rate, batch/256 scaling."""

import math

import keras
from keras import ops


def _cosine_decay(step, total_steps):
    """(cos(π·min(k, K)/K) + 1)/2: 1 at k = 0, 0 at k ≥ K (the official `_cosine_decay`)."""
    step = ops.minimum(ops.cast(step, "float32"), ops.cast(total_steps, "float32"))
    return 0.5 * (1.0 + ops.cos(math.pi * step / ops.cast(total_steps, "float32")))


def target_decay(step, base_tau, total_steps):
    """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 (BYOL §3.2); τ stays 1 once k ≥ K.

    Args:
        step: optimizer steps already taken, k (int or scalar tensor, k ≥ 0).
        base_tau: τ_base in [0, 1], e.g. 0.996.
        total_steps: K > 0, optimizer steps of the whole run.

    Returns:
        float32 scalar τ_k in [τ_base, 1].
    """
    return 1.0 - (1.0 - ops.cast(base_tau, "float32")) * _cosine_decay(step, total_steps)


def scale_learning_rate(base_learning_rate, batch_size):
    """The linear scaling rule of the official code: base LR × global batch / 256."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    return base_learning_rate * batch_size / 256.0


@keras.saving.register_keras_serializable(package="keras_byol")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to the peak, then cosine decay to 0 at `total_steps`.

    Args:
        peak_learning_rate: the LR reached after warm-up (already batch-scaled,
            see `scale_learning_rate`).
        warmup_steps: optimizer steps of linear warm-up (0 for none).
        total_steps: optimizer steps of the whole run; must exceed `warmup_steps`.

    Example:
        >>> lr = WarmupCosine(scale_learning_rate(0.2, 4096), warmup_steps=3120, total_steps=312000)
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps):
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps >= total_steps:
            raise ValueError(
                "WarmupCosine needs 0 <= warmup_steps < total_steps, got "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}."
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak_learning_rate * step / max(self.warmup_steps, 1)
        decayed = self.peak_learning_rate * _cosine_decay(
            step - self.warmup_steps, self.total_steps - self.warmup_steps
        )
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }

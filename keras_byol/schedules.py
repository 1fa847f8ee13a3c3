"""BYOL schedules: cosine target decay τ, warm-up + cosine learning rate, batch/256 scaling."""

import math
import warnings

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


@keras.saving.register_keras_serializable(package="keras_byol")
class CosineTargetDecay:
    """The τ schedule of BYOL's target update, owned and saved by `BYOL`.

    τ_k = `target_decay(k, base_tau, total_steps)`, k = optimizer steps applied before the
    update (skipped mixed-precision steps do not count). Like a `LearningRateSchedule`, it
    is a serializable function of the step: `BYOL(target_decay=...)` stores it in the
    `.keras` file, and `fit`, `train_on_batch`, custom loops and repeated `fit` calls all
    follow the one schedule.

    Args:
        base_tau: τ_base in [0, 1] (0.996 for the 1000-epoch recipe, 0.99 for 100/300
            epochs).
        total_steps: K, the optimizer steps of the whole run; τ reaches 1 at step K and
            stays there. None: the first `BYOL.fit` call sets it from its epochs × steps
            per epoch (and says so); other training paths need it set.

    Example:
        >>> model = BYOL(encoder, target_decay=CosineTargetDecay(0.996, total_steps=312_000))
    """

    def __init__(self, base_tau=0.996, total_steps=None):
        if not 0.0 <= float(base_tau) <= 1.0:
            raise ValueError(f"base_tau must be in [0, 1]; got {base_tau}.")
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1 or None; got {total_steps}.")
        self.base_tau = float(base_tau)
        self.total_steps = None if total_steps is None else int(total_steps)

    def __call__(self, step):
        if self.total_steps is None:
            raise ValueError(
                "CosineTargetDecay has no total_steps yet; pass "
                "CosineTargetDecay(base_tau, total_steps=K) with K the optimizer steps of "
                "the whole run."
            )
        return target_decay(step, self.base_tau, self.total_steps)

    def __eq__(self, other):
        return isinstance(other, CosineTargetDecay) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"CosineTargetDecay(base_tau={self.base_tau}, total_steps={self.total_steps})"

    def get_config(self):
        return {"base_tau": self.base_tau, "total_steps": self.total_steps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class PlannedTargetDecay:
    """The τ schedule a `BYOL` model follows: a `CosineTargetDecay` mirrored in the model's
    two variables `base_tau` and `tau_total_steps`, which the compiled step reads (so a
    re-planned K needs no retrace) and checkpoints save; K = 0 means not planned yet.

    Args:
        base_tau: the model's float32 scalar variable for τ_base.
        total_steps: the model's int32 scalar variable for K.
    """

    def __init__(self, base_tau, total_steps):
        self.base_tau = base_tau
        self.total_steps = total_steps
        self.schedule = None
        self._warned_frozen = False

    @classmethod
    def add_to(cls, model):
        """The state of τ with its two variables added to `model` (not trainable)."""
        base_tau = model.add_weight(
            shape=(), initializer="ones", trainable=False, name="base_tau", dtype="float32"
        )
        total_steps = model.add_weight(
            shape=(), initializer="zeros", trainable=False, name="tau_total_steps", dtype="int32"
        )
        return cls(base_tau, total_steps)

    def set(self, schedule):
        """Follows `schedule` from the next step: τ_k is evaluated on the applied-step
        counter k, so changing K mid-run continues the cosine of the new K from there."""
        if not isinstance(schedule, CosineTargetDecay):
            raise TypeError(
                "target_decay must be a keras_byol.schedules.CosineTargetDecay; got "
                f"{type(schedule).__name__}."
            )
        self.schedule = CosineTargetDecay(**schedule.get_config())
        self.base_tau.assign(self.schedule.base_tau)
        self.total_steps.assign(self.schedule.total_steps or 0)
        self._warned_frozen = False

    def read_variables(self):
        """Takes the schedule from the variables (after a checkpoint was loaded into them:
        a file written before the schedule was in the model's config still gives the
        schedule it trained with)."""
        total = int(ops.convert_to_numpy(self.total_steps))
        if total != (self.schedule.total_steps or 0):
            base = round(float(ops.convert_to_numpy(self.base_tau)), 6)  # a float32 variable
            self.schedule = CosineTargetDecay(base, total or None)

    def check_planned(self):
        """Raises unless K is set."""
        if self.schedule.total_steps is None:
            raise ValueError(
                "The τ schedule has no total_steps, so the target update is undefined. "
                "Build BYOL(..., target_decay=keras_byol.schedules.CosineTargetDecay(base_tau, "
                "total_steps=K)) with K the optimizer steps of the whole run, or call "
                "model.set_target_decay(...); model.fit sets it from its epochs when unset."
            )

    def tau(self, step):
        """τ for the update after applied optimizer step `step` (0-based), from the
        variables (inside the compiled step)."""
        return target_decay(step, self.base_tau, ops.maximum(self.total_steps, 1))

    def warn_if_frozen(self, last_step):
        """Warns once when training reaches `last_step` past the step where τ becomes 1."""
        total = self.schedule.total_steps
        if total is None or last_step <= total or self._warned_frozen:
            return
        self._warned_frozen = True
        warnings.warn(
            f"The target network stops moving: τ reaches 1 at step {total} "
            f"({self.schedule}), and training goes on to step {last_step}. Plan the "
            "whole run: BYOL(target_decay=keras_byol.schedules.CosineTargetDecay("
            f"{self.schedule.base_tau}, total_steps={last_step})) or "
            "model.set_target_decay(...).",
            stacklevel=4,
        )


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


@keras.saving.register_keras_serializable(package="keras_byol")
class AppliedSteps(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule counted in applied steps under gradient accumulation.

    Keras calls an optimizer's schedule with the count of batches seen; with
    `gradient_accumulation_steps=N` an update is applied every N batches, so
    `AppliedSteps(schedule, N)` gives `schedule(batches // N)`: the rate of applied step k
    is schedule(k), as in a run with batches N× larger (and as τ counts).

    Args:
        schedule: a `LearningRateSchedule` of the applied step (e.g. `WarmupCosine`).
        accumulation_steps: N, the optimizer's `gradient_accumulation_steps`.
    """

    def __init__(self, schedule, accumulation_steps):
        self.schedule = schedule
        self.accumulation_steps = int(accumulation_steps)
        if self.accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be ≥ 1; got {accumulation_steps}.")

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.accumulation_steps))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "accumulation_steps": self.accumulation_steps,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)

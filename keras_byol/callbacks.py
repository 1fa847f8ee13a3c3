"""Callbacks: the τ schedule's planning in `fit`, and the training job's checkpoint, guard, log."""

import logging
import math
import os
import warnings

import keras
import numpy as np

from keras_byol import backends
from keras_byol.batches import INPUT_PROBLEMS, refused_before_the_step
from keras_byol.optimizers import accumulation_steps, batch_counter, optimizer_of
from keras_byol.schedules import AppliedSteps, CosineTargetDecay
from keras_byol.workarounds import bind_fit_arguments, learning_rate_schedule, metrics_in_order
from keras_byol.workdir import write_atomically

logger = logging.getLogger("keras_byol")


def applied_steps(model):
    """Optimizer steps applied so far (strategy-mirrored variables too; under gradient
    accumulation, Keras' `iterations` counts applied steps, not batches)."""
    iterations = model.optimizer.iterations
    return int(iterations.numpy() if hasattr(iterations, "numpy") else np.asarray(iterations))


def trained_steps(model):
    """Applied optimizer steps of a BYOL model that has an optimizer (as saved by the job),
    or None for an encoder or a model never compiled."""
    if getattr(model, "encoder", model) is model or getattr(model, "optimizer", None) is None:
        return None
    return applied_steps(model)


def _applied_per_fit(model, batches):
    """Optimizer steps applied over `batches` train steps (batches ÷ N under accumulation)."""
    return int(batches) // accumulation_steps(model.optimizer)


class TargetDecayPlan(keras.callbacks.Callback):
    """Plans the model's τ schedule for one `fit` call; `BYOL.fit` adds one.

    When the model's `CosineTargetDecay` has no total_steps, sets K = epochs × steps per
    epoch of this call (epochs counted from 0, so a `fit` resumed with `initial_epoch`
    gets the whole run's K) and prints one line saying so. When this call trains past K,
    where τ is 1 and the target stops moving, `BYOL.warn_if_target_frozen` warns: at the
    start when the length is known, else once the step counter passes K.
    """

    def __init__(self):
        super().__init__()
        self._checked_plan = False

    def on_train_begin(self, logs=None):
        self._checked_plan = False
        schedule = self.model.target_decay
        if schedule.total_steps is not None:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps or not epochs:
            raise ValueError(
                "BYOL cannot size the τ schedule: the dataset has no known length (steps per "
                f"epoch = {steps}). Pass fit(steps_per_epoch=...) or build BYOL(target_decay="
                "keras_byol.schedules.CosineTargetDecay(base_tau, total_steps=K))."
            )
        total = _applied_per_fit(self.model, int(steps) * int(epochs))
        planned = CosineTargetDecay(schedule.base_tau, total)
        self.model.set_target_decay(planned)
        every = accumulation_steps(self.model.optimizer)
        accumulated = f" ÷ {every} batches per applied step" if every > 1 else ""
        print(
            f"keras_byol: τ schedule set from this fit call: {planned} = {epochs} epochs × "
            f"{steps} steps{accumulated}. Later fit calls keep it; to plan a longer run pass "
            "BYOL(target_decay=CosineTargetDecay(base_tau, total_steps=K)).",
            flush=True,
        )

    def on_epoch_begin(self, epoch, logs=None):
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if self._checked_plan or not steps or not epochs:
            return
        self._checked_plan = True
        remaining = _applied_per_fit(self.model, (epochs - epoch) * steps)
        self.model.warn_if_target_frozen(applied_steps(self.model) + remaining)

    def on_epoch_end(self, epoch, logs=None):
        self.model.warn_if_target_frozen(applied_steps(self.model))


class LearningRateCheck(keras.callbacks.Callback):
    """Warns when the learning rate is 0 at every step of a `fit` call (a finished run's
    schedule has ended: nothing would be trained); `BYOL.fit` adds one."""

    SAMPLES = 64  # steps of the call at which the schedule is evaluated, evenly spaced

    def on_train_begin(self, logs=None):
        optimizer = optimizer_of(self.model.optimizer)
        rate = learning_rate_schedule(optimizer)
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if rate is None or not steps or not epochs:
            return
        first = int(keras.ops.convert_to_numpy(batch_counter(optimizer)))
        batches = int(steps) * int(epochs)  # at most: initial_epoch is not in params
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            at = np.unique(np.linspace(first, first + batches - 1, self.SAMPLES).round())
            values = [float(keras.ops.convert_to_numpy(rate(int(step)))) for step in at]
        else:
            values = [float(keras.ops.convert_to_numpy(rate))]
        if any(values):
            return
        warnings.warn(
            f"The learning rate is 0 at every step of this fit call (from batch {first}, "
            f"{type(rate).__name__}): the weights will not change. A finished run's schedule "
            "has ended; to continue it set a new one, model.optimizer.learning_rate = "
            "schedule, and plan τ for the longer run with model.set_target_decay("
            "keras_byol.schedules.CosineTargetDecay(base_tau, total_steps)) (the training "
            "job does both when rerun with a larger --epochs).",
            stacklevel=2,
        )


def raise_on_input_problems(logs, step):
    """Removes the input-problem counts from `logs`; raises ValueError if one is not 0."""
    counts = {name: logs.pop(name, 0) for name in INPUT_PROBLEMS}
    found = [
        f"{int(count)} batch(es) {INPUT_PROBLEMS[name]}" for name, count in counts.items() if count
    ]
    if found:
        raise ValueError(
            f"Bad input to BYOL by optimizer step {step} (in this epoch): {'; '.join(found)}. "
            "Those steps were applied: after NaN/inf input the weights are unreliable, so "
            "rebuild or reload the model once the data is fixed."
        )


class InputCheck(keras.callbacks.Callback):
    """Stops `fit` with a ValueError when the step counted bad input: views with NaN/inf,
    float views above 8 ([0, 255] pixels), batches of fewer than 2 images. `BYOL.fit` puts
    it first, so the counts never reach the progress bar, History or other callbacks."""

    def on_train_batch_end(self, batch, logs=None):
        raise_on_input_problems(logs if logs is not None else {}, applied_steps(self.model))

    def on_epoch_end(self, epoch, logs=None):
        raise_on_input_problems(logs if logs is not None else {}, applied_steps(self.model))


@keras.saving.register_keras_serializable(package="keras_byol")
class TargetUpdate(TargetDecayPlan):
    """Sets the model's τ schedule when `fit` starts (kept for code written before
    `BYOL(target_decay=...)`, which is the primary way).

    Args:
        base_tau: τ_base (0.996 for the 1000-epoch recipe, 0.99 for 100/300, 0.97 for 40).
        total_steps: K. None keeps the model's K when it has one, else this `fit` call's
            epochs × steps per epoch (see `TargetDecayPlan`).

    The update itself runs inside the compiled train step after every applied optimizer
    step, and `fit` logs `tau` (the τ of the last update).
    """

    def __init__(self, base_tau=0.996, total_steps=None):
        super().__init__()
        CosineTargetDecay(base_tau, total_steps)  # validates both
        self.base_tau = float(base_tau)
        self.total_steps = None if total_steps is None else int(total_steps)

    def on_train_begin(self, logs=None):
        total = self.total_steps or self.model.target_decay.total_steps
        self.model.set_target_decay(CosineTargetDecay(self.base_tau, total))
        super().on_train_begin(logs)

    def get_config(self):
        return {"base_tau": self.base_tau, "total_steps": self.total_steps}


# ---------------------------------------------------------------------- training job
class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, target, τ schedule, optimizer state with the step)
    every `every_epochs` epochs and every `every_steps` applied steps, to a temporary file
    that then replaces the checkpoint (never a half-written one; a failed write removes its
    temporary file and says why).

    A checkpoint is written only while the loss is finite and every variable — weights,
    target, BatchNorm statistics, optimizer state — is finite: otherwise training stops
    and `guard` (a `DivergenceGuard`) records where and why, so the last good checkpoint
    stays the last one.

    The step counter is the input position too: the job's input stream is a deterministic
    function of the step (`data.pretrain_stream`), so a resumed run reads on from there.
    """

    def __init__(self, path, every_epochs=1, every_steps=0, guard=None):
        super().__init__()
        self.path = path
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.guard = guard if guard is not None else DivergenceGuard()
        self.saved_step = 0  # the step of the checkpoint on disk (as of this fit call)

    def save(self):
        """Writes the checkpoint unless a variable is not finite or an accumulation window is
        open (its partial gradient sum would be counted again by a resumed run, which reads
        on from the last applied step); returns whether it did."""
        step = applied_steps(self.model)
        if _inside_accumulation_window(self.model):
            return False
        if not self.guard.check_variables(self.model, step):
            return False
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomically(self.path, self.model.save, suffix=".keras")
        self.saved_step = step
        return True

    def on_train_begin(self, logs=None):
        self.saved_step = applied_steps(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and _finite_loss(logs):
            step = applied_steps(self.model)
            if step // self.every_steps > self.saved_step // self.every_steps:
                self.save()

    def on_epoch_end(self, epoch, logs=None):
        if _finite_loss(logs) and (epoch + 1) % self.every_epochs == 0:
            if applied_steps(self.model) != self.saved_step:
                self.save()


def _inside_accumulation_window(model):
    """Whether the optimizer holds gradients of batches not yet applied."""
    every = accumulation_steps(model.optimizer)
    if every == 1:
        return False
    return int(keras.ops.convert_to_numpy(batch_counter(model.optimizer).value)) % every != 0


def _finite_loss(logs):
    loss = (logs or {}).get("loss")
    return loss is not None and math.isfinite(loss)


def non_finite_variables(model):
    """Paths of the model's and its optimizer's variables holding a NaN or an infinity."""
    variables = list(model.variables) + list(getattr(model.optimizer, "variables", []))
    return [
        variable.path
        for variable in variables
        if not np.isfinite(keras.ops.convert_to_numpy(variable.value)).all()
    ]


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, or when `check_variables` finds a
    non-finite variable, and remembers where (`diverged_at_step`) and why (`reason`)."""

    def __init__(self):
        super().__init__()
        self.last_finite_loss = None
        self.diverged_at_step = None
        self.reason = None

    def _diverged(self, model, step, reason):
        if self.diverged_at_step is None:
            self.diverged_at_step, self.reason = step, reason
        model.stop_training = True

    def check_variables(self, model, step):
        """True when every variable is finite; else records the divergence and stops."""
        bad = non_finite_variables(model)
        if bad:
            listing = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            self._diverged(model, step, f"{len(bad)} variables hold NaN/inf ({listing})")
        return not bad

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(loss):
            self.last_finite_loss = float(loss)
        else:
            self._diverged(self.model, applied_steps(self.model), "the loss became NaN/inf")


class EpochLog(keras.callbacks.Callback):
    """One line per epoch: loss, τ, learning rate, collapse monitor and, with labels, the
    online probe's accuracy; adds learning_rate to the logs (and so to TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        line = (
            f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f} "
            f"tau {logs.get('tau', float('nan')):.5f} lr {logs['learning_rate']:.4g} "
            f"projection_std {logs.get('projection_std', float('nan')):.4f}"
        )
        probe = logs.get("probe_accuracy")
        if probe is not None:
            line += f" probe_accuracy {probe:.4f}"
        logger.info(line)
        print(line, flush=True)


class CheckedFit:
    """Mixed into `BYOL` (before `keras.Model`): `fit` and `train_on_batch` with BYOL's
    callbacks and checks.

    `fit` plans the τ schedule (`TargetDecayPlan`), checks the input (`InputCheck`: NaN/inf,
    [0, 255] floats, one-image batches stop `fit` with a ValueError) and warns when the
    learning rate is 0 for the whole call (`LearningRateCheck`); `train_on_batch` checks the
    input after each batch. Both refuse a model compiled without an optimizer or with a
    loss, and gradient accumulation that the backend's step cannot honour.
    """

    def _check_compiled_for_byol(self):
        # compile() itself is not overridden: Keras then skips compile_from_config on
        # load and the optimizer state (and with it the τ position) would be lost.
        if getattr(self, "optimizer", None) is None:
            raise ValueError("Call model.compile(optimizer=...) before fit.")
        every = accumulation_steps(self.optimizer)
        if every > 1:
            backends.current().check_accumulation(self)
        rate = learning_rate_schedule(optimizer_of(self.optimizer))
        if every > 1 and isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            counted = rate.accumulation_steps if isinstance(rate, AppliedSteps) else 1
            if counted != every:
                warnings.warn(
                    f"The optimizer accumulates gradients over {every} batches and its "
                    f"learning-rate schedule {type(rate).__name__} counts a step every "
                    f"{counted} batch(es) (Keras calls it with the batch count), so it runs "
                    f"{every / counted:g}× as fast as the applied steps that τ counts. Wrap "
                    f"the schedule: keras_byol.schedules.AppliedSteps(schedule, {every}).",
                    stacklevel=3,
                )
        if getattr(self, "loss", None) is not None:
            raise ValueError("BYOL computes its own loss; do not pass loss= to compile.")

    def fit(self, *args, **kwargs):
        self._check_compiled_for_byol()
        arguments = bind_fit_arguments(args, kwargs)
        callbacks = list(arguments.get("callbacks") or [])
        if not any(isinstance(callback, TargetDecayPlan) for callback in callbacks):
            callbacks.append(TargetDecayPlan())
        arguments["callbacks"] = [InputCheck(), LearningRateCheck()] + callbacks
        try:
            return super().fit(**arguments)
        except Exception as error:
            # A step that failed while tracing (a batch check) may have created variables:
            # the next fit traces a new function instead of reusing this one.
            self.train_function = None
            self._raise_if_refused_before_the_step(error)
            raise

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._check_compiled_for_byol()
        try:
            logs = super().train_on_batch(x, y, sample_weight, class_weight, return_dict=True)
        except Exception as error:
            self.train_function = None  # as in `fit`
            self._raise_if_refused_before_the_step(error)
            raise
        step = self._optimizer_step()
        raise_on_input_problems(logs, step)
        self.warn_if_target_frozen(step)
        return logs if return_dict else metrics_in_order(self, logs)

    def _optimizer_step(self):
        return int(keras.ops.convert_to_numpy(self.optimizer.iterations))

    def _raise_if_refused_before_the_step(self, error):
        refused = refused_before_the_step(error, self._optimizer_step)
        if refused is not None:
            raise refused from None

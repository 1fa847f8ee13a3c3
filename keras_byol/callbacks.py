"""TargetUpdate: the user-facing owner of the τ schedule of BYOL's Polyak target update."""

import keras

from keras_byol.schedules import target_decay


@keras.saving.register_keras_serializable(package="keras_byol")
class TargetUpdate(keras.callbacks.Callback):
    """Sets the cosine τ schedule of the target update and logs τ.

    The update ξ ← τ·ξ + (1−τ)·θ itself runs inside the compiled train step after every
    optimizer step (so `steps_per_execution > 1` skips none), with τ_k computed from the
    optimizer's own step counter k: it continues after a resume and follows a changed
    `total_steps` from the step where it changed.

    Args:
        base_tau: τ_base (0.996 for the 1000-epoch recipe, 0.99 for 100/300, 0.97 for 40).
        total_steps: K, the optimizer steps of the whole run. Default: epochs × steps per
            epoch of the `fit` call (epochs counts from 0, so a resumed fit with
            `initial_epoch` keeps the same K).

    Logs `tau`, the τ of the last update, at the end of every epoch.
    """

    def __init__(self, base_tau=0.996, total_steps=None):
        super().__init__()
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"base_tau must be in [0, 1], got {base_tau}.")
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        self.base_tau = float(base_tau)
        self.total_steps = None if total_steps is None else int(total_steps)

    def _resolve_total_steps(self):
        if self.total_steps is not None:
            return self.total_steps
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps or not epochs:
            raise ValueError(
                "TargetUpdate cannot size the τ schedule: the dataset has no known length "
                f"(steps per epoch = {steps}). Pass fit(steps_per_epoch=...) or "
                "TargetUpdate(total_steps=...)."
            )
        return int(steps) * int(epochs)

    def on_train_begin(self, logs=None):
        total_steps = self._resolve_total_steps()
        steps_per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if steps_per_execution > total_steps:
            raise ValueError(
                f"steps_per_execution={steps_per_execution} exceeds the τ schedule's "
                f"total_steps={total_steps}; lower steps_per_execution or train longer."
            )
        self.model.set_target_schedule(self.base_tau, total_steps)

    def last_tau(self):
        """τ of the most recent update (τ_base before any step)."""
        step = max(int(self.model.optimizer.iterations.numpy()) - 1, 0)
        return float(target_decay(step, self.base_tau, int(self.model.tau_total_steps.numpy())))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["tau"] = self.last_tau()

    def get_config(self):
        return {"base_tau": self.base_tau, "total_steps": self.total_steps}

"""LARS, the optimizer of the BYOL recipe, with biases and normalization parameters excluded."""

import keras
from keras import ops

from keras_byol.workarounds import batch_count_variable, variable_index

# The BYOL online probe's layer (`BYOL(num_classes=...)`): a monitor, not the representation.
PROBE_LAYER = "online_probe"


def optimizer_of(optimizer):
    """The optimizer that steps (a `LossScaleOptimizer`'s inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def batch_counter(optimizer):
    """The variable counting the batches the optimizer was given (Keras' `iterations` is
    this count ÷ N under gradient accumulation)."""
    return batch_count_variable(optimizer_of(optimizer))


def accumulation_steps(optimizer):
    """N of an optimizer built with `gradient_accumulation_steps=N`, else 1."""
    return int(getattr(optimizer_of(optimizer), "gradient_accumulation_steps", None) or 1)


def excluded_by_default(variable):
    """True for what gets no weight decay (nor LARS's trust ratio) by default: biases and
    BatchNorm/GroupNorm γ, β (the model's rank ≤ 1 variables) and the online probe's
    kernel, a monitor's (`PROBE_LAYER`)."""
    path = getattr(variable, "path", variable.name)
    return len(variable.shape) <= 1 or path.split("/")[-2:-1] == [PROBE_LAYER]


@keras.saving.register_keras_serializable(package="keras_byol")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling as in the official BYOL code.

    Per variable w with gradient g (excluded variables skip steps 1 and 2):
      1. g ← g + weight_decay·w                           (decay added to the gradient)
      2. g ← g · η·‖w‖/‖g‖, the trust ratio (1 when ‖w‖ = 0 or ‖g‖ = 0)
      3. m ← momentum·m + g                                (heavy ball, no Nesterov)
      4. w ← w − learning_rate·m

    Args:
        learning_rate: float or `LearningRateSchedule` (e.g. `schedules.WarmupCosine`).
        momentum: heavy-ball momentum, 0.9 in the recipe.
        weight_decay: L2 coefficient added to the gradient (1e-6 or 1.5e-6 in the recipe).
            Unlike Keras' decoupled `weight_decay`, it goes through the trust ratio.
        eta: trust coefficient η, 1e-3 in the recipe.
        exclude_from_adaptation: `None` excludes every variable of rank ≤ 1 (biases and
            normalization γ/β, the recipe's rule) and the BYOL online probe's kernel (a
            monitor, trained here by plain momentum SGD: through the trust ratio it learns
            too slowly to say anything) from both weight decay and the trust ratio; a list
            of strings instead excludes the variables whose `path` contains any of them.
        name, **kwargs: passed to `keras.optimizers.Optimizer` (e.g. `clipnorm`).

    Example:
        >>> opt = LARS(learning_rate=WarmupCosine(0.2 * 4096 / 256, 3120, 312000),
        ...            weight_decay=1.5e-6)
    """

    def __init__(
        self,
        learning_rate=0.2,
        momentum=0.9,
        weight_decay=0.0,
        eta=1e-3,
        exclude_from_adaptation=None,
        name="lars",
        **kwargs,
    ):
        if isinstance(learning_rate, (int, float)) and not learning_rate >= 0:
            raise ValueError(f"LARS learning_rate must be >= 0, got {learning_rate}.")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}.")
        if weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs weight_decay >= 0 and eta > 0, got {weight_decay} and {eta}."
            )
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.exclude_from_adaptation = (
            None if exclude_from_adaptation is None else list(exclude_from_adaptation)
        )

    def is_excluded(self, variable):
        """True when `variable` gets neither weight decay nor the trust ratio."""
        if self.exclude_from_adaptation is None:
            return excluded_by_default(variable)
        path = getattr(variable, "path", variable.name)
        return any(key in path for key in self.exclude_from_adaptation)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self._adapted = [not self.is_excluded(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = variable_index(self, variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        update = ops.cast(gradient, variable.dtype)
        if self._adapted[index]:
            update = update + self.lars_weight_decay * variable
            param_norm = ops.sqrt(ops.sum(ops.square(variable)))
            update_norm = ops.sqrt(ops.sum(ops.square(update)))
            trust_ratio = ops.where(
                ops.logical_and(param_norm > 0.0, update_norm > 0.0),
                self.eta * param_norm / ops.maximum(update_norm, 1e-30),
                ops.ones_like(param_norm),
            )
            update = update * trust_ratio
        momentum = self.momentums[index]
        self.assign(momentum, self.momentum * momentum + update)
        self.assign_sub(variable, learning_rate * momentum)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "eta": self.eta,
                "exclude_from_adaptation": self.exclude_from_adaptation,
            }
        )
        return config

"""The BYOL train step on the JAX backend: a stateless step, Polyak update inside the jit.

Keras' JAX trainer passes the model state as arrays and expects it back updated; the
model's own code (forward passes, loss, Polyak update, metrics) runs unchanged inside
`keras.StatelessScope`, which reads variables from those arrays and records assignments.
Imports no TensorFlow.
"""

import jax
import keras

from keras_byol.optimizers import accumulation_steps, batch_counter


def _run_stateless(variables, values, fn):
    """fn() with `variables` read as `values`; returns (fn's result, their new values)."""
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
        result = fn()
    new_values = []
    for variable, old in zip(variables, values):
        new = scope.get_current_value(variable)
        new_values.append(old if new is None else new)
    return result, new_values


def _step_counter(optimizer):
    """(position of the optimizer's batch counter in `optimizer.variables`, N): applied
    steps are counter // N (N > 1 under gradient accumulation, as Keras' `iterations`)."""
    counter = batch_counter(optimizer)
    index = next(i for i, v in enumerate(optimizer.variables) if v is counter)
    return index, accumulation_steps(optimizer)


def train_step(model, state, data):
    """One optimizer step on state = (trainable, non_trainable, optimizer, metrics) arrays.

    Returns:
        (logs, new_state), as Keras' JAX trainer expects.
    """
    trainable, non_trainable, optimizer_values, metrics_values = state
    # An augmenter's seed generators are non-trainable state: the views are drawn
    # statelessly from their values and the advanced seeds carried on.
    (view1, view2, labels), non_trainable = _run_stateless(
        model.non_trainable_variables, non_trainable, lambda: model.read_batch(data)
    )
    model_variables = model.trainable_variables + model.non_trainable_variables
    num_trainable = len(trainable)

    def loss_fn(trainable_values, non_trainable_values):
        (loss, outputs), new_values = _run_stateless(
            model_variables,
            list(trainable_values) + list(non_trainable_values),
            lambda: model.compute_losses(view1, view2, labels),
        )
        scaled_loss, _ = _run_stateless(
            model.optimizer.variables, optimizer_values, lambda: model.optimizer.scale_loss(loss)
        )
        return scaled_loss, (outputs, new_values[num_trainable:])

    gradient_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (outputs, non_trainable)), gradients = gradient_fn(trainable, non_trainable)

    # k = optimizer steps applied before this one: the τ index of the official code.
    counter, every = _step_counter(model.optimizer)
    step = optimizer_values[counter] // every
    trainable, optimizer_values = model.optimizer.stateless_apply(
        optimizer_values, gradients, trainable
    )
    # A loss-scaling optimizer skips steps with non-finite gradients without counting them;
    # under gradient accumulation only every N-th batch applies a step.
    applied = optimizer_values[counter] // every > step
    tau, new_values = _run_stateless(
        model_variables,
        list(trainable) + list(non_trainable),
        lambda: model.update_target(step, applied),
    )
    non_trainable = new_values[num_trainable:]

    logs, metrics_values = _run_stateless(
        model.metrics_variables, metrics_values, lambda: model.update_metrics(outputs)
    )
    return {**logs, "tau": tau}, (trainable, non_trainable, optimizer_values, metrics_values)


def check_accumulation(model):
    """Nothing to refuse: Keras' own gradient accumulation runs inside the JAX step, under
    `keras.distribution.DataParallel` too."""
    del model

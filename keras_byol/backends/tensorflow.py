"""The BYOL train step on the TensorFlow backend: tf.GradientTape inside Keras' tf.function."""

import tensorflow as tf

from keras_byol.model import accumulation_steps
from keras_byol.workarounds import give_multi_worker_logs_an_axis


def train_step(model, data):
    """One optimizer step: symmetric loss, gradients into the online network, Polyak update.

    Args:
        model: a `keras_byol.BYOL`.
        data: a dict batch {"view1", "view2"} of (B, H, W, 3) float images in [0, 1].

    Returns:
        Dict of metric results (loss, projection_std, tau; probe_loss, probe_accuracy).
    """
    view1, view2, labels = model.read_batch(data)
    optimizer = model.optimizer
    online_variables = model.trainable_variables
    # k = optimizer steps applied before this one: the τ index of the official code.
    step = tf.identity(optimizer.iterations)
    with tf.GradientTape() as tape:
        loss, outputs = model.compute_losses(view1, view2, labels)
        # Gradients are summed over replicas: divide by their count so the update is the
        # mean over the global batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaled_loss = optimizer.scale_loss(loss / replicas)
    gradients = tape.gradient(scaled_loss, online_variables)
    optimizer.apply(gradients, online_variables)
    # A loss-scaling optimizer skips steps with non-finite gradients without counting them;
    # under gradient accumulation `iterations` counts applied steps (every N-th batch).
    applied = optimizer.iterations > step
    tau = model.update_target(step, applied)
    logs = {**model.update_metrics(outputs), "tau": tau}
    return give_multi_worker_logs_an_axis(logs, tf.distribute.get_strategy())


def check_accumulation(model):
    """Raises when the optimizer accumulates gradients under a tf.distribute strategy that
    synchronizes replicas with merge_call (Mirrored, MultiWorkerMirrored on CPUs or without
    XLA): Keras applies accumulated gradients inside a cond, which those strategies cannot
    synchronize ("merge_call called while defining a new graph")."""
    strategy = model.distribute_strategy
    if accumulation_steps(model.optimizer) == 1 or strategy.num_replicas_in_sync == 1:
        return
    with strategy.scope():
        needs_merge_call = not tf.__internal__.distribute.strategy_supports_no_merge_call()
    if needs_merge_call:
        raise ValueError(
            f"Gradient accumulation (gradient_accumulation_steps="
            f"{accumulation_steps(model.optimizer)}) does not run under "
            f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas: Keras "
            "applies accumulated gradients inside a cond that this strategy cannot "
            "synchronize. Train with accumulation on one device, or on the JAX backend with "
            "keras.distribution.DataParallel (KERAS_BACKEND=jax), or drop the accumulation "
            "and use the replicas' larger global batch."
        )

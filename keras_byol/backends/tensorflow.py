"""The BYOL train step on the TensorFlow backend: tf.GradientTape inside Keras' tf.function."""

import tensorflow as tf

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
    # A loss-scaling optimizer skips steps with non-finite gradients without counting them.
    applied = optimizer.iterations > step
    tau = model.update_target(step, applied)
    logs = {**model.update_metrics(outputs), "tau": tau}
    return give_multi_worker_logs_an_axis(logs, tf.distribute.get_strategy())

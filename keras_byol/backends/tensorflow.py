"""The BYOL train step on the TensorFlow backend: tf.GradientTape inside Keras' tf.function."""

import tensorflow as tf


def train_step(model, data):
    """One optimizer step: symmetric loss, gradients into the online network, Polyak update.

    Args:
        model: a `keras_byol.BYOL`.
        data: a dict batch {"view1", "view2"} of (B, H, W, 3) float images in [0, 1].

    Returns:
        Dict of metric results (loss, projection_std; probe_loss, probe_accuracy).
    """
    view1, view2 = model.unpack_views(data)
    labels = model.batch_labels(data)
    optimizer = model.optimizer
    online_variables = model.trainable_variables
    # k = optimizer steps taken before this one: the τ index of the official code.
    step = tf.identity(optimizer.iterations)
    with tf.GradientTape() as tape:
        loss, outputs = model.compute_losses(view1, view2, labels)
        # Gradients are summed over replicas: divide by their count so the update is the
        # mean over the global batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaled_loss = optimizer.scale_loss(loss / replicas)
    gradients = tape.gradient(scaled_loss, online_variables)
    optimizer.apply(gradients, online_variables)
    model.polyak_update(model.current_tau(step))
    return model.update_metrics(outputs)

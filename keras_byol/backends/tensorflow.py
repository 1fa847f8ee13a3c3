"""The BYOL train step on the TensorFlow backend: tf.GradientTape inside Keras' tf.function."""

import tensorflow as tf

from keras_byol.distribute import across_workers


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
    logs = model.update_metrics(outputs)
    if across_workers(tf.distribute.get_strategy()):
        # Keras 3.15 reduces the logs of a multi-worker step with strategy.reduce("MEAN",
        # v, axis=0), which fails on scalars (tensorflow/tensorflow#72388): give each
        # replica's value an axis of length 1, so the reduction is the mean over replicas.
        logs = {name: tf.reshape(value, (1,)) for name, value in logs.items()}
    return logs


def make_distributed_multi_step_function(model):
    """A train function running `model.steps_per_execution` steps per call under a strategy.

    Keras 3.15's own multi-step function wraps each step in a `tf.cond` inside a
    `tf.while_loop`, which fails under MirroredStrategy ("You must feed a value for
    placeholder tensor ...", keras-team/keras#19246). This one is the TF-Keras 2 loop: a
    `tf.while_loop` of `strategy.run` steps on `iterator.get_next()`; when the data ends
    mid-call, the OutOfRangeError ends the epoch as Keras expects. Used only for
    distributed strategies with steps_per_execution > 1.
    """
    from keras.src.backend.tensorflow.trainer import reduce_per_replica

    strategy = model.distribute_strategy
    steps = model.steps_per_execution
    train_step = model.train_step
    if model.jit_compile:
        train_step = tf.function(train_step, jit_compile=True, reduce_retracing=True)

    @tf.autograph.experimental.do_not_convert
    def one_step(iterator):
        outputs = strategy.run(train_step, args=(iterator.get_next(),))
        return reduce_per_replica(outputs, strategy, reduction="auto")

    @tf.function(reduce_retracing=True)
    @tf.autograph.experimental.do_not_convert
    def multi_step(iterator):
        outputs = one_step(iterator)
        _, outputs = tf.while_loop(
            lambda i, _: i < steps,
            lambda i, _: (i + 1, one_step(iterator)),
            (tf.constant(1), outputs),
        )
        return outputs

    return multi_step

"""The BYOL train step on the TensorFlow backend: tf.GradientTape inside Keras' tf.function."""

import tensorflow as tf

from keras_byol.batches import SINGLE_IMAGE_REFUSAL, replicas_per_step
from keras_byol.optimizers import accumulation_steps, optimizer_of
from keras_byol.workarounds import (
    accumulation_branches,
    batch_count_variable,
    give_multi_worker_logs_an_axis,
)


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
    with tf.control_dependencies(_single_image_check(model, view1)):
        # k = optimizer steps applied before this one: the τ index of the official code.
        # (Read after the check: every update of the step is ordered after this read.)
        step = tf.identity(optimizer.iterations)
        view1, view2 = tf.identity(view1), tf.identity(view2)
    with tf.GradientTape() as tape:
        loss, outputs = model.compute_losses(view1, view2, labels)
        # Gradients are summed over replicas: divide by their count so the update is the
        # mean over the global batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaled_loss = optimizer.scale_loss(loss / replicas)
    gradients = tape.gradient(scaled_loss, online_variables)
    if accumulation_steps(optimizer) > 1 and _needs_merge_call():
        _accumulate_or_apply(optimizer, gradients, online_variables)
    else:
        optimizer.apply(gradients, online_variables)
    # A loss-scaling optimizer skips steps with non-finite gradients without counting them;
    # under gradient accumulation `iterations` counts applied steps (every N-th batch).
    applied = optimizer.iterations > step
    tau = model.update_target(step, applied)
    logs = {**model.update_metrics(outputs), "tau": tau}
    return give_multi_worker_logs_an_axis(logs, tf.distribute.get_strategy())


def _single_image_check(model, view1):
    """[an op that stops the step (InvalidArgumentError carrying
    `batches.SINGLE_IMAGE_REFUSAL`, which `BYOL.fit` turns into a ValueError) on a batch of
    fewer than 2 images] — for the step to depend on, so that no kernel sees such a batch.

    A batch size known when the step is traced was checked then (`batches.check_batch_size`);
    this is for datasets batched without drop_remainder, whose last batch may hold one
    image: TensorFlow's oneDNN CPU kernels have crashed the process on such a batch (a
    double free or a segfault) instead of reaching the check after the step. XLA drops
    assertions (jit_compile=True): there the step's input counts still stop `fit`.
    """
    if view1.shape[0] is not None:
        return []
    images = tf.shape(view1)[0] * replicas_per_step(model)
    return [tf.debugging.assert_greater_equal(images, 2, message=SINGLE_IMAGE_REFUSAL)]


def _needs_merge_call():
    """Whether the current strategy synchronizes replicas with merge_call (Mirrored, and
    MultiWorkerMirrored on CPUs or without XLA), with more than one replica."""
    strategy = tf.distribute.get_strategy()
    return (
        strategy.num_replicas_in_sync > 1
        and not tf.__internal__.distribute.strategy_supports_no_merge_call()
    )


def _accumulate_or_apply(optimizer, gradients, variables):
    """Keras' gradient accumulation (`optimizer.apply` with gradient_accumulation_steps=N)
    under a strategy that synchronizes with merge_call.

    Keras chooses between adding a batch's gradients to its accumulators and applying their
    mean with a cond in replica context whose branches call merge_call, which these strategies
    cannot synchronize. Here the cond runs in cross-replica context and each branch re-enters
    the replicas (the way Keras' LossScaleOptimizer applies its cond); the branches are Keras'
    own: per-replica accumulators, on the N-th batch (sum + this batch) / N all-reduced,
    weight decay and the update step, then the accumulators reset; the batch counter
    advances every batch. Called in replica context.
    """
    every = optimizer.gradient_accumulation_steps
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    gradients, variables = [g for g, _ in pairs], [v for _, v in pairs]
    apply, accumulate = accumulation_branches(optimizer, variables, every)
    counter = batch_count_variable(optimizer)

    def in_cross_replica_context(strategy, gradients):
        applies = tf.equal((counter + 1) % every, 0)
        tf.cond(
            applies,
            lambda: strategy.extended.call_for_each_replica(apply, args=(gradients,)),
            lambda: strategy.extended.call_for_each_replica(accumulate, args=(gradients,)),
        )
        counter.assign_add(1)

    tf.distribute.get_replica_context().merge_call(in_cross_replica_context, args=(gradients,))


def check_accumulation(model):
    """Raises for what `_accumulate_or_apply` does not carry over from Keras' `apply` under a
    merge_call strategy: loss scaling (its own cond around the apply), gradient clipping,
    the optimizer's EMA, variable constraints and float8's gradient-overwritten variables."""
    strategy = model.distribute_strategy
    if accumulation_steps(model.optimizer) == 1 or strategy.num_replicas_in_sync == 1:
        return
    with strategy.scope():
        needs_merge_call = not tf.__internal__.distribute.strategy_supports_no_merge_call()
    if not needs_merge_call:
        return
    optimizer = model.optimizer
    unsupported = [
        name
        for name, used in (
            ("a LossScaleOptimizer (mixed_float16)", optimizer is not optimizer_of(optimizer)),
            ("loss_scale_factor", optimizer.loss_scale_factor is not None),
            ("clipnorm", optimizer.clipnorm is not None),
            ("clipvalue", optimizer.clipvalue is not None),
            ("global_clipnorm", optimizer.global_clipnorm is not None),
            ("use_ema", optimizer_of(optimizer).use_ema),
            ("variable constraints", any(v.constraint for v in model.trainable_variables)),
            (
                "variables overwritten with their gradient (float8)",
                any(
                    getattr(v, "overwrite_with_gradient", False) for v in model.trainable_variables
                ),
            ),
        )
        if used
    ]
    if unsupported:
        raise ValueError(
            f"Gradient accumulation (gradient_accumulation_steps="
            f"{accumulation_steps(optimizer)}) under {type(strategy).__name__} with "
            f"{strategy.num_replicas_in_sync} replicas runs Keras' accumulation with its cond "
            f"moved out of the replicas, without {', '.join(unsupported)}. Drop "
            "them (mixed_bfloat16 needs no loss scaling), or train on one device, or on the "
            "JAX backend with keras.distribution.DataParallel (KERAS_BACKEND=jax)."
        )

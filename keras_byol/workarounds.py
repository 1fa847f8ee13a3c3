"""Keras/TensorFlow workarounds BYOL needs, quarantined here (Keras 3.15, TensorFlow 2.21).

Each piece names the upstream issue and the versions it was checked with; delete it here
when Keras fixes the bug. `BYOL` inherits `TrainerWorkarounds`, so `model.py` reads like
the paper. setup.cfg pins `keras<3.16`: the next Keras must be tested against this module.
"""

import inspect

import keras


def bind_fit_arguments(args, kwargs):
    """keras.Model.fit's arguments by name, whether passed by position or keyword."""
    bound = inspect.signature(keras.Model.fit).bind(None, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    arguments.update(arguments.pop("kwargs", {}))
    return arguments


def give_multi_worker_logs_an_axis(logs, strategy):
    """Keras 3.15 reduces a multi-worker step's logs with strategy.reduce("MEAN", v, axis=0),
    which fails on scalars (https://github.com/tensorflow/tensorflow/issues/72388, TF 2.16 to
    2.21): each replica's value gets an axis of length 1, so the result is their mean."""
    from keras_byol.distribute import across_workers

    if not across_workers(strategy):
        return logs
    import tensorflow as tf

    return {name: tf.reshape(value, (1,)) for name, value in logs.items()}


def make_distributed_multi_step_function(model):
    """A train function running `model.steps_per_execution` steps per call under a strategy.

    Keras 3.15's own multi-step function wraps each step in a `tf.cond` inside a
    `tf.while_loop`, which fails under MirroredStrategy ("You must feed a value for
    placeholder tensor ...", https://github.com/keras-team/keras/issues/19246). This one is
    the TF-Keras 2 loop: a `tf.while_loop` of `strategy.run` steps on `iterator.get_next()`;
    when the data ends mid-call, the OutOfRangeError ends the epoch as Keras expects.
    """
    import tensorflow as tf
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


class TrainerWorkarounds:
    """Mixed into `BYOL` (before `keras.Model`): the trainer overrides Keras 3.15 needs."""

    def make_train_function(self, force=False):
        # steps_per_execution > 1 under a tf.distribute strategy: keras-team/keras#19246.
        if (
            keras.backend.backend() == "tensorflow"
            and self.steps_per_execution > 1
            and self.distribute_strategy.num_replicas_in_sync > 1
        ):
            if self.train_function is None or force:
                self.train_function = make_distributed_multi_step_function(self)
            return self.train_function
        return super().make_train_function(force)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer (3.15) builds a model under a strategy by all-reducing a first
        # batch with strategy.reduce, which MultiWorkerMirroredStrategy cannot do on a dict
        # of per-replica views ("Attempt to convert a value ({'view1': PerReplica...",
        # https://github.com/keras-team/keras/issues/20329). BYOL builds its networks in
        # __init__, so only the optimizer is left to build and no batch is needed.
        if iterator is not None and all(layer.built for layer in self._flatten_layers()):
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, *args, **kwargs):
        arguments = bind_fit_arguments(args, kwargs)
        if hasattr(arguments.get("x"), "element_spec"):
            # Keras 3.15 warns that shuffle=True (its default) is ignored for a tf.data
            # input, which its own pipeline shuffles.
            arguments.setdefault("shuffle", False)
        return super().fit(**arguments)

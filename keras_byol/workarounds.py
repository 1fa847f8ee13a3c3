"""Keras/TensorFlow workarounds and every private Keras API keras_byol uses, quarantined here.

Each piece names the upstream issue or the private detail, and the versions it was checked
with (`KERAS_CHECKED`); delete it here when Keras fixes the bug or makes the detail public.
No other module reaches into `keras.src` or a private Keras attribute, and a newer Keras
that changes one of the details below fails loudly: `tests/test_workarounds.py` checks
both. `BYOL` inherits `TrainerWorkarounds`, so `model.py` reads like the paper.
setup.cfg pins `keras<3.16`: the next Keras must be tested against this module.
"""

import inspect

import keras

# Image-preprocessing layers with Keras' per-backend dispatch (tf.data on any backend) and
# its `get_random_transformation`/`transform_images` protocol: no public export in Keras 3.15.
from keras.src.layers.preprocessing.image_preprocessing.base_image_preprocessing_layer import (  # noqa: F401
    BaseImagePreprocessingLayer,
)
from keras.src.utils.backend_utils import in_tf_graph  # noqa: F401 (for views)

from keras_byol.distribute import across_workers

KERAS_CHECKED = "3.15.1"

# The private Keras details used below, by owner: tests/test_workarounds.py asserts that each
# still exists in the installed Keras.
PRIVATE_OPTIMIZER_ATTRIBUTES = (
    "_iterations",  # the batch counter (`iterations` is it ÷ N under gradient accumulation)
    "_learning_rate",  # the schedule object itself (`learning_rate` evaluates it)
    "_accumulated_gradients",  # Keras' gradient accumulators, by variable index
    "_get_variable_index",
    "_apply_weight_decay",
    "_backend_update_step",
    "_backend_reset_gradient_accumulators",
    "_backend_increment_gradient_accumulators",
)
PRIVATE_IMAGE_LAYER_ATTRIBUTES = (
    "_get_seed_generator",  # the layer's or tf.data's SeedGenerator (layer_seed_generator)
    "_USE_BASE_FACTOR",  # set False by views' layers, which take no `factor`
)
PRIVATE_MODEL_ATTRIBUTES = (
    "_flatten_layers",  # every nested layer (Keras has no public recursive walk)
    "_flatten_metrics_in_order",  # train_on_batch's list of metric values
    "_maybe_symbolic_build",  # overridden by TrainerWorkarounds
)


def batch_count_variable(optimizer):
    """The optimizer's count of the batches it was given (Keras' `iterations` is this count
    ÷ N under gradient accumulation; the count itself is private)."""
    return optimizer._iterations


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's per-variable slots (what Keras' own
    optimizers use in `update_step`)."""
    return optimizer._get_variable_index(variable)


def learning_rate_schedule(optimizer):
    """The optimizer's learning rate as given: a float or the `LearningRateSchedule` itself."""
    return getattr(optimizer, "_learning_rate", None)


def nested_layers(layer):
    """`layer` and every layer inside it, at any depth."""
    return list(layer._flatten_layers(include_self=True))


def layer_seed_generator(layer):
    """The SeedGenerator a `BaseImagePreprocessingLayer` draws from on its current backend
    (the layer's own, or Keras' tf.data one inside a tf.data pipeline)."""
    return layer._get_seed_generator(layer.backend._backend)


def metrics_in_order(model, logs):
    """The list `train_on_batch(return_dict=False)` returns for `logs`."""
    return model._flatten_metrics_in_order(logs)


def accumulation_branches(optimizer, variables, every):
    """Keras' own two branches of gradient accumulation (`optimizer.apply` with
    `gradient_accumulation_steps=every`) as (apply, accumulate), each a function of the
    batch's gradients, for a caller that chooses between them itself (`backends.tensorflow`,
    under a strategy that synchronizes with merge_call): apply adds the accumulators to the
    gradients, divides by `every`, decays the weights, updates them and resets the
    accumulators; accumulate adds the gradients to the accumulators."""
    accumulators = [
        optimizer._accumulated_gradients[variable_index(optimizer, v)] for v in variables
    ]

    def apply(gradients):
        mean = [(g + a) / every for g, a in zip(gradients, accumulators)]
        optimizer._apply_weight_decay(variables)
        optimizer._backend_update_step(mean, variables, optimizer.learning_rate)
        optimizer._backend_reset_gradient_accumulators()

    def accumulate(gradients):
        optimizer._backend_increment_gradient_accumulators(gradients, accumulators)

    return apply, accumulate


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
        if iterator is not None and all(layer.built for layer in nested_layers(self)):
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, *args, **kwargs):
        arguments = bind_fit_arguments(args, kwargs)
        if hasattr(arguments.get("x"), "element_spec"):
            # Keras 3.15 warns that shuffle=True (its default) is ignored for a tf.data
            # input, which its own pipeline shuffles.
            arguments.setdefault("shuffle", False)
        return super().fit(**arguments)

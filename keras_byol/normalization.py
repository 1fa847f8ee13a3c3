"""BatchNormalization with a fused training step on TensorFlow and per-view statistics.

`FusedBatchNormalization` is Keras' layer with two additions BYOL needs for speed:
TensorFlow's fused kernel in training mode, and, inside `per_view_statistics(n)`, batch
statistics computed separately for each of n equal parts of the batch, so that one pass
over both views concatenated equals a pass per view.
"""

import contextlib
import contextvars

import keras
from keras import ops

from keras_byol.workarounds import nested_layers

# Number of equal parts of the batch that get their own statistics; 1 = the whole batch.
# A ContextVar, not a global: MirroredStrategy runs each replica's step in its own thread.
_VIEWS_IN_BATCH = contextvars.ContextVar("keras_byol_views_in_batch", default=1)


@contextlib.contextmanager
def per_view_statistics(views):
    """Inside: training-mode `FusedBatchNormalization` layers split the batch into `views`.

    A batch of `views` × B images (view 1's B images, then view 2's, …) is normalized with
    each view's own mean and variance, and the moving averages are updated once per view,
    in order — exactly what `views` separate calls on (B, …) batches would do. Other
    BatchNormalization classes are not affected (`BYOL` checks its networks for them).

    Example:
        >>> with per_view_statistics(2):
        ...     features = encoder(ops.concatenate([view1, view2]), training=True)
    """
    views = int(views)
    if views < 1:
        raise ValueError(f"per_view_statistics needs views >= 1, got {views}.")
    token = _VIEWS_IN_BATCH.set(views)
    try:
        yield
    finally:
        _VIEWS_IN_BATCH.reset(token)


@keras.saving.register_keras_serializable(package="keras_byol")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`: fused on TensorFlow, per-view statistics on request.

    Keras 3 normalizes with separate ops on the TensorFlow backend (mean, variance,
    normalize, and their gradients, each a pass over the activations). In training mode
    this layer calls TensorFlow's FusedBatchNormV3 instead (oneDNN on CPUs, cuDNN on
    GPUs), and its fused gradient. The result is the Keras layer's: the same batch
    statistics (the moving variance is updated with the biased batch variance, as Keras
    does), the same moving averages, the same weights and config (tested against it).

    Inside `per_view_statistics(n)` a training-mode call normalizes each of the n equal
    parts of its batch with that part's statistics (any backend, `synchronized=True`
    included, with Keras-style ops rather than the fused kernel; the normalized axis must
    be the last; no masks or `renorm`).

    `synchronized=True` normalizes with the global batch's statistics when several
    `tf.distribute` replicas train (Keras' synchronized path) and keeps the fused kernel on
    one replica, where the two are the same. Off TensorFlow the flag is kept in the config
    but not passed to Keras, which refuses it there: JAX computes statistics over the
    whole (sharded) batch anyway.

    Everything else — inference mode, other backends (JAX), masks, `renorm`, a
    normalized axis that is not the last, inputs that are not (B, C) or (B, H, W, C) —
    runs the Keras layer unchanged.

    Input shape (B, C) or (B, H, W, C) → the same shape.
    """

    def __init__(self, *args, synchronized=False, **kwargs):
        on_tensorflow = keras.backend.backend() == "tensorflow"
        super().__init__(*args, synchronized=synchronized and on_tensorflow, **kwargs)
        self.synchronized_requested = bool(synchronized)

    def get_config(self):
        return {**super().get_config(), "synchronized": self.synchronized_requested}

    def _normalizes_last_axis(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else None
        return axis in (-1, len(inputs.shape) - 1)

    def _views_in_batch(self, inputs, training, mask):
        views = _VIEWS_IN_BATCH.get()
        if views == 1 or not (training and self.trainable):
            return 1
        if mask is not None or self.renorm or not self._normalizes_last_axis(inputs):
            raise ValueError(
                f"{self.name}: per-view statistics need the last axis normalized, no mask "
                "and no renorm; run each view through the network on its own instead "
                "(keras_byol.BYOL(..., concat_views=False))."
            )
        return views

    def _per_view_call(self, inputs, views):
        """Training-mode normalization of (views·B, …, C) with each view's statistics."""
        x = ops.cast(inputs, "float32")
        grouped = ops.reshape(x, (views, -1) + tuple(x.shape[1:]))  # (views, B, …, C)
        axes = tuple(range(1, len(grouped.shape) - 1))
        mean, variance = ops.moments(
            grouped, axes=axes, keepdims=True, synchronized=self.synchronized
        )
        # As Keras' batch_normalization: x·inv + (β − mean·inv), inv = γ / √(var + ε).
        inv = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * ops.cast(self.gamma, "float32")
        shift = -mean * inv
        if self.center:
            shift = shift + ops.cast(self.beta, "float32")
        outputs = ops.reshape(grouped * inv + shift, ops.shape(x))
        moving_mean = ops.cast(self.moving_mean, "float32")
        moving_variance = ops.cast(self.moving_variance, "float32")
        means = ops.reshape(mean, (views, -1))
        variances = ops.reshape(variance, (views, -1))
        keep = self.momentum
        for view in range(views):  # one moving-average update per view, in order
            moving_mean = moving_mean * keep + means[view] * (1.0 - keep)
            moving_variance = moving_variance * keep + variances[view] * (1.0 - keep)
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return ops.cast(outputs, self.compute_dtype)

    def _fused_applies(self, inputs, training, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and training
            and self.trainable
            and mask is None
            and not (self.synchronized and _replicas_in_sync() > 1)
            and not self.renorm
            and len(inputs.shape) in (2, 4)
            and self._normalizes_last_axis(inputs)
        )

    def call(self, inputs, training=None, mask=None):
        views = self._views_in_batch(inputs, training, mask)
        if views > 1:
            return self._per_view_call(inputs, views)
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # only on the TensorFlow backend

        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        images = x if len(x.shape) == 4 else tf.reshape(x, (-1, 1, 1, channels))
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,))
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,))
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            images, scale, offset, epsilon=self.epsilon, is_training=True
        )[:3]
        # The fused kernel returns the unbiased (n − 1) batch variance; Keras averages the
        # biased one.
        count = tf.cast(tf.size(images) // channels, tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(
            tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum)
        )
        self.moving_variance.assign(
            tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum)
        )
        return tf.cast(tf.reshape(y, tf.shape(x)), self.compute_dtype)


def _replicas_in_sync():
    import tensorflow as tf  # only asked on the TensorFlow backend

    return tf.distribute.get_strategy().num_replicas_in_sync


def _batchnorm_layers(networks):
    """Every BatchNormalization layer (Keras' and subclasses) inside `networks`."""
    return [
        layer
        for network in networks
        for layer in nested_layers(network)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def layers_without_per_view_statistics(*networks):
    """Paths of BatchNormalization layers in `networks` that `per_view_statistics` misses.

    Keras' own `BatchNormalization` (and subclasses other than `FusedBatchNormalization`)
    would normalize a concatenated batch with joint statistics.
    """
    return [
        layer.path
        for layer in _batchnorm_layers(networks)
        if not isinstance(layer, FusedBatchNormalization)
    ]


def layers_reading_batch_statistics(*networks):
    """Paths of the layers in `networks` whose training-mode output depends on the batch.

    These are the BatchNormalization layers (Keras' and `FusedBatchNormalization`): in
    training mode each normalizes an example with its batch's mean and variance. An empty
    list means every example is computed alone (GroupNorm, LayerNorm, no normalization),
    as in BYOL without batch statistics (arXiv 2010.10241).
    """
    return [layer.path for layer in _batchnorm_layers(networks)]


def synchronize_batchnorms(network, synchronized):
    """Sets `synchronized` on every BatchNormalization layer of `network` (TensorFlow only).

    Under a `tf.distribute` strategy with several replicas, synchronized layers normalize
    with the statistics of the global batch, as the recipe does; on one device
    `FusedBatchNormalization` then still runs its fused kernel. Other backends compute
    statistics over the whole (sharded) batch anyway, and Keras refuses the flag there.
    """
    if keras.backend.backend() != "tensorflow":
        return
    for layer in _batchnorm_layers([network]):
        layer.synchronized = bool(synchronized)

"""BatchNormalization whose training step is one fused kernel on the TensorFlow backend."""

import keras


@keras.saving.register_keras_serializable(package="keras_byol")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step on TensorFlow.

    Keras 3 normalizes with separate ops on the TensorFlow backend (mean, variance,
    normalize, and their gradients, each a pass over the activations). In training mode
    this layer calls TensorFlow's FusedBatchNormV3 instead (oneDNN on CPUs, cuDNN on
    GPUs), and its fused gradient. The result is the Keras layer's: the same batch
    statistics (the moving variance is updated with the biased batch variance, as Keras
    does), the same moving averages, the same weights and config (tested against it).

    Everything else — inference mode, other backends (JAX), masks, `synchronized=True`,
    `renorm`, a normalized axis that is not the last, inputs that are not (B, C) or
    (B, H, W, C) — runs the Keras layer unchanged.

    Input shape (B, C) or (B, H, W, C) → the same shape.
    """

    def _fused_applies(self, inputs, training, mask):
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            keras.backend.backend() == "tensorflow"
            and training
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) in (2, 4)
            and axis in (-1, len(inputs.shape) - 1)
        )

    def call(self, inputs, training=None, mask=None):
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

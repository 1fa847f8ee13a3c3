"""The online linear probe: a classifier trained beside BYOL on its stop-gradient features."""

import keras
from keras import ops

from keras_byol.optimizers import PROBE_LAYER


def standardize_features(features, epsilon=1e-6):
    """Each row of (B, D) features to zero mean and unit variance over its D values (a
    LayerNorm without parameters)."""
    mean = ops.mean(features, axis=-1, keepdims=True)
    variance = ops.var(features, axis=-1, keepdims=True)
    return (features - mean) * ops.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="keras_byol")
class OnlineProbe(keras.layers.Dense):
    """A Dense(num_classes) on the online encoder's features, trained with its own
    cross-entropy in BYOL's step (`BYOL(num_classes=...)`).

    It reads the features through a stop-gradient, so it learns from the representation
    without changing it. `LARS` (and the job's SGD/AdamW) leave it out of weight decay and
    the trust ratio: it is a monitor, and through the trust ratio it learns too slowly to
    say anything about the features.

    Args:
        num_classes: the classes of the labels.
        standardize: read each example's features standardized over its D values
            (`standardize_features`: the features' overall scale then does not set the
            probe's pace). False: the raw features, as the official code's classifier.
    """

    def __init__(self, num_classes, standardize=True, name=PROBE_LAYER, **kwargs):
        super().__init__(num_classes, name=name, **kwargs)
        self.standardize = bool(standardize)

    def loss_and_logits(self, features, labels):
        """(mean cross-entropy over the labelled examples, logits, labels with −1 set to 0,
        mask of the labelled examples); −1 marks an unlabelled example."""
        features = ops.cast(ops.stop_gradient(features), "float32")
        if self.standardize:
            features = standardize_features(features)
        logits = ops.cast(self(features), "float32")
        mask = ops.cast(labels >= 0, "float32")
        safe_labels = ops.where(labels >= 0, labels, ops.zeros_like(labels))
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            safe_labels, logits, from_logits=True
        )
        loss = ops.sum(cross_entropy * mask) / ops.maximum(ops.sum(mask), 1.0)
        return loss, logits, safe_labels, mask

    def get_config(self):
        config = super().get_config()
        return {"num_classes": config.pop("units"), "standardize": self.standardize, **config}

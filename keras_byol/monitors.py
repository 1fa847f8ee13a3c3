"""Callbacks that watch a BYOL run: collapse warning and a kNN accuracy monitor."""

import math
import warnings

import keras
import numpy as np

from keras_byol.evaluation import extract_features, knn_accuracy


@keras.saving.register_keras_serializable(package="keras_byol")
class CollapseMonitor(keras.callbacks.Callback):
    """Warns when the collapse monitor `projection_std` falls below a threshold.

    `projection_std` (logged by BYOL every epoch) is the std over the batch of the
    L2-normalized online projection: about 1/√d when healthy, → 0 when collapsed.

    Args:
        threshold: warn below this; default 0.2/√d with d the model's projection_dim.
    """

    def __init__(self, threshold=None):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("projection_std")
        if value is None:
            return
        threshold = self.threshold
        if threshold is None:
            threshold = 0.2 / math.sqrt(self.model.projection_dim)
        if value < threshold:
            warnings.warn(
                f"Epoch {epoch + 1}: projection_std {value:.4g} is below {threshold:.4g} "
                f"(healthy ≈ 1/√d = {1 / math.sqrt(self.model.projection_dim):.4g}): the "
                "representation may be collapsing. Check the learning rate for this "
                "optimizer, the target decay τ and the views.",
                RuntimeWarning,
                stacklevel=2,
            )

    def get_config(self):
        return {"threshold": self.threshold}


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN accuracy of the ONLINE encoder's features, logged as `knn_accuracy`.

    Each neighbour votes with exp(cosine similarity / temperature) (k = 200, T = 0.1 as in
    peers); similarities are computed in chunks of `chunk_size` validation examples, so
    memory stays bounded for large feature banks. Put it before `TensorBoard` in the
    callback list to have the value in TensorBoard too.

    Args:
        train_data: (images, labels) arrays: the feature bank; images float in [0, 1].
        val_data: (images, labels) arrays to classify.
        k, temperature: the vote.
        every_n_epochs: run at the end of every n-th epoch.
    """

    def __init__(
        self, train_data, val_data, k=200, temperature=0.1, every_n_epochs=1, chunk_size=1024
    ):
        super().__init__()
        self.train_images, self.train_labels = (np.asarray(a) for a in train_data)
        self.val_images, self.val_labels = (np.asarray(a) for a in val_data)
        if min(self.train_labels.min(), self.val_labels.min()) < 0:
            raise ValueError("KNNMonitor needs class labels (>= 0) for every example.")
        self.k = min(int(k), len(self.train_labels))
        self.temperature = temperature
        self.every_n_epochs = int(every_n_epochs)
        self.chunk_size = int(chunk_size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every_n_epochs:
            return
        encoder = self.model.encoder
        logs["knn_accuracy"] = knn_accuracy(
            extract_features(encoder, self.train_images),
            self.train_labels,
            extract_features(encoder, self.val_images),
            self.val_labels,
            k=self.k,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
        )

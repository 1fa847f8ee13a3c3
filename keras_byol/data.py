"""tf.data input for BYOL: tfds names, image folders and arrays → view or evaluation batches.

Pretraining batches are dicts {"view1", "view2": (B, S, S, 3) float32 in [0, 1], "label"}
(label −1 where a source has none); with augment_on="device" they are {"images": (B, S', S',
3) uint8, "label"} for a model built with `BYOL(..., augmenter=TwoViewAugmenter(...))`.
Evaluation batches are (images (B, S, S, 3) float32 in [0, 1], labels (B,) int64) tuples.

A folder is listed once (names only: nothing is opened before training) into an
`ImageFolder`, which every function here also takes as a source. Bad files are found where
they are read, inside the pipeline: a file that is empty, not an image or corrupt is skipped,
counted and named in one warning per pass over the folder (each file named once; with a
`BadFiles` log, also in a file); a file that vanished or became unreadable stops the pipeline
with TensorFlow's NotFoundError / PermissionDeniedError. Image types TensorFlow cannot decode
(TIFF, HEIC, AVIF, …) are skipped at listing with a warning naming them. Symbolic links are
followed (a loop is listed once) and file names need not be valid UTF-8. An empty folder
raises ValueError naming the path; a pass in which no file can be read raises
InvalidArgumentError. Grayscale and RGBA images are turned into RGB; images smaller than the
output are resized up.
"""

import logging
import os
import random
import threading

import numpy as np
import tensorflow as tf

from keras_byol import augment, tfds_records
from keras_byol.folders import (  # noqa: F401 (public here too)
    IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    ImageFolder,
    _shown,
    list_image_folder,
)
from keras_byol.image_batches import EVAL_CENTER_CROP as _EVAL_CENTER_CROP
from keras_byol.image_batches import source_size as _device_source_size
from keras_byol.sources import (  # noqa: F401 (public here too)
    checked_image_array,
    checked_labels,
    source_from,
)
from keras_byol.tfds_records import as_tensors

logger = logging.getLogger("keras_byol")

# What the pipeline of a folder in which too few files decode stops with (InvalidArgumentError).
NO_READABLE_IMAGE = "no file of a pass over the image folder could be read"
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")
_SMALL_IMAGE_MAX = 64  # at or below this output size, eval images are resized, not cropped


# ------------------------------------------------------------------------------ sources
def folder_class_names(directory):
    """Sorted first-level subfolder names that hold images ([] if images lie at the top)."""
    return list_image_folder(directory).class_names


def labels_of(source, split="train"):
    """(N,) int64 labels of `source` in its order (−1 where it has none)."""
    return labelled_ids(source, split)[1]


def labelled_ids(source, split="train"):
    """(ids (N,), labels (N,) int64) of `source`'s examples (labels −1 where it has none).

    An example's id does not depend on any seed or read order: the row index of an array,
    the path (bytes) of a folder's file, the tfds example id (bytes, `tfds_id`: the record
    file and the index in it) of a tensorflow-datasets split. `eval_dataset(..., ids=True)`
    yields the same ids, and label subsets are sets of them."""
    return source_from(source).ids_and_labels(split)


def _member_of(ids):
    """A tf function id → whether it is one of `ids` (int64 or bytes ids, see `labelled_ids`)."""
    ids = np.asarray(ids)
    keys = tf.constant(ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(bytes))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones(tf.shape(keys), tf.int64)),
        default_value=0,
    )
    return lambda example_id: table.lookup(example_id) > 0


def num_classes(source):
    """Number of classes of a labelled source, or None when it has no labels."""
    return source_from(source).num_classes()


class BadFiles:
    """Counts and names the files a folder pipeline skipped because they cannot be decoded.

    One warning per pass over the folder that skipped files, naming each file the first time
    only; with `log_path`, each file is also appended once to that file ("path<TAB>reason"
    lines; names already in it are not named again, so a resumed run keeps one list).
    Thread-safe: the pipeline calls it from tf.data threads.

    Attributes:
        skipped: {path (bytes): reason} of every file skipped so far.
        passes: the number of files skipped in each pass that skipped any, in order.
    """

    def __init__(self, log_path=None):
        self.log_path = log_path
        self.skipped, self.passes, self._open = {}, [], {}
        self._lock = threading.Lock()
        if log_path and os.path.exists(log_path):
            with open(log_path, "rb") as f:
                for line in f.read().splitlines():
                    path, _, reason = line.partition(b"\t")
                    self.skipped[path] = reason.decode("utf-8", "replace")

    def note(self, pass_index, paths, end_of_pass, kept):
        """Records the skipped `paths` of pass `pass_index` (any int64 naming the pass); at
        its end (`kept` images used), warns. Returns the first path that cannot be opened (it
        vanished or lost its permissions), or b"" when there is none."""
        pass_index, kept = int(pass_index), int(kept)
        for path in (p for p in paths.numpy()):
            reason = _unreadable_reason(path) or "decoded, but its views could not be made"
            if reason.startswith("cannot be read"):
                return path  # the pipeline re-reads it, and stops with TensorFlow's error
            with self._lock:
                self._open.setdefault(pass_index, []).append((path, reason))
        if bool(end_of_pass):
            self._end_pass(pass_index, kept)
        return b""

    def _end_pass(self, pass_index, kept):
        with self._lock:
            skipped = self._open.pop(pass_index, [])
            if not skipped:
                return
            new = [(p, r) for p, r in dict(skipped).items() if p not in self.skipped]
            self.skipped.update(new)
            self.passes.append(len(skipped))
        named = "; ".join(f"{_shown(p)} ({r})" for p, r in new)
        before = len(skipped) - len(new)
        logger.warning(
            "Skipped %d unreadable image file(s) in a pass over the folder (%d images used)%s%s",
            len(skipped),
            kept,
            f": {named}" if named else "",
            f"{'; and the ' if named else ': the '}{before} named before" if before else "",
        )
        if self.log_path and new:
            with open(self.log_path, "ab") as f:
                f.writelines(p + b"\t" + r.encode() + b"\n" for p, r in new)


def _skipping_bad_files(made, paths, first, count, bad_files, pass_index, fill=False):
    """`made` ((position, example) pairs, positions `first`…`count`−1 in order) without the
    examples whose file could not be decoded or cropped: skipped, and told to `bad_files`
    with their paths (`paths[position]`: a tensor in position order).

    fill=True keeps one example per position (a stream that can seek by position): the
    places of skipped files are taken by copies of the readable example before them (after
    them at the start of the pass). A file that vanished stops the pipeline with its
    NotFoundError; a pass in which no file can be read, with InvalidArgumentError."""
    made, paths = made.ignore_errors(), tf.convert_to_tensor(paths)
    placeholder = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), made.element_spec[1])
    end = tf.data.Dataset.from_tensors((tf.constant(count, tf.int64), placeholder))
    zero = tf.constant(0, tf.int64)

    def note(state, element):
        # Each step emits the readable example before this one (held in the state), with
        # the copies that fill the gap after it (and, for the first, the gap before it).
        (expected, skipped, held, pending), previous = state
        position, example = element
        at_end = position >= count

        def tell():
            kept = count - first - skipped - (position - expected)
            missing = tf.py_function(
                bad_files.note, [pass_index, paths[expected:position], at_end, kept], tf.string
            )
            reread = tf.cond(
                tf.strings.length(missing) > 0,
                lambda: tf.strings.length(tf.io.read_file(missing)),  # raises its NotFoundError
                lambda: tf.constant(0),
            )
            check = tf.debugging.Assert(
                tf.logical_not(at_end) | (kept > 0) | (first > 0),
                [f"{NO_READABLE_IMAGE}: every file skipped is named in the warning above. "
                 "Replace or remove the bad files."],
            )  # fmt: skip
            with tf.control_dependencies([check]):
                return tf.cast(reread, tf.int64) * 0

        gap = position - expected
        gap += tf.cond((gap > 0) | at_end, tell, lambda: zero)
        fills = gap if fill else zero
        copies = tf.where(held > 0, 1 + fills + pending, zero)
        pending = tf.where(held > 0, zero, pending + fills)
        return ((position + 1, skipped + gap, held * 0 + 1, pending), example), (copies, previous)

    start = ((tf.cast(first, tf.int64), zero, zero, zero), placeholder)
    return (
        made.concatenate(end)
        .scan(start, note)
        .flat_map(lambda copies, example: tf.data.Dataset.from_tensors(example).repeat(copies))
    )


def _unreadable_reason(path):
    """Why `path` is not a readable image, or None when it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    if not head:
        return "empty file"
    if not (head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        return "not a JPEG, PNG, BMP, GIF or WebP image"
    try:
        encoded = tf.io.read_file(os.fsencode(path))
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if image.shape[0] == 0 or image.shape[1] == 0:
            return "image has no pixels"
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        return "corrupt or truncated image data"
    return None


def is_folder(source):
    """Whether a source means a folder (an `ImageFolder`, a path, an existing file or folder)."""
    return source_from(source).kind == "folder"


def _refuse_flat_images(images):
    """Raises when every image of a pretraining array is one flat value (all zeros, say):
    both views of each would be the same constant and BYOL would learn nothing."""
    flat = images.reshape(len(images), -1)
    if (flat.min(axis=1) == flat.max(axis=1)).all():
        raise ValueError(
            f"Every one of the {len(images)} images is a single flat value: both views of "
            "each would be the same constant and BYOL would learn nothing."
        )


def _records(source, split):
    """{"image": encoded bytes or decoded image, "label": int64, "id"} records of an array
    source or a tfds split (ids as `labelled_ids` gives them); folders are read by their own
    pipelines."""
    source = source_from(source)
    columns = source.columns()
    if columns is None:
        return tfds_records.read_records(source.name, source.pretrain_split(split), with_ids=True)
    columns, count = columns
    return tf.data.Dataset.from_tensor_slices({**columns, "id": np.arange(count, dtype=np.int64)})


# --------------------------------------------------------------------------- decoding
def _image_of(record):
    """A record's encoded or decoded image, reading the file of a {"path"} record."""
    return tf.io.read_file(record["path"]) if "path" in record else record["image"]


def _decode(image):
    """Encoded bytes or a decoded image → (H, W, 3) float32 in [0, 1]."""
    return augment.to_rgb_float(_decode_raw(image))


def _views_from_record(image, seed, size, view1, view2):
    """Two views; JPEG bytes are decoded only inside the window that covers both crops."""
    compiled = size >= augment.COMPILED_MIN_SIZE
    if image.dtype != tf.string:
        return augment.two_views(image, seed, size, view1, view2, compiled)

    def fused():
        shape = tf.image.extract_jpeg_shape(image)
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        params = [
            augment.sample_view_params(config, s, shape[0], shape[1])
            for config, s in zip((view1, view2), seeds)
        ]
        top = tf.minimum(params[0]["top"], params[1]["top"])
        left = tf.minimum(params[0]["left"], params[1]["left"])
        bottom = tf.maximum(*(p["top"] + p["crop_height"] for p in params))
        right = tf.maximum(*(p["left"] + p["crop_width"] for p in params))
        window = tf.stack([top, left, bottom - top, right - left])
        region = tf.io.decode_and_crop_jpeg(image, window, channels=3)
        views = {}
        for name, config, p in zip(("view1", "view2"), (view1, view2), params):
            shifted = {**p, "top": p["top"] - top, "left": p["left"] - left}
            views[name] = augment.apply_view(region, shifted, size, config, compiled)
        return views

    def generic():
        decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
        return augment.two_views(decoded, seed, size, view1, view2, compiled)

    return tf.cond(tf.io.is_jpeg(image), fused, generic)


def _eval_image(image, size):
    """Center crop 0.875 then resize for large outputs; a plain resize for small ones."""
    image = _decode(image)
    if size > _SMALL_IMAGE_MAX:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        side = tf.maximum(tf.cast(_EVAL_CENTER_CROP * tf.reduce_min(shape), tf.int32), 1)
        top = tf.cast((shape[0] - tf.cast(side, tf.float32)) / 2, tf.int32)
        left = tf.cast((shape[1] - tf.cast(side, tf.float32)) / 2, tf.int32)
        image = tf.image.crop_to_bounding_box(image, top, left, side, side)
    image = tf.image.resize(image, (size, size), method="bicubic")
    image = tf.clip_by_value(image, 0.0, 1.0)
    image.set_shape((size, size, 3))
    return image


def _device_source_image(image, size):
    """For augment_on="device": a fixed-size uint8 square (center crop, resize) per image."""
    image = _decode(image)
    shape = tf.shape(image)[:2]
    side = tf.reduce_min(shape)
    image = tf.image.crop_to_bounding_box(
        image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side
    )
    image = tf.image.resize(image, (size, size), method="bicubic")
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    image.set_shape((size, size, 3))
    return image


# ---------------------------------------------------------------------------- public
def pretrain_dataset(
    source,
    *,
    batch_size,
    image_size,
    split=None,
    shuffle_buffer=10_000,
    seed=0,
    augment_on="cpu",
    view1=augment.BYOL_VIEW1,
    view2=augment.BYOL_VIEW2,
    input_context=None,
    repeat=False,
    bad_files=None,
):
    """A tf.data pipeline of BYOL batches for `model.fit`.

    Args:
        source: a tensorflow-datasets name ("cifar10", "stl10" — unlabelled split by
            default —, "imagenette/160px-v2", "imagenet2012", any dataset with an "image"
            feature), a folder of jpg/png/bmp/gif/webp files (nested; labels from first-level
            subfolder names when every image is in one), an array of images (N, H, W[, C])
            uint8 or float in [0, 1], or an (images, labels) tuple.
        batch_size: batch size of this input pipeline (the global batch divided by the
            number of pipelines under a strategy). Incomplete last batches are dropped.
        image_size: output size S of the square views.
        split: tfds split (default "train"; "unlabelled" for stl10).
        shuffle_buffer: records permuted together for tensorflow-datasets sources, after
            their files are permuted (arrays and folders are permuted whole). Two blocks are
            held in memory.
        seed: seeds the order and every view. Each iteration (each Keras epoch) draws a new
            pass (order and views) from a sequence the seed fixes; with repeat=True this is
            `pretrain_stream`, whose batches are a function of their position. None: a
            random seed, and tensorflow-datasets files and array rows are read and made in
            whatever order finishes first (faster; not reproducible, cannot resume).
        augment_on: "cpu" — views made here in tf.data; "device" — batches carry
            {"images": (B, S', S', 3) uint8} with S' = round(S / 0.875), for a BYOL model
            with an `augmenter` (the random crop then works on that center square).
        view1, view2: `augment.ViewConfig`s of the two views.
        input_context: a `tf.distribute.InputContext` (from
            `strategy.distribute_datasets_from_function`): shards per input pipeline.
        repeat: repeat forever (then pass steps_per_epoch to fit).
        bad_files: for a folder, the `BadFiles` that counts and names skipped files (a new
            one by default); its warnings come once per pass.

    Returns:
        A batched, prefetched `tf.data.Dataset` of dicts (see the module docstring).
    """
    arguments = {name: value for name, value in locals().items() if name != "repeat"}
    if repeat:
        return pretrain_stream(**arguments)[0]
    one_pass, per_pass, _ = _pass_maker(**arguments, start_batch=0)
    pass_index = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    dataset = pass_index.flat_map(one_pass)
    if per_pass is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_pass))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _pass_maker(
    source,
    *,
    batch_size,
    image_size,
    split,
    shuffle_buffer,
    seed,
    augment_on,
    view1,
    view2,
    input_context,
    start_batch,
    bad_files=None,
):
    """(one_pass(pass_index) → that pass's batches, batches per pass or None, first pass)."""
    if augment_on not in ("cpu", "device"):
        raise ValueError(f'augment_on must be "cpu" or "device"; got {augment_on!r}.')
    if batch_size < 1 or image_size < 1:
        raise ValueError(
            f"batch_size and image_size must be positive; got {batch_size}, {image_size}."
        )
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        logger.info("Pretraining input with random seed %d, read in any order.", seed)
        deterministic = False
    else:
        deterministic = True
    source = source_from(source)
    columns = source.columns(input_context)
    tfds_files = records = None
    if columns is None:
        name, split = source.name, source.pretrain_split(split)
        tfds_files = tfds_records.split_files(name, split, input_context)
        if tfds_files is not None:
            examples = tfds_files.count
        else:
            logger.warning(
                "tfds split %s[%s] is not in TFRecord files on disk: each pass reads its "
                "files in the same order (only the order within blocks of shuffle_buffer "
                "examples changes from pass to pass).",
                name,
                split,
            )
            records = tfds_records.read_records(name, split, input_context)
            examples = int(records.cardinality())
    else:
        if "image" in columns[0]:
            _refuse_flat_images(columns[0]["image"])
        columns, examples = as_tensors(columns[0]), columns[1]
    if examples >= 0 and examples < batch_size:
        raise ValueError(
            f"The source has {examples} images, fewer than one batch of {batch_size}: "
            "lower batch_size."
        )
    per_pass = examples // batch_size if examples >= 0 else None
    first_pass, skipped = (start_batch // per_pass, start_batch % per_pass) if per_pass else (0, 0)
    if augment_on == "cpu":

        def example(record, view_seed):
            views = _views_from_record(_image_of(record), view_seed, image_size, view1, view2)
            return {**views, "label": record["label"]}
    else:
        source_size = _device_source_size(image_size)

        def example(record, view_seed):
            del view_seed  # the views are made on the device
            return {
                "images": _device_source_image(_image_of(record), source_size),
                "label": record["label"],
            }

    folder = columns is not None and "path" in columns
    bad_files = (bad_files or BadFiles()) if folder else None

    def shuffled(pass_key):
        """(order, this pass's records in its order): a uniform permutation `order` where the
        source allows random access, else (None, the tfds order permuted within blocks of
        `shuffle_buffer`)."""
        order_key = tf.random.experimental.stateless_fold_in(pass_key, 0)
        if columns is not None:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(examples, dtype=tf.int64), seed=order_key
            )
            return order, tf.data.Dataset.from_tensor_slices(order).map(
                lambda index: {name: tf.gather(values, index) for name, values in columns.items()}
            )

        def permute(block_index, block):
            key = tf.random.experimental.stateless_fold_in(order_key, block_index)
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(block["label"], out_type=tf.int64)[0]), seed=key
            )
            return {name: tf.gather(values, order) for name, values in block.items()}

        if tfds_files is not None:
            file_key = tf.random.experimental.stateless_fold_in(pass_key, 2)
            records_of_pass = tfds_files.read(file_key, deterministic)
        else:
            records_of_pass = records
        # The next block is read while this one is used (else each block stalls the stream).
        blocks = records_of_pass.batch(shuffle_buffer).enumerate().map(permute)
        return None, blocks.prefetch(1).unbatch()

    def one_pass(pass_index):
        pass_key = tf.stack([tf.cast(seed, tf.int64), pass_index])
        view_key = tf.random.experimental.stateless_fold_in(pass_key, 1)
        skip = tf.where(pass_index == first_pass, tf.constant(skipped * batch_size, tf.int64), 0)
        order, ordered = shuffled(pass_key)
        made = (
            ordered.enumerate()
            .skip(skip)
            .map(
                lambda i, r: (i, example(r, tf.random.experimental.stateless_fold_in(view_key, i))),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic or folder,  # a folder's skips follow positions
            )
        )
        if folder:
            paths = tf.gather(columns["path"], order)
            made = _skipping_bad_files(
                made, paths, skip, examples, bad_files, pass_index, fill=True
            )
        else:
            made = made.map(lambda i, e: e)
        return made.batch(batch_size, drop_remainder=True)

    return one_pass, per_pass, first_pass


def pretrain_stream(
    source,
    *,
    batch_size,
    image_size,
    split=None,
    shuffle_buffer=10_000,
    seed=0,
    augment_on="cpu",
    view1=augment.BYOL_VIEW1,
    view2=augment.BYOL_VIEW2,
    input_context=None,
    start_batch=0,
    passes=None,
    bad_files=None,
):
    """The pretraining batches as a deterministic stream that can start at any batch.

    Pass p over the source is ordered by stateless random permutations keyed by (`seed`,
    p) — a uniform permutation of all examples for arrays and folders; for
    tensorflow-datasets, a permutation of its record files (16 read in parallel, in turns of
    16 records) and then of each block of `shuffle_buffer` records — and the views of its
    i-th example use a stateless seed keyed by
    (seed, p, i). So the stream is a function of its position, not of an iterator's
    history or of TensorFlow's global seed. `start_batch=N` yields what batch N onwards
    of the stream from 0 would be, skipping the first N·B examples before anything is
    decoded (a folder's files are read after the skip; a tfds source reads and drops the
    records of the pass being resumed). Each pass drops its incomplete last batch. A folder's
    file that cannot be decoded is skipped and its place in the pass taken by a copy of the
    readable example before it (after it at the start of a pass), so positions (and
    resuming) stay exact.

    Args:
        source, batch_size, image_size, split, shuffle_buffer, seed, augment_on, view1,
            view2, input_context, bad_files: as in `pretrain_dataset`.
        start_batch: the stream's first batch (a resumed run: steps done × batches per step).
        passes: passes over the source to make (counted from 0); None = forever.

    Returns:
        (dataset, batches per pass, or None when the source's length is unknown).
    """
    if start_batch and seed is None:
        raise ValueError(
            "A stream resumed at a later batch needs the seed it started with; seed=None "
            "draws a new one."
        )
    arguments = {name: value for name, value in locals().items() if name != "passes"}
    one_pass, per_pass, first_pass = _pass_maker(**arguments)
    end = 2**62 if passes is None else passes  # 2**62 passes: forever
    stream = tf.data.Dataset.range(first_pass, end).flat_map(one_pass)
    if start_batch and per_pass is None:
        logger.warning(
            "The length of this source is unknown, so the stream cannot seek: making and "
            "dropping its first %d batches.",
            start_batch,
        )
        stream = stream.skip(start_batch)
    return stream.prefetch(tf.data.AUTOTUNE), per_pass


def labelled_train_dataset(
    source,
    *,
    batch_size,
    image_size,
    split="train",
    view=augment.LINEAR_EVAL_VIEW,
    shuffle_buffer=10_000,
    seed=0,
    subset=None,
    bad_files=None,
):
    """Shuffled (random view, label) batches for training a classifier (linear, fine-tune).

    Args:
        source: as in `pretrain_dataset`; it must have labels.
        view: the `augment.ViewConfig` of the training view (random resized crop + flip).
        shuffle_buffer: records shuffled together (a folder is permuted whole every epoch).
        subset: keep only the examples with these ids (a label subset; ids as
            `labelled_ids` gives them), or None for all.
        bad_files: for a folder, the `BadFiles` told of skipped files (a new one by default).

    Returns:
        A `tf.data.Dataset` of (float32 (B, S, S, 3) in [0, 1], int64 (B,)); the last,
        smaller batch is kept.
    """
    source = source_from(source)
    if source.kind == "folder":
        paths, labels = source.folder.paths, source.folder.labels
        if subset is not None:
            keep = np.isin(paths, np.asarray(subset, paths.dtype))
            paths, labels = paths[keep], labels[keep]
        count = len(labels)
        paths, labels = as_tensors({"path": paths, "label": labels}).values()
        bad_files = bad_files or BadFiles()

        def one_pass(pass_seed):
            key = tf.stack([tf.cast(seed, tf.int64), pass_seed])
            order = tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=tf.int64), seed=key
            )
            made = (
                tf.data.Dataset.from_tensor_slices(order)
                .enumerate()
                .map(
                    lambda i, index: (i, (
                        augment.one_view(
                            _decode_raw(tf.io.read_file(tf.gather(paths, index))),
                            tf.random.experimental.stateless_fold_in(key, i), image_size, view,
                        ),
                        tf.gather(labels, index),
                    )),
                    num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True,
                )
            )  # fmt: skip
            in_order = tf.gather(paths, order)
            return _skipping_bad_files(made, in_order, 0, count, bad_files, pass_seed)

        return (
            tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            .take(1)
            .flat_map(one_pass)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
    records = _records(source, split)
    if subset is not None:
        member = _member_of(subset)
        records = records.filter(lambda r: member(r["id"]))
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return (
        tf.data.Dataset.zip(records.shuffle(shuffle_buffer, seed=seed), seeds)
        .map(
            lambda r, s: (
                augment.one_view(_decode_raw(r["image"]), s, image_size, view),
                r["label"],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def _decode_raw(image):
    """Encoded bytes → (H, W, 3) uint8; decoded images pass through."""
    if image.dtype == tf.string:
        return tf.io.decode_image(image, channels=3, expand_animations=False)
    return image


def eval_dataset(
    source,
    *,
    batch_size,
    image_size,
    split=None,
    input_context=None,
    class_names=None,
    bad_files=None,
    ids=False,
):
    """(images, labels) batches for evaluation: center crop 0.875 (S > 64) or plain resize.

    Args:
        source: as in `pretrain_dataset`; it must have labels.
        batch_size: batch size; the last, smaller batch is kept.
        image_size: output size S.
        split: tfds split (default "test" for tfds names).
        class_names: for a folder, the training folder's classes
            (`folder_class_names(train_folder)`), so that a test folder missing a class
            keeps the training labels; a class not in the list is an error.
        bad_files: for a folder, the `BadFiles` told of skipped files (a new one by default).
        ids: also yield each example's id, as `labelled_ids` gives it (an array's row
            index counts within this input pipeline's shard).

    Returns:
        A `tf.data.Dataset` of (float32 (B, S, S, 3) in [0, 1], int64 (B,)[, ids (B,)]),
        in the source's order (tfds: its files' order; a folder's bad files left out).
    """
    source = source_from(source, class_names)
    columns = source.columns(input_context)
    if columns is None:
        records = tfds_records.read_records(source.name, split or "test", input_context, ids)
    else:
        (columns, count), bad_files = columns, bad_files or BadFiles()
        records = tf.data.Dataset.from_tensor_slices(columns)

    def id_of(position, record):
        if "path" in record:
            return record["path"]
        return record["id"] if "id" in record else position

    made = records.enumerate().map(
        lambda i, r: (i, (_eval_image(_image_of(r), image_size), r["label"], id_of(i, r))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if columns is not None and "path" in columns:
        first_pass = tf.constant(0, tf.int64)
        made = _skipping_bad_files(made, columns["path"], 0, count, bad_files, first_pass)
    else:
        made = made.map(lambda i, example: example)
    if not ids:
        made = made.map(lambda images, labels, example_ids: (images, labels))
    return made.batch(batch_size).prefetch(tf.data.AUTOTUNE)

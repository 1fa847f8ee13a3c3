"""tensorflow-datasets splits as tf.data records: the builder of a name (with the fix when
it is unknown or not prepared), its records in file order, and one input pipeline's
TFRecord files read pass by pass in a keyed order (`TfdsFiles`). Read by
`keras_byol.sources.TfdsSource` and the pipelines of `keras_byol.data`."""

import dataclasses
import difflib
import logging
import os

import numpy as np
import tensorflow as tf

logger = logging.getLogger("keras_byol")

# tfds files read at once, and records taken from each in turn (tfds' own defaults).
_TFDS_CYCLE_LENGTH, _TFDS_BLOCK_LENGTH = 16, 16


def tfds_builder(name):
    """The tensorflow-datasets builder called `name`, or a ValueError saying what to pass."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name)
    except Exception as error:  # tfds raises several types for unknown names
        # tfds appends the list of every data set it knows (hundreds of lines): cut it.
        text = str(error).split("Available datasets")[0].strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        close = difflib.get_close_matches(
            name.split("/")[0].split(":")[0], tfds.list_builders(), cutoff=0.75
        )
        hint = f" Close tfds names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Unknown tensorflow-datasets name {name!r} ({reason}), and there is no folder "
            f"{name!r} in {os.getcwd()!r}. Pass a folder path, a tfds name such as "
            f"'cifar10', or an array of images.{hint}"
        ) from None


def image_builder(name):
    """The builder of tfds data set `name`, which must have an "image" feature."""
    builder = tfds_builder(name)
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"tfds dataset {name!r} has no 'image' feature; it has {list(features)}.")
    return builder


def image_and_label(example, has_label):
    label = tf.cast(example["label"], tf.int64) if has_label else tf.constant(-1, tf.int64)
    return {"image": example["image"], "label": label}


def read_records(name, split, input_context=None, with_ids=False):
    """A dataset of {"image": encoded bytes, "label": int64[, "id": the tfds example id]}
    from tensorflow-datasets, read in its files' order."""
    import tensorflow_datasets as tfds

    builder = image_builder(name)
    try:
        records = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(input_context=input_context, add_tfds_id=with_ids),
        )
    except AssertionError as error:
        raise ValueError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir!r} and cannot be "
            "downloaded here. Prepare it once where there is network "
            f"(tfds.builder({name!r}).download_and_prepare()), then copy it or set "
            "TFDS_DATA_DIR to its folder."
        ) from error
    has_label = "label" in builder.info.features
    ids = (lambda example: {"id": example["tfds_id"]}) if with_ids else (lambda example: {})
    return records.map(lambda example: {**image_and_label(example, has_label), **ids(example)})


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsFiles:
    """One input pipeline's TFRecord files of a tfds split, read pass by pass in an order
    keyed by the pass (tfds' own file shuffle follows the iteration count, so a resumed
    stream would read its passes in other orders).

    Attributes:
        paths, skips, takes: (F,) the files and the records read in each (tfds' file
            instructions: a sliced split such as "train[:10%]" reads parts of files).
        count: examples this pipeline reads per pass.
        example_shard: (pipelines, index) when there are fewer files than input pipelines:
            every pipeline reads all files in their order and keeps every n-th record.
        features: the tfds features of "image" (and "label") that are parsed.
    """

    paths: np.ndarray
    skips: np.ndarray
    takes: np.ndarray
    count: int
    example_shard: tuple | None
    features: object

    def read(self, key, deterministic):
        """{"image": encoded bytes, "label": int64} records of one pass: the files in a
        stateless random order keyed by `key` (file order when sharding by example),
        `_TFDS_CYCLE_LENGTH` files read in parallel. deterministic=False lets the reads
        finish in any order (faster when some files are slow)."""
        import tensorflow_datasets as tfds

        files = tf.range(len(self.paths), dtype=tf.int64)
        if self.example_shard is None:
            files = tf.random.experimental.stateless_shuffle(files, seed=key)
        paths, skips, takes = as_tensors(
            {"paths": self.paths, "skips": self.skips, "takes": self.takes}
        ).values()
        records = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda i: tf.data.TFRecordDataset(paths[i]).skip(skips[i]).take(takes[i]),
            cycle_length=min(_TFDS_CYCLE_LENGTH, len(self.paths)),
            block_length=_TFDS_BLOCK_LENGTH,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic or self.example_shard is not None,
        )
        if self.example_shard is not None:
            records = records.shard(*self.example_shard)
        has_label = "label" in self.features
        decoders = {"image": tfds.decode.SkipDecoding()}
        return records.map(
            lambda serialized: image_and_label(
                self.features.deserialize_example(serialized, decoders=decoders), has_label
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )


def split_files(name, split, input_context):
    """`TfdsFiles` of this input pipeline, or None when the split is not in TFRecord files
    on disk (not prepared, another file format, or a mocked data set)."""
    import tensorflow_datasets as tfds

    builder = image_builder(name)
    info = builder.info
    if not builder.is_prepared():
        return None  # the tfds reader says how to prepare it
    instructions = info.splits[split].file_instructions  # ValueError naming the splits
    if (
        not instructions
        or info.file_format not in (None, tfds.core.FileFormat.TFRECORD)
        or not tf.io.gfile.exists(instructions[0].filename)
    ):
        return None
    pipelines, index = (
        (input_context.num_input_pipelines, input_context.input_pipeline_id)
        if input_context is not None
        else (1, 0)
    )
    example_shard = None
    if len(instructions) >= pipelines:
        instructions = instructions[index::pipelines]
        count = sum(f.take for f in instructions)
    else:
        example_shard = (pipelines, index)
        total = sum(f.take for f in instructions)
        count = len(range(index, total, pipelines))
        logger.info(
            "tfds split %s[%s] has %d files for %d input pipelines: each pipeline reads every "
            "file and keeps every %d-th example.",
            name, split, len(instructions), pipelines, pipelines,
        )  # fmt: skip
    keys = ["image"] + (["label"] if "label" in info.features else [])
    return TfdsFiles(
        paths=np.array([os.fspath(f.filename) for f in instructions]),
        skips=np.array([f.skip for f in instructions], np.int64),
        takes=np.array([f.take for f in instructions], np.int64),
        count=count,
        example_shard=example_shard,
        features=tfds.features.FeaturesDict({key: info.features[key] for key in keys}),
    )


def as_tensors(columns):
    """The columns as eager tensors: the pipeline's functions capture them by reference (a
    NumPy array would be copied into every function that uses it as a constant)."""
    return {name: tf.convert_to_tensor(values) for name, values in columns.items()}

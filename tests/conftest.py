"""Shared fixtures: tiny encoders and view batches (32×32, batch ≤ 8), fixed seeds, and one
finished run of the smoke job that the CLI tests copy instead of each training its own."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402


def tiny_encoder(image_size=16, channels=8, name="tiny", norm=layers.BatchNormalization):
    """Conv → BN → ReLU → GAP: (B, S, S, 3) → (B, channels); small enough for exact replays.

    `norm`: the BatchNorm class (keras_byol's FusedBatchNormalization for concat_views).
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Conv2D(channels, 3, padding="same", name="conv")(images)
    x = norm(momentum=0.9, epsilon=1e-5, name="bn")(x)
    x = layers.ReLU()(x)
    return keras.Model(images, layers.GlobalAveragePooling2D()(x), name=name)


def view_batches(num_images=24, image_size=16, seed=0):
    """Two float32 views in [0, 1], shape (num_images, S, S, 3) each."""
    rng = np.random.default_rng(seed)
    view1 = rng.random((num_images, image_size, image_size, 3), dtype=np.float32)
    view2 = np.clip(view1 + 0.1 * rng.standard_normal(view1.shape), 0, 1).astype("float32")
    return view1, view2


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


ROOT = Path(__file__).resolve().parents[1]
# The environment of the CLI subprocesses: the repository importable, no TF_CONFIG (a
# multi-worker test's setting must not reach a one-process run), TensorFlow's logs quiet.
SUBPROCESS_ENV = {
    **{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
    "PYTHONPATH": str(ROOT),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


@pytest.fixture(scope="session")
def _finished_smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "keras_byol.train", "--flagfile=configs/smoke.cfg",
         f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=SUBPROCESS_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


@pytest.fixture
def smoke_run(_finished_smoke_run, tmp_path):
    """(workdir, stdout): a copy, in tmp_path/"run", of one finished `python -m
    keras_byol.train --flagfile=configs/smoke.cfg` (6 steps, checkpoint, export, evaluation)
    trained once per pytest process; the stdout is that run's."""
    source, stdout = _finished_smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    return workdir, stdout

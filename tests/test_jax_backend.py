"""The shared tests on the JAX backend, and the JAX path without TensorFlow installed.

Keras fixes its backend per process, so these run pytest / Python in a subprocess with
KERAS_BACKEND=jax. Skipped only when jax itself is not installed.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_byol  # noqa: F401 (registers the saved model's classes)

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]
# The tests whose code differs by backend (the train step, BatchNorm's kernels, the view
# layers, the optimizer's stateless apply), run again on JAX, a subprocess per file so
# that the workers share them. Tests marked `one_backend` test code that does not differ.
SHARED_TESTS = [
    "tests/test_model.py",
    "tests/test_views.py",
    # the smaller files in one subprocess (each subprocess imports TensorFlow, Keras and JAX)
    "tests/test_accumulation.py tests/test_long_runs.py tests/test_normalization.py "
    "tests/test_optimizers.py",
]


def _run(args, **env):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", SHARED_TESTS, ids=["model", "views", "smaller_files"])
def test_shared_tests_pass_on_the_jax_backend(path):
    result = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not one_backend",
         *path.split()],
        KERAS_BACKEND="jax",
    )  # fmt: skip
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout and " failed" not in result.stdout, tail


# Prepended to the scripts below: any `import tensorflow` raises, as if it were not installed
# (a finder, not sys.modules["tensorflow"] = None: Keras' layers test that key's presence).
_NO_TENSORFLOW = """
import sys

class NoTensorFlow:  # as if TensorFlow were not installed ("tensorflow" not in sys.modules:
    def find_spec(self, name, path=None, target=None):  # Keras' layers look there)
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, NoTensorFlow())
"""

_WITHOUT_TENSORFLOW = (
    _NO_TENSORFLOW
    + """
import numpy as np, keras, keras_byol
assert keras.backend.backend() == "jax"
encoder = keras_byol.encoders.resnet("resnet18", input_shape=(16, 16, 3), small_images=True)
model = keras_byol.BYOL(encoder, projection_dim=16, hidden_dim=32)
model.compile(optimizer=keras_byol.optimizers.LARS(0.1, weight_decay=1e-6), steps_per_execution=2)
views = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
history = model.fit({"view1": views, "view2": views[::-1]}, batch_size=4, epochs=2, verbose=0)
assert np.all(np.isfinite(history.history["loss"])), history.history
assert int(model.optimizer.iterations) == 8
model.save(sys.argv[1])
restored = keras.models.load_model(sys.argv[1])
assert int(restored.optimizer.iterations) == 8
expected = np.asarray(model.encoder(views[:2]))
np.testing.assert_allclose(np.asarray(restored.encoder(views[:2])), expected, rtol=1e-5, atol=1e-5)
loaded = [name for name, module in sys.modules.items() if module and name.startswith("tensorflow")]
assert not loaded, loaded
print("ok")
"""
)


@pytest.mark.slow
def test_jax_path_trains_and_saves_without_tensorflow(tmp_path):
    result = _run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(tmp_path / "byol.keras")],
        KERAS_BACKEND="jax",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")


_VIEWS_WITHOUT_TENSORFLOW = (
    _NO_TENSORFLOW
    + """
import os
import numpy as np, keras, keras_byol
from PIL import Image
from keras_byol import views
from keras_byol.image_batches import ImageBatches
from keras_byol.schedules import CosineTargetDecay
folder, rng = sys.argv[1], np.random.default_rng(0)
for name in ("cats", "dogs"):
    os.makedirs(os.path.join(folder, name))
    for i in range(6):
        pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, name, f"{i}.png"))
batches = ImageBatches(folder, batch_size=4, image_size=16, seed=0)
first = batches[0]
assert len(batches) == 3 and first["images"].shape == (4, 18, 18, 3), first["images"].shape
assert first["images"].dtype == np.uint8 and batches.class_names == ["cats", "dogs"]
augmenter = views.TwoViewAugmenter(views.SMALL_IMAGE_VIEW1, views.SMALL_IMAGE_VIEW2, 16, seed=0)
encoder = keras_byol.encoders.resnet("resnet18", input_shape=(16, 16, 3), small_images=True)
model = keras_byol.BYOL(encoder, projection_dim=16, hidden_dim=32, num_classes=2,
                        augmenter=augmenter, target_decay=CosineTargetDecay(0.996, 6))
model.compile(optimizer=keras_byol.optimizers.LARS(0.1, weight_decay=1e-6))
history = model.fit(batches, epochs=2, verbose=0)
assert np.all(np.isfinite(history.history["loss"])), history.history
assert int(model.optimizer.iterations) == 6
loaded = [name for name, module in sys.modules.items() if module and name.startswith("tensorflow")]
assert not loaded, loaded
print("ok")
"""
)


@pytest.mark.slow
def test_views_on_the_device_from_a_folder_without_tensorflow(tmp_path):
    """Folder → ImageBatches (Pillow) → BYOL whose augmenter makes the views in the jitted
    step: the JAX path end to end with TensorFlow blocked."""
    result = _run(
        [sys.executable, "-c", _VIEWS_WITHOUT_TENSORFLOW, str(tmp_path / "images")],
        KERAS_BACKEND="jax",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")


_DATA_PARALLEL = """
import json, numpy as np, keras, jax, keras_byol
from keras_byol.callbacks import TargetUpdate
from keras_byol.normalization import FusedBatchNormalization
from tests.conftest import tiny_encoder, view_batches

view1, view2 = view_batches(32)

images = np.random.default_rng(1).integers(0, 256, (32, 20, 20, 3), dtype=np.uint8)

def train(distribution, concat_views=None, views_in_step=False):
    # concat_views None: Keras' BatchNormalization; True/False: keras_byol's, with that option.
    # views_in_step: uint8 images in, the views made in the step by a TwoViewAugmenter.
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    norm = keras.layers.BatchNormalization if concat_views is None else FusedBatchNormalization
    views = keras_byol.views
    augmenter = views.TwoViewAugmenter(views.SMALL_IMAGE_VIEW1, views.SMALL_IMAGE_VIEW2, 16,
                                       seed=0) if views_in_step else None
    model = keras_byol.BYOL(tiny_encoder(norm=norm), projection_dim=8, hidden_dim=16,
                            concat_views=bool(concat_views), augmenter=augmenter)
    model.compile(optimizer=keras.optimizers.SGD(0.5), steps_per_execution=2)
    initial = [np.array(v) for v in model.trainable_variables + model.target_weights]
    batches = {"images": images} if views_in_step else {"view1": view1, "view2": view2}
    history = model.fit(batches, batch_size=8, epochs=1, shuffle=False,
                        verbose=0, callbacks=[TargetUpdate(0.9, 4)])
    final = [np.array(v) for v in model.trainable_variables + model.target_weights]
    return model, history.history["loss"][0], initial, final

single, loss_single, start, end_single = train(None)
parallel, loss_parallel, start_parallel, end_parallel = train(keras.distribution.DataParallel())
# Both views in one pass on the sharded batch against a pass per view on one device.
_, loss_per_view, start_per_view, end_per_view = train(None, concat_views=False)
_, loss_concat, _, end_concat = train(keras.distribution.DataParallel(), concat_views=True)
# The views made in the step: drawn for the global batch, so the same on one device or two.
_, loss_views, start_views, end_views = train(None, views_in_step=True)
_, loss_views_parallel, _, end_views_parallel = train(keras.distribution.DataParallel(),
                                                      views_in_step=True)
def update(a, b, s):
    num = sum(np.sum((x - y) ** 2) for x, y in zip(a, b))
    return float(np.sqrt(num / sum(np.sum((y - z) ** 2) for y, z in zip(b, s))))
print(json.dumps({
    "devices": len(jax.devices()),
    "mesh_devices": int(parallel.trainable_variables[0].value.sharding.mesh.size),
    "same_start": max(float(np.max(np.abs(a - b))) for a, b in zip(start, start_parallel)),
    "loss_rel_err": abs(loss_parallel - loss_single) / loss_single,
    "update_rel_err": update(end_parallel, end_single, start),
    "steps": int(parallel.optimizer.iterations),
    "concat_loss_rel_err": abs(loss_concat - loss_per_view) / loss_per_view,
    "concat_update_rel_err": update(end_concat, end_per_view, start_per_view),
    "views_loss_rel_err": abs(loss_views_parallel - loss_views) / loss_views,
    "views_update_rel_err": update(end_views_parallel, end_views, start_views),
}))
"""


@pytest.mark.slow
def test_data_parallel_on_two_devices_equals_the_one_device_run():
    """keras.distribution.DataParallel over 2 CPU devices: the batch is split across them
    and BatchNorm statistics stay global (XLA computes them over the sharded batch), so 4
    steps give the one-device result; with both views in one pass (concat_views) too, and
    with the views made in the step from uint8 images (drawn for the global batch)."""
    result = _run(
        [sys.executable, "-c", _DATA_PARALLEL],
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(measured)
    assert measured["devices"] == 2 and measured["mesh_devices"] == 2
    assert measured["same_start"] == 0.0 and measured["steps"] == 4
    assert measured["loss_rel_err"] <= 1e-5
    assert measured["update_rel_err"] <= 1e-3
    # concat_views under DataParallel: per-view statistics over the sharded batch.
    assert measured["concat_loss_rel_err"] <= 1e-5
    assert measured["concat_update_rel_err"] <= 1e-3
    # The views made in the step from uint8 images: the same views and step on 2 devices.
    assert measured["views_loss_rel_err"] <= 1e-5
    assert measured["views_update_rel_err"] <= 1e-3


_GPU_BENCHMARK_SMOKE = (
    _NO_TENSORFLOW
    + """
import json, runpy  # the GPU machine has no TensorFlow
sys.argv = ["jax_step.py", "--arch", "resnet18", "--size", "16", "--batch", "2",
            "--dtype", "mixed_bfloat16", "--small-images", "--warmup", "1", "--steps", "1",
            "--concat-views", "--views", "device"]
runpy.run_path("benchmarks/jax_step.py", run_name="__main__")
"""
)


@pytest.mark.slow
def test_gpu_benchmark_step_runs_without_tensorflow():
    """benchmarks/jax_step.py (what benchmarks/gpu.sh runs) on a tiny model on the CPU, with
    both views in one pass, made in the step from uint8 images (the per-view path from
    precomputed views runs without TensorFlow in the test above)."""
    result = _run([sys.executable, "-c", _GPU_BENCHMARK_SMOKE], KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    step, share, views = lines
    assert step["what"] == "train_step" and step["dtype"] == "mixed_bfloat16"
    assert step["concat_views"] is True and step["views"] == "device"
    assert views["what"] == "views_share_of_step" and 0 < views["share"] < 1
    assert step["images_per_s"] > 0 and math.isfinite(step["loss"])
    assert 0 < share["share"] < 1 and share["ms_per_update"] > 0


@pytest.mark.slow
def test_the_job_exports_and_evaluates_on_jax(tmp_path):
    """`KERAS_BACKEND=jax python -m keras_byol.train` end to end: train, the SavedModel
    export (jax2tf inside), the job's evaluation, `keras_byol.evaluate` on the export under
    JAX; the export serves in TensorFlow what the saved encoder computes. (Resuming is the
    backend-free job code tested on TensorFlow; a saved model continuing on JAX is in the
    shared tests.)"""
    workdir = tmp_path / "run"
    job = [sys.executable, "-m", "keras_byol.train", "--flagfile=configs/smoke.cfg",
           f"--workdir={workdir}", "--eval_epochs=1"]  # fmt: skip
    trained = _run(job, KERAS_BACKEND="jax")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Done: 6 steps; encoder exported to" in trained.stdout
    assert json.loads((workdir / "encoder" / "keras_byol.json").read_text()) == {"step": 6}
    report = json.loads((workdir / "eval.json").read_text())
    assert report["step"] == 6 and 0.0 <= report["byol_knn20"] <= 1.0
    evaluated = _run(
        [sys.executable, "-m", "keras_byol.evaluate", f"--encoder={workdir / 'encoder'}",
         "--protocol=knn", "--k=5"],
        KERAS_BACKEND="jax",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    knn = json.loads((workdir / "eval.json").read_text())["knn"]
    assert knn["step"] == 6 and 0.0 <= knn["top1"] <= 1.0
    # The export written under JAX, served by TensorFlow, against the encoder of the saved
    # model loaded here (this process runs the TensorFlow backend).
    assert keras.backend.backend() == "tensorflow"
    served = tf.saved_model.load(str(workdir / "encoder"))
    model = keras.models.load_model(workdir / "byol.keras")
    x = np.random.default_rng(0).random((5, 16, 16, 3), dtype=np.float32)
    gap = np.abs(served.serve(x).numpy() - model.encoder(x, training=False).numpy()).max()
    result = {"gap": float(gap), "step": int(model.optimizer.iterations)}
    assert result["step"] == 6 and result["gap"] < 1e-5, result

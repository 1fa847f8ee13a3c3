"""Gradient accumulation (Keras' optimizer `gradient_accumulation_steps`) and the heads'
normalization choices: N batches of B/N accumulate into the step one batch of B takes when
nothing reads batch statistics; the Polyak update and τ follow applied steps only."""

import contextlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

import keras_byol
from keras_byol.heads import HEAD_NORMS, MLPHead
from keras_byol.schedules import AppliedSteps, WarmupCosine

from conftest import tiny_encoder, view_batches

ROOT = Path(__file__).resolve().parents[1]


def _batch_free_encoder():
    """Conv → ReLU → GAP: no batch statistics anywhere."""
    images = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.Conv2D(4, 3, padding="same", name="conv")(images))
    return keras.Model(images, layers.GlobalAveragePooling2D()(x))


def _run(
    accumulate, batch_size, images=16, optimizer="sgd", scope=contextlib.nullcontext, keep=None
):
    """(online weights, target weights, τ per batch, applied steps) after one epoch over
    `images` view pairs, SGD with momentum and decoupled weight decay (or LARS with its L2
    weight decay) and a warm-up cosine counted in applied steps; the model is built and
    compiled in `scope()` (a strategy's scope); the model is appended to the list `keep`."""
    keras.utils.set_random_seed(0)
    with scope():
        model = keras_byol.BYOL(
            _batch_free_encoder(), projection_dim=8, hidden_dim=16, head_norm="none"
        )
        schedule = WarmupCosine(0.5, 1, 4)
        extra = {}
        if accumulate > 1:
            schedule = AppliedSteps(schedule, accumulate)
            extra["gradient_accumulation_steps"] = accumulate
        if optimizer == "lars":
            model.compile(
                optimizer=keras_byol.optimizers.LARS(schedule, weight_decay=1e-4, **extra)
            )
        else:
            model.compile(
                optimizer=keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=1e-2, **extra)
            )
    view1, view2 = view_batches(images, image_size=8)
    taus = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: taus.append(float(logs["tau"]))
    )
    model.fit(
        {"view1": view1, "view2": view2},
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[record],
    )
    if keep is not None:
        keep.append(model)
    online = [np.array(v) for v in model.trainable_variables]
    target = [np.array(v) for v in model.target_weights]
    return online, target, taus, int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _relative(a, b):
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)) for x, y in zip(a, b))


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_accumulated_batches_take_the_step_of_one_larger_batch(optimizer):
    """2 batches of 4 accumulated = 1 batch of 8, twice: same online and target weights,
    τ of the same applied steps, 2 applied steps counted (≤ 1e-5 relative)."""
    online, target, taus, steps = _run(accumulate=2, batch_size=4, optimizer=optimizer)
    big_online, big_target, big_taus, big_steps = _run(1, batch_size=8, optimizer=optimizer)
    assert steps == big_steps == 2
    assert _relative(online, big_online) <= 1e-5
    assert _relative(target, big_target) <= 1e-5
    # τ of the step each batch contributes to (logged per batch): τ0, τ0, τ1, τ1.
    np.testing.assert_allclose(taus, np.repeat(big_taus, 2), rtol=1e-6)
    # Without accumulation the 4 batches of 4 are 4 different steps.
    small_online, *_ = _run(accumulate=1, batch_size=4, optimizer=optimizer)
    assert _relative(small_online, big_online) > 1e-3


def _batchnorm_run(scope=contextlib.nullcontext):
    """Accumulating 2 batches of 4 with a BatchNorm encoder, 16 view pairs: (whether the
    target moved after each batch, τ per batch, applied steps, τ's planned total)."""
    keras.utils.set_random_seed(0)
    with scope():
        model = keras_byol.BYOL(tiny_encoder(8), projection_dim=8, hidden_dim=16)
        model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2))
    view1, view2 = view_batches(16, image_size=8)
    targets, taus = [[np.array(v) for v in model.target_weights]], []

    def record(batch, logs):
        targets.append([np.array(v) for v in model.target_weights])
        taus.append(float(logs["tau"]))

    model.fit(
        {"view1": view1, "view2": view2},
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=record)],
    )
    moved = [_relative(after, before) > 0 for before, after in zip(targets, targets[1:])]
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return moved, taus, steps, model.target_decay.total_steps


def assert_the_target_follows_applied_steps(moved, taus, steps, total_steps):
    assert moved == [False, True, False, True]
    assert steps == 2
    assert total_steps == 2  # planned in applied steps: 4 batches ÷ 2
    assert taus[0] == taus[1] and taus[2] == taus[3] and taus[2] > taus[0]


def test_the_target_moves_only_on_applied_steps_with_batchnorm():
    """With BatchNorm each batch keeps its own statistics (not one larger batch); still the
    target stays put on the batch that only accumulates, and τ counts applied steps."""
    assert_the_target_follows_applied_steps(*_batchnorm_run())


def test_an_unwrapped_learning_rate_schedule_is_named_with_the_fix():
    model = keras_byol.BYOL(_batch_free_encoder(), projection_dim=8, hidden_dim=16)
    view1, view2 = view_batches(8, image_size=8)
    data = {"view1": view1, "view2": view2}
    model.compile(
        optimizer=keras.optimizers.SGD(WarmupCosine(0.1, 1, 4), gradient_accumulation_steps=2)
    )
    with pytest.warns(UserWarning, match=r"AppliedSteps\(schedule, 2\)"):
        model.fit(data, batch_size=4, epochs=1, verbose=0)
    mismatched = AppliedSteps(WarmupCosine(0.1, 1, 4), 4)  # counts every 4th batch, not 2nd
    model.compile(optimizer=keras.optimizers.SGD(mismatched, gradient_accumulation_steps=2))
    with pytest.warns(UserWarning, match=r"every 4 batch.*AppliedSteps\(schedule, 2\)"):
        model.fit(data, batch_size=4, epochs=1, verbose=0)
    wrapped = AppliedSteps(WarmupCosine(0.1, 1, 4), 2)
    model.compile(optimizer=keras.optimizers.SGD(wrapped, gradient_accumulation_steps=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model.fit(data, batch_size=4, epochs=1, verbose=0)
    # (This one step's warm-up rate is 0, which LearningRateCheck rightly says.)
    assert not [w for w in caught if "accumulates gradients" in str(w.message)]
    restored = AppliedSteps.from_config(json.loads(json.dumps(wrapped.get_config())))
    for step in (0, 1, 2, 5, 7):
        assert float(restored(step)) == float(WarmupCosine(0.1, 1, 4)(step // 2))


@pytest.mark.parametrize("norm", HEAD_NORMS)
def test_each_head_normalization_trains_and_round_trips(norm, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_byol.BYOL(tiny_encoder(8), projection_dim=8, hidden_dim=64, head_norm=norm)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    view1, view2 = view_batches(8, image_size=8)
    history = model.fit({"view1": view1, "view2": view2}, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.projector.norm_kind == loaded.predictor.norm_kind == norm
    features = np.asarray(model.projector(np.ones((2, 8), "float32")))
    np.testing.assert_allclose(np.asarray(loaded.projector(np.ones((2, 8), "float32"))), features)


@pytest.mark.parametrize("norm", ["layer", "group", "none"])
def test_batch_free_heads_treat_each_example_alone_in_training(norm):
    """In training mode, an example's output does not depend on the rest of its batch."""
    keras.utils.set_random_seed(0)
    head = MLPHead(64, 8, norm=norm)
    inputs = np.random.default_rng(0).standard_normal((8, 16)).astype("float32")
    together = np.asarray(head(inputs, training=True))
    alone = np.concatenate([np.asarray(head(inputs[i : i + 1], training=True)) for i in range(8)])
    # (One row or eight through a matmul: oneDNN's kernels round differently, ~2e-6.)
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
    if norm != "batch":
        batch_head = MLPHead(64, 8, norm="batch")
        together = np.asarray(batch_head(inputs, training=True))
        first = np.asarray(batch_head(inputs[:2], training=True))
        assert not np.allclose(first, together[:2], atol=1e-3)  # BN reads the batch


def test_a_head_normalization_outside_the_choices_is_refused():
    with pytest.raises(ValueError, match="norm must be one of"):
        MLPHead(32, 8, norm="instance")
    with pytest.raises(ValueError, match="multiple of 32"):
        MLPHead(48, 8, norm="group")
    with pytest.raises(ValueError, match="normalizes to a constant"):
        MLPHead(32, 8, norm="group")  # groups of one unit: a constant output


_MIRRORED = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, keras_byol
from tests.conftest import tiny_encoder, view_batches
from tests.test_accumulation import _batchnorm_run, _relative, _run
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"replicas": strategy.num_replicas_in_sync}
for optimizer in ("sgd", "lars"):
    models = []
    online, target, taus, steps = _run(2, 4, optimizer=optimizer, scope=strategy.scope,
                                       keep=models)
    # Each replica holds its own copy of every variable: they must not drift apart.
    copies = [v.value.values for v in models[0].variables]
    replicas_differ = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in copies)
    big_online, big_target, big_taus, big_steps = _run(1, 8, optimizer=optimizer)
    result[optimizer] = {"steps": [steps, big_steps], "online": _relative(online, big_online),
                         "target": _relative(target, big_target), "taus": taus,
                         "big_taus": big_taus, "replicas_differ": replicas_differ}
result["batchnorm"] = _batchnorm_run(strategy.scope)
with strategy.scope():
    clipped = keras_byol.BYOL(tiny_encoder(8), projection_dim=8, hidden_dim=16)
    clipped.compile(
        optimizer=keras.optimizers.SGD(0.1, clipnorm=1.0, gradient_accumulation_steps=2))
view1, view2 = view_batches(8, image_size=8)
try:
    clipped.fit({"view1": view1, "view2": view2}, batch_size=4, epochs=1, verbose=0)
except ValueError as error:
    result["clipnorm"] = str(error)
print(json.dumps(result))
"""

_DATA_PARALLEL = """
import json, numpy as np, jax, keras, keras_byol
from tests.test_accumulation import _relative, _run
online, target, taus, steps = _run(accumulate=2, batch_size=4, images=16)
keras.distribution.set_distribution(keras.distribution.DataParallel())
parallel_online, parallel_target, parallel_taus, parallel_steps = _run(2, 4, images=16)
keras.distribution.set_distribution(None)
big_online, big_target, _, _ = _run(accumulate=1, batch_size=8, images=16)
print(json.dumps({"devices": len(jax.devices()), "steps": [steps, parallel_steps],
                  "online": _relative(parallel_online, big_online),
                  "target": _relative(parallel_target, big_target),
                  "vs_one_device": _relative(parallel_online, online)}))
"""


def _subprocess(script, *arguments, **env):
    """Python running `script` (or, when None, `arguments`) from the repository root."""
    return subprocess.run(
        [sys.executable, *(["-c", script] if script is not None else arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "TF_CPP_MIN_LOG_LEVEL": "2",
             **env},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_accumulation_under_mirrored_strategy_equals_one_larger_batch():
    """MirroredStrategy over 2 logical CPUs (merge_call: Keras' own accumulation cannot run
    there): 2 accumulated global batches of 4 (2 per replica) take the step of one batch of 8
    on one device for SGD with decoupled weight decay and for LARS (≤ 1e-5 relative), with
    the τ of the same applied steps; with BatchNorm the target moves on applied steps only
    and τ counts them; what the cross-replica path leaves out (clipnorm) is refused."""
    result = _subprocess(_MIRRORED)
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["replicas"] == 2
    for optimizer in ("sgd", "lars"):
        run = measured[optimizer]
        assert run["steps"] == [2, 2], optimizer
        assert run["online"] <= 1e-5 and run["target"] <= 1e-5, (optimizer, run)
        assert run["replicas_differ"] == 0, (optimizer, run)
        np.testing.assert_allclose(run["taus"], np.repeat(run["big_taus"], 2), rtol=1e-6)
    assert_the_target_follows_applied_steps(*measured["batchnorm"])
    assert "without clipnorm" in measured["clipnorm"] and "DataParallel" in measured["clipnorm"]


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs JAX itself")
def test_accumulation_under_jax_data_parallel_equals_one_larger_batch():
    """KERAS_BACKEND=jax, DataParallel over 2 CPU devices: 2 accumulated batches of 4 (2
    per device) = one device with batches of 8 (≤ 1e-5 relative)."""
    result = _subprocess(
        _DATA_PARALLEL, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["devices"] == 2 and measured["steps"] == [2, 2]
    assert measured["online"] <= 1e-5 and measured["target"] <= 1e-5, measured


def test_a_checkpoint_is_not_written_inside_an_accumulation_window(tmp_path):
    """A resumed run reads on from the last applied step: a checkpoint holding a partial
    gradient sum would count those batches twice, so it waits for the window to close."""
    from keras_byol.callbacks import AtomicCheckpoint

    model = keras_byol.BYOL(
        tiny_encoder(8), projection_dim=8, hidden_dim=16,
        target_decay=keras_byol.schedules.CosineTargetDecay(0.99, 10),
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2))
    view1, view2 = view_batches(4, image_size=8)
    checkpoint = AtomicCheckpoint(str(tmp_path / "checkpoint" / "byol.keras"))
    checkpoint.set_model(model)
    model.train_on_batch({"view1": view1, "view2": view2})
    assert not checkpoint.save() and not (tmp_path / "checkpoint").exists()
    model.train_on_batch({"view1": view1, "view2": view2})
    assert checkpoint.save() and checkpoint.saved_step == 1


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs the CLI")
def test_the_job_accumulates_and_plans_its_schedules_in_optimizer_steps(tmp_path):
    """--accumulation_steps=2, 2 epochs of 4 batches: 4 optimizer steps, τ and the learning
    rate planned over them, the peak rate scaled by the effective batch; a run extended
    from its checkpoint resumes at a whole step and reads on from batch 8."""
    common = ["--flagfile=configs/smoke.cfg", "--steps_per_epoch=4", "--accumulation_steps=2"]
    common += ["--noevaluate", f"--workdir={tmp_path / 'run'}"]
    done = _subprocess(None, "-m", "keras_byol.train", *common, "--epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    model = keras.models.load_model(tmp_path / "run" / "byol.keras")
    assert int(model.optimizer.iterations) == 4
    assert model.optimizer.gradient_accumulation_steps == 2
    assert model.target_decay.get_config()["total_steps"] == 4
    schedule = model.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "AppliedSteps"
    inner = schedule["config"]["accumulation_steps"], schedule["config"]["schedule"]["config"]
    assert inner[0] == 2 and (inner[1]["warmup_steps"], inner[1]["total_steps"]) == (2, 4)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    peak = 0.2 * saved["batch_size"] * 2 / 256  # LARS base 0.2 × effective batch / 256
    assert inner[1]["peak_learning_rate"] == pytest.approx(peak)
    longer = _subprocess(None, "-m", "keras_byol.train", *common, "--epochs=3")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "at step 4." in longer.stdout and "end at step 6" in longer.stdout
    assert int(keras.models.load_model(tmp_path / "run" / "byol.keras").optimizer.iterations) == 6

"""The training job: configs, CLI end to end, resume after kill -9, export, bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_byol import callbacks, experiment, normalization
from keras_byol import config as config_module
from tests.conftest import SUBPROCESS_ENV, view_batches
from tests.test_normalization_choices import assert_each_example_computed_alone

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.cfg"))
ENV = SUBPROCESS_ENV


def _train(*flags, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "keras_byol.train", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


def _parse(flagfile):
    """The PretrainConfig of a flagfile, parsed from the repository root (nested
    --flagfile paths are relative to it) with the working directory restored after."""
    from keras_byol import train

    cwd = os.getcwd()
    os.chdir(ROOT)
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", f"--flagfile={flagfile}"])
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()
        os.chdir(cwd)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses_and_documents_itself(path):
    text = path.read_text()
    if path.name != "imagenet_base.cfg":  # the shared base is not a recipe of its own
        for heading in ("# Command:", "# Hardware:", "# Time:", "# Result:"):
            assert heading in text, f"{path.name} lacks {heading}"
    assert isinstance(_parse(path), config_module.PretrainConfig)


def test_presets_carry_the_official_values():
    c1000 = _parse(ROOT / "configs" / "imagenet_resnet50_1000ep.cfg")
    assert (
        c1000.epochs,
        c1000.base_learning_rate,
        c1000.effective_weight_decay,
        c1000.base_tau,
    ) == (1000, 0.2, 1.5e-6, 0.996)
    assert c1000.peak_learning_rate == pytest.approx(0.2 * 4096 / 256)
    c300 = _parse(ROOT / "configs" / "imagenet_resnet50_300ep.cfg")
    assert (c300.base_learning_rate, c300.base_tau, c300.batch_size) == (0.3, 0.99, 4096)
    gn = _parse(ROOT / "configs" / "imagenet_resnet50_groupnorm_ws.cfg")
    assert (gn.encoder_norm, gn.head_norm, gn.epochs) == ("group_ws", "group", 1000)
    quick = _parse(ROOT / "configs" / "imagenette_resnet18.cfg")
    assert (
        quick.image_size,
        quick.batch_size,
        quick.base_learning_rate,
        quick.effective_weight_decay,
    ) == (128, 256, 2.0, 1e-6)
    assert c1000.lars_eta == quick.lars_eta == 1e-3  # the paper's trust coefficient
    cifar = _parse(ROOT / "configs" / "cifar10_resnet18.cfg")
    assert (cifar.base_learning_rate, cifar.effective_weight_decay, cifar.lars_eta) == (
        1.0,
        1e-5,
        0.02,
    )


def test_presets_initialize_the_heads_as_measured():
    """ImageNet-size presets keep the official (Haiku) heads; the small-image recipes take
    PyTorch's, the best measured on real digits (benchmarks/RESULTS.md)."""
    official = ["imagenette_resnet18.cfg", "imagenet_resnet50_groupnorm_ws.cfg"]
    official += [f"imagenet_resnet50_{n}ep.cfg" for n in (100, 300, 1000)]
    for name in official:
        assert _parse(ROOT / "configs" / name).head_init == "haiku", name
    for name in ("default.cfg", "cifar10_resnet18.cfg", "smoke.cfg"):
        assert _parse(ROOT / "configs" / name).head_init == "pytorch", name
    assert config_module.PretrainConfig().head_init == "pytorch"  # the job with no flags


@pytest.mark.slow
def test_the_batch_free_preset_reads_no_batch_statistics():
    """configs/imagenet_resnet50_groupnorm_ws.cfg as the job builds it (at 32 px, ⅛ width):
    no layer of the online or target networks reads the batch, and in training mode each
    example's outputs are the same in a batch of 8 as alone."""
    small = {"image_size": 32, "width": 0.125, "hidden_dim": 64, "projection_dim": 16}
    preset = _parse(ROOT / "configs" / "imagenet_resnet50_groupnorm_ws.cfg")
    model = experiment.build_model(dataclasses.replace(preset, **small), steps_per_epoch=10)
    networks = (model.encoder, model.projector, model.predictor)
    targets = (model.target_encoder, model.target_projector)
    assert normalization.layers_reading_batch_statistics(*networks, *targets) == []
    view1, view2 = view_batches(8, image_size=32)
    assert_each_example_computed_alone(model, view1, view2)
    vanilla = _parse(ROOT / "configs" / "imagenet_resnet50_1000ep.cfg")
    model = experiment.build_model(dataclasses.replace(vanilla, **small), steps_per_epoch=10)
    assert normalization.layers_reading_batch_statistics(model.encoder, model.projector)


def test_norm_flag_and_old_run_records_still_name_the_encoder_normalization(tmp_path):
    flagfile = tmp_path / "old.cfg"
    flagfile.write_text("--flagfile=configs/smoke.cfg\n--norm=group_ws\n--head_norm=layer\n")
    parsed = _parse(flagfile)
    assert (parsed.encoder_norm, parsed.head_norm) == ("group_ws", "layer")
    # config.json of a run written before head_norm existed: its encoder keeps "norm".
    old = config_module.PretrainConfig.from_dict({"norm": "group_ws", "epochs": 3})
    assert (old.encoder_norm, old.head_norm, old.epochs) == ("group_ws", "batch", 3)


def test_config_rules_name_the_offending_values():
    with pytest.raises(ValueError, match="optimizer"):
        config_module.PretrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="warmup_epochs"):
        config_module.PretrainConfig(epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match="lars_eta"):
        config_module.PretrainConfig(lars_eta=0.0)
    with pytest.raises(ValueError, match="remat and concat_views exclude each other"):
        config_module.PretrainConfig(remat=True, concat_views=True)
    assert experiment.build_model(
        config_module.PretrainConfig(image_size=16, hidden_dim=64, remat=True), 3
    ).remat
    with pytest.raises(ValueError, match="adamw"):
        config_module.PretrainConfig(optimizer="adamw", learning_rate=0.2)
    assert config_module.PretrainConfig(optimizer="adamw").peak_learning_rate == 1e-3
    assert config_module.PretrainConfig(optimizer="sgd", batch_size=512).peak_learning_rate == 0.1


@pytest.mark.slow
def test_cli_end_to_end_on_smoke_config_then_rerun_resumes(smoke_run):
    workdir, stdout = smoke_run  # python -m keras_byol.train --flagfile=configs/smoke.cfg
    assert "epoch 2: loss" in stdout and "tau" in stdout and "projection_std" in stdout
    assert "probe_accuracy" in stdout  # the bundled digits have labels
    assert "Linear protocol (center-crop features) / 20-NN accuracy" in stdout
    for name in (
        "config.json",
        "byol.keras",
        "checkpoint/byol.keras",
        "encoder/saved_model.pb",
        "eval.json",
    ):
        assert (workdir / name).exists(), name
    assert list((workdir / "logs").rglob("events.out.tfevents.*"))
    scores = json.loads((workdir / "eval.json").read_text())
    assert set(scores) >= {
        "byol_linear_center_crop", "byol_knn20", "random_linear_center_crop", "random_knn20"
    }  # fmt: skip
    assert not list(workdir.rglob("*.tmp*"))
    again = _train("--flagfile=configs/smoke.cfg", f"--workdir={workdir}", "--noevaluate")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from" in again.stdout and "at step 6" in again.stdout
    assert "epoch 1: loss" not in again.stdout  # nothing retrained


def _epoch_values(stdout, epoch):
    """(τ, learning rate) of the job's line for `epoch` (1-based)."""
    line = next(text for text in stdout.splitlines() if text.startswith(f"epoch {epoch}: loss"))
    return float(line.split(" tau ")[1].split()[0]), float(line.split(" lr ")[1].split()[0])


def _tau(k, base, total):
    return 1 - (1 - base) * (np.cos(np.pi * min(k, total) / total) + 1) / 2


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_after_kill_9_between_step_checkpoints_matches_an_uninterrupted_run(tmp_path):
    """Killed (SIGSTOP as soon as a step checkpoint lands, then SIGKILL) mid-epoch: the rerun
    resumes at the checkpointed step, finishes that epoch, and ends with the step count and
    schedules of an uninterrupted run (3 epochs × 5 steps, a checkpoint every 2 steps)."""
    common = ["--flagfile=configs/smoke.cfg", "--epochs=3", "--steps_per_epoch=5"]
    flags = [*common, "--checkpoint_every_steps=2", "--noevaluate"]
    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_byol.train", *flags, f"--workdir={workdir}"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = workdir / "checkpoint" / "byol.keras"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGSTOP)  # freeze it where it is, then read the checkpoint
    assert checkpoint.exists(), "no checkpoint was written"
    steps_at_kill = int(keras.models.load_model(checkpoint).optimizer.iterations)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert steps_at_kill % 2 == 0 and 0 < steps_at_kill < 15
    assert steps_at_kill % 5, "the first step checkpoint should land inside an epoch"
    resumed = _train(*flags, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {checkpoint} at step {steps_at_kill}." in resumed.stdout
    uninterrupted = _train(*common, "--noevaluate", f"--workdir={tmp_path / 'whole'}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    finals = [keras.models.load_model(tmp_path / d / "byol.keras") for d in ("killed", "whole")]
    for final in finals:
        assert int(final.optimizer.iterations) == 15  # none repeated, none lost
        assert final.target_decay.get_config() == {"base_tau": 0.99, "total_steps": 15}
        schedule = final.optimizer.get_config()["learning_rate"]["config"]
        assert (schedule["warmup_steps"], schedule["total_steps"]) == (5, 15)
    # The cut epoch is finished first; then every epoch logs the schedules' values of an
    # uninterrupted run at the same step.
    first_epoch = steps_at_kill // 5 + 1
    assert f"epoch {first_epoch}: loss" in resumed.stdout
    # Said as what it is: the rest of epoch e of 3 (Keras' own line would be "Epoch e/e").
    assert f"Finishing epoch {first_epoch}/3 from its batch {steps_at_kill % 5} of 5." in (
        resumed.stdout
    )
    assert f"Epoch {first_epoch}/{first_epoch}\n" not in resumed.stdout or first_epoch == 3
    for epoch in range(first_epoch, 4):
        assert _epoch_values(resumed.stdout, epoch) == _epoch_values(uninterrupted.stdout, epoch)
        assert _epoch_values(resumed.stdout, epoch)[0] == pytest.approx(
            _tau(epoch * 5 - 1, 0.99, 15), abs=1e-5
        )


@pytest.mark.slow
def test_extending_a_finished_run_trains_the_new_epochs_with_replanned_schedules(smoke_run):
    workdir, _ = smoke_run
    # As if an older keras_byol, whose --views=small was other views, had started the run.
    record = json.loads((workdir / "config.json").read_text())
    assert record["view_configs"]["view1"]["brightness_mode"] == "multiplicative"
    record["view_configs"]["view1"]["brightness_mode"] = "additive"
    (workdir / "config.json").write_text(json.dumps(record))
    longer = _train(
        "--flagfile=configs/smoke.cfg", f"--workdir={workdir}", "--noevaluate", "--epochs=4"
    )
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "Resuming from" in longer.stdout and "at step 6." in longer.stdout
    assert "Re-planned (epochs 2 → 4)" in longer.stdout and "end at step 12" in longer.stdout
    assert (
        "Warning: --views=small now differs from the views this run started with (1 field: "
        "view1.brightness_mode 'additive' → 'multiplicative')" in longer.stdout
    )
    assert "epoch 1: loss" not in longer.stdout and "epoch 4: loss" in longer.stdout
    tau3, lr3 = _epoch_values(longer.stdout, 3)
    assert lr3 > 0  # the old schedule ended at step 6 with a learning rate of 0
    assert tau3 == pytest.approx(_tau(8, 0.99, 12), abs=1e-5)  # τ continues on K = 12
    assert _epoch_values(longer.stdout, 4)[0] == pytest.approx(_tau(11, 0.99, 12), abs=1e-5)
    final = keras.models.load_model(workdir / "byol.keras")
    assert int(final.optimizer.iterations) == 12
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["epochs"] == 4 and saved["data_steps_per_epoch"] == 3
    assert saved["resume_history"] == [{"at_step": 6, "changes": {"epochs": [2, 4]}}]
    assert saved["view_configs"]["view1"]["brightness_mode"] == "multiplicative"


def test_a_resumed_record_without_its_views_is_warned_about_only_where_the_preset_changed():
    from keras_byol import experiment

    small, paper = config_module.PretrainConfig(), config_module.PretrainConfig(views="byol")
    assert "does not list its views" in experiment._views_changed_message(small, {})
    assert experiment._views_changed_message(paper, {}) is None
    same = {"view_configs": experiment._view_record(small)}
    assert experiment._views_changed_message(small, same) is None


@pytest.mark.slow
def test_a_change_a_resume_cannot_honour_is_refused_and_the_workdir_is_untouched(smoke_run):
    workdir, _ = smoke_run
    before = _files(workdir)
    result = _train(
        "--flagfile=configs/smoke.cfg",
        f"--workdir={workdir}",
        "--batch_size=16",
        "--optimizer=sgd",
        "--width=0.5",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for field in ("batch_size: 16 here vs 32 saved", "optimizer: 'sgd'", "width: 0.5"):
        assert field in result.stderr, field
    assert "Nothing in the workdir was changed" in result.stderr
    assert _files(workdir) == before


_RELOAD = """
import sys, numpy as np, tensorflow as tf
assert "keras_byol" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out_float = loaded.serve(tf.constant(images.astype(np.float32) / 255.0)).numpy()
out_uint8 = loaded.serve_uint8(tf.constant(images)).numpy()
np.save(sys.argv[3], np.stack([out_float, out_uint8]))
assert "serving_default" in loaded.signatures
"""


@pytest.mark.slow
def test_exported_encoder_reloads_without_keras_byol(smoke_run, tmp_path):
    workdir, _ = smoke_run
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    reload = subprocess.run(
        [
            sys.executable,
            "-c",
            _RELOAD,
            str(workdir / "encoder"),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**ENV, "PYTHONPATH": ""},
        cwd=tmp_path,
    )
    assert reload.returncode == 0, reload.stderr[-3000:]
    out_float, out_uint8 = np.load(tmp_path / "out.npy")
    model = keras.models.load_model(workdir / "byol.keras")
    expected = np.asarray(model.encoder(images.astype(np.float32) / 255.0, training=False))
    assert out_float.shape == (5, 128)  # resnet18 at width 0.25: 512 × 0.25
    np.testing.assert_allclose(out_float, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_uint8, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
        (["--dataset=no_such_dataset_xyz"], "Unknown tensorflow-datasets name"),
        (["--dataset=/no/such/folder"], "does not exist"),
        (["--dataset=mnist"], "not prepared"),
        (["--optimizer=adamw", "--learning_rate=2.0"], "adamw"),
        (["--optimizer=sgd", "--learning_rate=1e30"], "Training diverged at optimizer step"),
        (["--strategy=mirrored", "--logical_cpus=2", "--batch_size=31"], "does not split evenly"),
        (["--strategy=multi_worker"], "needs a valid TF_CONFIG"),
        (["--strategy=tpu", "--tpu=grpc://127.0.0.1:1"], "no TPU at grpc://127.0.0.1:1"),
        (["--steps_per_execution=2"], "not a multiple of steps_per_execution=2"),
    ],
)
def test_bad_input_exits_with_a_message(tmp_path, flags, message):
    result = _train("--flagfile=configs/smoke.cfg", f"--workdir={tmp_path / 'run'}", *flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """The real guard and checkpoint callbacks in a real fit: a learning rate that blows up
    the weights stops training at the first NaN loss; the checkpoint stays as it was."""
    import keras_byol

    from conftest import tiny_encoder

    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    good = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    path = str(tmp_path / "checkpoint" / "byol.keras")
    guard = callbacks.DivergenceGuard()
    checkpoint = callbacks.AtomicCheckpoint(path, 1, guard=guard)
    model.fit(
        {"view1": good, "view2": good},
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[guard, checkpoint],
    )
    saved = Path(path).read_bytes()
    model.optimizer.learning_rate.assign(1e30)
    model.fit(
        {"view1": good, "view2": good},
        batch_size=4,
        epochs=5,
        verbose=0,
        callbacks=[guard, checkpoint],
    )
    assert guard.diverged_at_step is not None and np.isfinite(guard.last_finite_loss)
    assert int(model.optimizer.iterations) == guard.diverged_at_step < 12  # stopped early
    assert Path(path).read_bytes() == saved


@pytest.mark.slow
def test_cli_runs_under_mirrored_strategy_on_logical_cpus_with_accumulation(tmp_path):
    workdir = tmp_path / "run"
    result = _train(
        "--flagfile=configs/smoke.cfg",
        f"--workdir={workdir}",
        "--strategy=mirrored",
        "--logical_cpus=2",
        "--eval_epochs=1",
        "--concat_views",
        "--steps_per_epoch=4",
        "--accumulation_steps=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 2 epochs × 4 batches, 2 batches per optimizer step.
    assert "epoch 2: loss" in result.stdout and "Done: 4 steps" in result.stdout
    assert (workdir / "encoder" / "saved_model.pb").exists()
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["strategy"] == "mirrored" and saved["sync_batchnorm"] is True
    assert saved["concat_views"] is True and saved["accumulation_steps"] == 2


def test_build_model_passes_the_lars_trust_coefficient():
    from keras_byol import experiment

    config = config_module.PretrainConfig(image_size=16, projection_dim=8, hidden_dim=16)
    for eta in (1e-3, 0.02):
        model = experiment.build_model(dataclasses.replace(config, lars_eta=eta), 3)
        assert model.optimizer.eta == eta
    assert experiment.build_model(dataclasses.replace(config, concat_views=True), 3).concat_views


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_sgd_and_adamw_decay_no_bias_or_normalization_parameter(optimizer):
    """One update with zero gradients: only the weight decay moves the variables."""
    config = config_module.PretrainConfig(
        image_size=16,
        projection_dim=8,
        hidden_dim=16,
        optimizer=optimizer,
        weight_decay=0.5,
        warmup_epochs=0,
    )
    model = experiment.build_model(config, 3)
    variables = model.trainable_variables
    before = [np.array(v) for v in variables]
    model.optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
    for variable, old in zip(variables, before):
        decayed = not np.allclose(np.asarray(variable), old)
        assert decayed == (len(old.shape) > 1), variable.path
    assert any(len(old.shape) <= 1 and np.any(old) for old in before)  # e.g. BN γ = 1

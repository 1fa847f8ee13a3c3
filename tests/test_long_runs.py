"""τ owned by the model: train_on_batch loops, repeated fit calls, the frozen-target warning,
skipped mixed-precision steps, the saved schedule. Backend-agnostic (also run on JAX)."""

import json
import math
import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_byol
from keras_byol.schedules import CosineTargetDecay

from conftest import tiny_encoder, view_batches

BATCH = 4


def _np_tau(k, base, total):
    return 1 - (1 - base) * (math.cos(math.pi * min(k, total) / total) + 1) / 2


def _model(optimizer=None, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, **kwargs)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def _views(num_images=8, seed=0):
    view1, view2 = view_batches(num_images, seed=seed)
    return {"view1": view1, "view2": view2}


def _targets(model):
    return [np.array(v) for v in model.target_weights]


def _online(model):
    return [np.array(v) for v in model.online_ema_weights]


class _RecordOnline(keras.callbacks.Callback):
    """Online parameters after every step (read through `self.model`, which on JAX syncs
    the trainer's state into the variables)."""

    def __init__(self):
        super().__init__()
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        self.history.append(_online(self.model))


def _replay_step(target, online, tau):
    return [tau * t + (1 - tau) * o for t, o in zip(target, online)]


def _assert_close(actual, expected, atol=2e-6):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


def test_train_on_batch_loop_moves_the_target_with_the_models_schedule():
    model = _model(target_decay=CosineTargetDecay(0.9, total_steps=6))
    batch = _views(BATCH)
    previous = _targets(model)
    target = [t.astype("float64") for t in previous]
    for k in range(4):
        logs = model.train_on_batch(batch, return_dict=True)
        assert logs["tau"] == pytest.approx(_np_tau(k, 0.9, 6), abs=1e-6)
        target = _replay_step(target, _online(model), _np_tau(k, 0.9, 6))
        current = _targets(model)
        _assert_close(current, target)
        # The target moves at every step, not once.
        assert any(not np.array_equal(a, b) for a, b in zip(current, previous)), k
        previous = current
    assert int(model.optimizer.iterations) == 4


def test_train_on_batch_without_total_steps_is_an_error_naming_the_fix():
    model = _model()
    with pytest.raises(ValueError, match="CosineTargetDecay.*total_steps"):
        model.train_on_batch(_views(BATCH))


def test_three_fit_calls_follow_one_schedule():
    """fit(epochs=1) three times = one cosine over the 3 × 2 steps, τ_k at every step."""
    model = _model(target_decay=CosineTargetDecay(0.8, total_steps=6))
    views = _views(8)
    target = [t.astype("float64") for t in _targets(model)]
    taus = []
    for call in range(3):
        recorder = _RecordOnline()
        history = model.fit(
            views, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[recorder]
        )
        for step, online in enumerate(recorder.history):
            k = 2 * call + step
            target = _replay_step(target, online, _np_tau(k, 0.8, 6))
        taus.append(history.history["tau"][-1])
    _assert_close(_targets(model), target, atol=5e-6)
    assert taus == pytest.approx([_np_tau(k, 0.8, 6) for k in (1, 3, 5)], abs=1e-6)
    assert model.target_decay == CosineTargetDecay(0.8, 6)


def test_first_fit_plans_an_unset_schedule_once_and_a_frozen_target_warns(capsys):
    model = _model()
    views = _views(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(views, batch_size=BATCH, epochs=1, verbose=0)
    assert not [w for w in caught if "stops moving" in str(w.message)]  # τ < 1 throughout
    assert model.target_decay == CosineTargetDecay(0.996, 2)
    assert "τ schedule set from this fit call" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="target network stops moving.*step 2.*to step 4"):
        model.fit(views, batch_size=BATCH, epochs=1, verbose=0)
    assert "τ schedule set" not in capsys.readouterr().out  # planned once, kept
    assert model.target_decay == CosineTargetDecay(0.996, 2)


@pytest.mark.slow
def test_a_reloaded_model_keeps_its_schedule(tmp_path):
    model = _model(target_decay=CosineTargetDecay(0.9, total_steps=12))
    model.fit(_views(8), batch_size=BATCH, epochs=1, verbose=0)
    model.save(tmp_path / "byol.keras")
    loaded = keras.models.load_model(tmp_path / "byol.keras")
    assert loaded.target_decay == CosineTargetDecay(0.9, 12)
    history = loaded.fit(_views(8), batch_size=BATCH, epochs=1, verbose=0)
    assert loaded.target_decay == CosineTargetDecay(0.9, 12)  # fit did not reset it
    assert history.history["tau"][-1] == pytest.approx(_np_tau(3, 0.9, 12), abs=1e-6)


def test_a_file_without_the_schedule_in_its_config_keeps_the_saved_one(tmp_path):
    """A .keras file from before `target_decay` was saved in the config (simulated by
    removing it): the schedule comes from the saved τ variables, and fit keeps it."""
    model = _model(target_decay=CosineTargetDecay(0.9, total_steps=12))
    model.fit(_views(8), batch_size=BATCH, epochs=1, verbose=0)
    model.save(tmp_path / "new.keras")
    with (
        zipfile.ZipFile(tmp_path / "new.keras") as new,
        zipfile.ZipFile(tmp_path / "old.keras", "w") as old,
    ):
        for item in new.infolist():
            content = new.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                del config["config"]["target_decay"]
                content = json.dumps(config).encode()
            old.writestr(item, content)
    loaded = keras.models.load_model(tmp_path / "old.keras")
    assert loaded.target_decay == CosineTargetDecay(0.9, 12)
    history = loaded.fit(_views(8), batch_size=BATCH, epochs=1, verbose=0)
    assert history.history["tau"][-1] == pytest.approx(_np_tau(3, 0.9, 12), abs=1e-6)


def test_a_skipped_loss_scaled_step_leaves_the_target_and_tau():
    """A LossScaleOptimizer skips a step with inf gradients: no Polyak update, no τ step."""
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    model = _model(optimizer, target_decay=CosineTargetDecay(0.5, total_steps=10))
    good = _views(BATCH)
    model.train_on_batch(good)  # target and online now differ
    bad = {name: view.copy() for name, view in good.items()}
    bad["view1"][0, 0, 0, 0] = np.inf
    online_before, target_before = _online(model), _targets(model)
    assert any(not np.allclose(t, o) for t, o in zip(target_before, online_before))
    with pytest.raises(ValueError, match="1 batch\\(es\\) held NaN or inf"):
        model.train_on_batch(bad)  # the step ran, then the input check reports it
    assert int(model.optimizer.iterations) == 1  # skipped: not counted
    for actual, before in zip(_online(model) + _targets(model), online_before + target_before):
        np.testing.assert_array_equal(actual, before)
    logs = model.train_on_batch(good, return_dict=True)  # the next applied step is k = 1
    assert int(model.optimizer.iterations) == 2
    assert logs["tau"] == pytest.approx(_np_tau(1, 0.5, 10), abs=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(_targets(model), target_before))

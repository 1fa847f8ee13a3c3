"""The BYOL model against the spec: copy at start, loss, gradients, exact Polyak replay."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_byol
from keras_byol.callbacks import TargetUpdate
from keras_byol.normalization import FusedBatchNormalization, per_view_statistics
from keras_byol.schedules import CosineTargetDecay

from conftest import tiny_encoder, view_batches

BATCH = 4


def _np_tau(k, base, total):
    return 1 - (1 - base) * (math.cos(math.pi * min(k, total) / total) + 1) / 2


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def _dataset(num_images=24):
    view1, view2 = view_batches(num_images)
    return tf.data.Dataset.from_tensor_slices({"view1": view1, "view2": view2}).batch(BATCH)


class _RecordOnline(keras.callbacks.Callback):
    """Online parameters (the ones the target averages) after every optimizer step."""

    def __init__(self):
        super().__init__()
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        self.history.append([np.array(v) for v in self.model.online_ema_weights])


def _replay(initial, history, taus):
    """NumPy Polyak replay: ξ_{k+1} = τ_k ξ_k + (1 − τ_k) θ_{k+1}, ξ_0 = θ_0."""
    target = [w.astype("float64") for w in initial]
    for online, tau in zip(history, taus):
        target = [tau * t + (1 - tau) * o for t, o in zip(target, online)]
    return target


def _assert_weights_close(actual, expected, atol=2e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), e, atol=atol, rtol=1e-5)


@pytest.fixture(scope="module")
def reference_run():
    """A steps_per_execution=1 run with every online state recorded: 2 epochs × 6 steps."""
    if keras.backend.backend() == "tensorflow":
        tf.config.experimental.enable_op_determinism()
    model = _model()
    initial = [np.array(v) for v in model.online_ema_weights]
    recorder = _RecordOnline()
    model.fit(_dataset(), epochs=2, verbose=0, callbacks=[TargetUpdate(0.9), recorder])
    taus = [_np_tau(k, 0.9, 12) for k in range(12)]
    return model, initial, recorder.history, _replay(initial, recorder.history, taus)


def test_target_starts_as_exact_copy_and_is_not_trainable():
    model = _model()
    for target, online in zip(model.target_encoder.weights, model.encoder.weights):
        np.testing.assert_array_equal(np.asarray(target), np.asarray(online))
    for target, online in zip(model.target_projector.weights, model.projector.weights):
        np.testing.assert_array_equal(np.asarray(target), np.asarray(online))
    online_ids = {
        id(v)
        for part in (model.encoder, model.projector, model.predictor)
        for v in part.trainable_variables
    }
    assert {id(v) for v in model.trainable_variables} == online_ids
    assert not model.target_encoder.trainable_variables
    # Setting .trainable on the whole model must not unfreeze the target.
    model.trainable = True
    assert {id(v) for v in model.trainable_variables} == online_ids
    # Every encoder/projector parameter is averaged, BN γ/β included, BN moving stats not.
    paths = [v.path for v in model.online_ema_weights]
    assert any(p.endswith("bn/gamma") for p in paths) and any(p.endswith("bn/beta") for p in paths)
    assert not any("moving" in p for p in paths)


def test_train_step_loss_uses_target_in_training_mode():
    model = _model(target_decay=CosineTargetDecay(0.99, total_steps=10))
    view1, view2 = view_batches(BATCH)
    _, _, p1 = model.online_forward(view1)
    _, _, p2 = model.online_forward(view2)
    z1 = model.target_projector(model.target_encoder(view1, training=True), training=True)
    z2 = model.target_projector(model.target_encoder(view2, training=True), training=True)

    def ell(p, z):
        p, z = np.asarray(p, "float64"), np.asarray(z, "float64")
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return np.sum((p - z) ** 2, axis=1)

    expected = np.mean(ell(p1, z2) + ell(p2, z1))
    # Inference-mode BN (moving stats 0/1) would give a different target projection.
    z1_inference = model.target_projector(model.target_encoder(view1, training=False))
    assert not np.allclose(np.asarray(z1_inference), np.asarray(z1), atol=1e-3)
    logs = model.train_on_batch({"view1": view1, "view2": view2}, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_only_the_online_network():
    model = _model()
    before_online = [np.array(v) for v in model.trainable_variables]
    before_target = [np.array(v) for v in model.target_weights]
    model.fit(_dataset(8), epochs=1, verbose=0, callbacks=[TargetUpdate(base_tau=1.0)])
    # τ = 1 throughout: the target can only have changed through gradients. It did not.
    _assert_weights_close(model.target_weights, before_target, atol=0)
    # Biases feeding a BatchNorm have a zero gradient in exact arithmetic; every kernel and
    # every BN γ/β of encoder, projector and predictor must have moved.
    for variable, before in zip(model.trainable_variables, before_online):
        if not variable.path.endswith("bias"):
            assert not np.allclose(np.asarray(variable), before), variable.path


def test_polyak_update_matches_numpy_replay(reference_run):
    model, _, history, expected = reference_run
    assert len(history) == 12
    assert int(model.optimizer.iterations) == 12
    _assert_weights_close(model.target_weights, expected)
    # Sanity: the target really moved away from both the initial and the online weights.
    assert not np.allclose(np.asarray(model.target_weights[0]), history[-1][0], atol=1e-4)


def test_polyak_update_skips_no_step_with_steps_per_execution(reference_run):
    reference, _, _, expected = reference_run
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), steps_per_execution=3)
    model.fit(_dataset(), epochs=2, verbose=0, callbacks=[TargetUpdate(0.9)])
    _assert_weights_close(model.target_weights, expected)
    _assert_weights_close(
        model.online_ema_weights, [np.asarray(v) for v in reference.online_ema_weights]
    )


def test_polyak_update_continues_after_keras_save_and_load(reference_run, tmp_path):
    _, _, _, expected = reference_run
    model = _model()
    # Epoch 1 of 2, then save, load in a new object and run epoch 2: τ continues at k = 6.
    model.fit(_dataset(), epochs=1, verbose=0, callbacks=[TargetUpdate(0.9, total_steps=12)])
    model.save(tmp_path / "byol.keras")
    loaded = keras.models.load_model(tmp_path / "byol.keras")
    assert int(loaded.optimizer.iterations) == 6
    loaded.fit(_dataset(), epochs=2, initial_epoch=1, verbose=0, callbacks=[TargetUpdate(0.9)])
    _assert_weights_close(loaded.target_weights, expected)


def test_polyak_update_follows_a_changed_total_steps():
    model = _model()
    initial = [np.array(v) for v in model.online_ema_weights]
    recorder = _RecordOnline()
    model.fit(_dataset(), epochs=1, verbose=0, callbacks=[TargetUpdate(0.8, 12), recorder])
    model.fit(_dataset(), epochs=1, verbose=0, callbacks=[TargetUpdate(0.8, 30), recorder])
    taus = [_np_tau(k, 0.8, 12) for k in range(6)] + [_np_tau(k, 0.8, 30) for k in range(6, 12)]
    _assert_weights_close(model.target_weights, _replay(initial, recorder.history, taus))
    assert int(model.tau_total_steps) == 30


def test_target_batchnorm_keeps_its_own_moving_statistics():
    """Target BN moving mean = replay of its own forward passes (training mode), not averaged."""
    model = _model()
    initial = [np.array(v) for v in model.online_ema_weights]
    recorder = _RecordOnline()
    model.fit(_dataset(12), epochs=1, verbose=0, callbacks=[TargetUpdate(0.5), recorder])
    taus = [_np_tau(k, 0.5, 3) for k in range(3)]
    paths = [v.path for v in model.online_ema_weights]
    kernel_i = next(i for i, p in enumerate(paths) if p.endswith("conv/kernel"))
    bias_i = next(i for i, p in enumerate(paths) if p.endswith("conv/bias"))
    view1, view2 = view_batches(12)
    moving_mean = np.zeros(8)
    for step in range(3):
        target = _replay(initial, recorder.history[:step], taus[:step])
        kernel, bias = target[kernel_i].astype("float32"), target[bias_i].astype("float32")
        for view in (view1, view2):  # the step runs the target on view 1, then on view 2
            batch = view[step * BATCH : (step + 1) * BATCH]
            conv = keras.ops.conv(batch, kernel, strides=1, padding="same") + bias
            moving_mean = 0.9 * moving_mean + 0.1 * np.mean(np.asarray(conv), axis=(0, 1, 2))
    target_bn = model.target_encoder.get_layer("bn")
    np.testing.assert_allclose(np.asarray(target_bn.moving_mean), moving_mean, rtol=1e-4, atol=1e-6)
    online_bn = model.encoder.get_layer("bn")
    assert not np.allclose(np.asarray(online_bn.moving_mean), moving_mean, atol=1e-5)


def test_update_runs_inside_the_compiled_train_function():
    """The Python update runs only while Keras traces the step, not once per step."""
    model = _model()
    calls = []
    traced_update = model.polyak_update

    def counting_update(tau):
        calls.append(tau)
        return traced_update(tau)

    model.polyak_update = counting_update
    model.fit(_dataset(24), epochs=3, verbose=0)  # 18 optimizer steps
    assert int(model.optimizer.iterations) == 18
    assert 1 <= len(calls) <= 2, f"update ran {len(calls)} times in Python: not compiled"
    assert not any(isinstance(tau, float) for tau in calls)


def test_fit_adds_default_target_update():
    model = _model()
    history = model.fit(_dataset(8), epochs=2, verbose=0)
    assert float(model.base_tau) == pytest.approx(0.996)
    assert int(model.tau_total_steps) == 4
    assert history.history["tau"][-1] == pytest.approx(_np_tau(3, 0.996, 4), abs=1e-6)


def test_saved_model_continues_training_identically(tmp_path):
    model = _model()
    model.fit(_dataset(8), epochs=1, verbose=0, callbacks=[TargetUpdate(0.9, 6)])
    model.save(tmp_path / "byol.keras")
    loaded = keras.models.load_model(tmp_path / "byol.keras")
    assert isinstance(loaded, keras_byol.BYOL)
    _assert_weights_close(loaded.weights, [np.asarray(v) for v in model.weights], atol=0)
    for m in (model, loaded):
        m.fit(_dataset(8), epochs=3, initial_epoch=1, verbose=0, callbacks=[TargetUpdate(0.9, 6)])
    _assert_weights_close(loaded.weights, [np.asarray(v) for v in model.weights], atol=1e-6)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)


def test_get_config_roundtrip():
    model = _model()
    clone = keras_byol.BYOL.from_config(model.get_config())
    assert clone.projection_dim == 8 and clone.hidden_dim == 16
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in model.weights]
    images = view_batches(2)[0]
    assert clone(images).shape == (2, 8)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_without_nan(policy):
    keras.config.set_dtype_policy(policy)
    model = _model()
    loss, _ = model.compute_losses(*view_batches(BATCH))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    history = model.fit(_dataset(8), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in model.target_weights)


# ------------------------------------------------------------------------------ bad input
def test_views_of_different_shapes_are_rejected():
    model = _model()
    view1 = np.zeros((4, 16, 16, 3), "float32")
    view2 = np.zeros((4, 12, 12, 3), "float32")
    with pytest.raises(ValueError, match="same shape"):
        model.train_on_batch({"view1": view1, "view2": view2})


def test_non_float_views_are_rejected():
    model = _model()
    views = np.zeros((4, 16, 16, 3), "uint8")
    with pytest.raises(TypeError, match="float images"):
        model.train_on_batch({"view1": views, "view2": views})


def test_tuple_dataset_is_rejected_with_the_fix():
    model = _model()
    view1, view2 = view_batches(8)
    ds = tf.data.Dataset.from_tensor_slices((view1, view2)).batch(BATCH)
    with pytest.raises(TypeError, match="view1"):
        model.fit(ds, epochs=1, verbose=0)


def test_encoder_without_pooled_output_is_rejected():
    images = keras.Input((16, 16, 3))
    feature_map = keras.layers.Conv2D(4, 3)(images)
    with pytest.raises(ValueError, match="GlobalAveragePooling2D"):
        keras_byol.BYOL(keras.Model(images, feature_map))


def test_unknown_length_dataset_needs_total_steps():
    model = _model()
    ds = _dataset(8).filter(lambda batch: True)  # cardinality unknown
    with pytest.raises(ValueError, match="total_steps"):
        model.fit(ds, epochs=1, verbose=0)
    history = model.fit(ds, epochs=1, verbose=0, callbacks=[TargetUpdate(0.99, total_steps=2)])
    assert np.isfinite(history.history["loss"][0])


def test_bad_tau_settings_are_rejected():
    with pytest.raises(ValueError, match="total_steps"):
        TargetUpdate(0.99, total_steps=0)
    with pytest.raises(ValueError, match="base_tau"):
        TargetUpdate(1.5)
    with pytest.raises(ValueError, match="total_steps"):
        _model().set_target_decay(CosineTargetDecay(0.99, 0))
    with pytest.raises(TypeError, match="CosineTargetDecay"):
        _model().set_target_decay(0.99)


def test_fit_before_compile_and_with_loss_are_rejected():
    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16)
    with pytest.raises(ValueError, match="compile"):
        model.fit(_dataset(8), epochs=1, verbose=0)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="own loss"):
        model.fit(_dataset(8), epochs=1, verbose=0)


# -------------------------------------------------------------------------- online probe
def _labelled_dataset(labels):
    view1, view2 = view_batches(len(labels))
    data = {"view1": view1, "view2": view2, "label": np.asarray(labels, "int32")}
    return tf.data.Dataset.from_tensor_slices(data).batch(BATCH)


def _probed_twin(model, num_classes=3):
    """A BYOL with a probe whose every shared weight equals `model`'s."""
    twin = keras_byol.BYOL.from_config({**model.get_config(), "num_classes": num_classes})
    for part in ("encoder", "projector", "predictor", "target_encoder", "target_projector"):
        getattr(twin, part).set_weights(getattr(model, part).get_weights())
    twin.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return twin


def test_online_probe_does_not_change_the_byol_gradients():
    plain = _model()
    probed = _probed_twin(plain)
    probe_before = [np.array(v) for v in probed.probe.weights]
    labels = np.arange(16) % 3
    plain_history = plain.fit(
        _labelled_dataset(labels), epochs=1, verbose=0, callbacks=[TargetUpdate(0.9)]
    )
    history = probed.fit(
        _labelled_dataset(labels), epochs=1, verbose=0, callbacks=[TargetUpdate(0.9)]
    )
    for part in ("encoder", "projector", "predictor", "target_encoder", "target_projector"):
        _assert_weights_close(
            getattr(probed, part).weights, [np.asarray(v) for v in getattr(plain, part).weights]
        )
    assert not np.allclose(np.asarray(probed.probe.weights[0]), probe_before[0])
    assert 0.0 <= history.history["probe_accuracy"][0] <= 1.0
    assert history.history["probe_loss"][0] > 0
    # The reported loss is the BYOL loss alone, as without a probe.
    assert history.history["loss"][0] == pytest.approx(plain_history.history["loss"][0], rel=1e-5)


def _colour_classes(num_images, seed=0):
    """Images of 4 classes, each a colour plus noise: a linear probe separates them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % 4
    colours = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.8, 0.8, 0.1]])
    images = colours[labels][:, None, None, :] + 0.1 * rng.standard_normal((num_images, 16, 16, 3))
    return np.clip(images, 0, 1).astype("float32"), labels.astype("int32")


def test_online_probe_learns_at_the_pace_of_the_run():
    """Under the recipe's LARS (η 1e-3) the probe reads standardized features and gets no
    trust ratio: separable classes are learned within a short run (through the trust
    ratio, on raw features, it stayed near chance: a monitor that says nothing)."""
    keras.utils.set_random_seed(0)
    model = keras_byol.BYOL(
        tiny_encoder(), projection_dim=8, hidden_dim=16, num_classes=4,
        target_decay=CosineTargetDecay(0.99, total_steps=48),
        head_init="truncated_normal",  # the features this run's pace was measured on
    )  # fmt: skip
    model.compile(optimizer=keras_byol.optimizers.LARS(0.2, weight_decay=1e-6))
    images, labels = _colour_classes(64)
    data = {"view1": images, "view2": images[:, ::-1], "label": labels}
    history = model.fit(data, batch_size=8, epochs=6, verbose=0)
    assert history.history["probe_accuracy"][-1] >= 0.9, history.history["probe_accuracy"]
    assert model.optimizer.is_excluded(model.probe.kernel) and model.probe_standardize


@pytest.mark.one_backend  # the job's optimizer choice
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_job_exempts_the_probe_from_weight_decay(optimizer):
    from keras_byol import experiment
    from keras_byol.config import PretrainConfig

    config = PretrainConfig(optimizer=optimizer, image_size=16, hidden_dim=8, projection_dim=4)
    model = experiment.build_model(config, steps_per_epoch=2, num_classes=3)
    decayed = {v.path for v in model.trainable_variables if model.optimizer._use_weight_decay(v)}
    assert model.probe.kernel.path not in decayed
    assert model.encoder.get_layer("stem_conv").kernel.path in decayed


def test_probe_features_are_standardized_per_example():
    features = np.random.default_rng(0).normal(3.0, 5.0, (4, 16)).astype("float32")
    standardized = np.asarray(keras_byol.probe.standardize_features(features))
    expected = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    np.testing.assert_allclose(standardized, expected, rtol=1e-4, atol=1e-5)


def test_online_probe_skips_unlabelled_examples():
    probed = _probed_twin(_model())
    before = [np.array(v) for v in probed.probe.weights]
    probed.fit(_labelled_dataset([-1] * 8), epochs=1, verbose=0)
    _assert_weights_close(probed.probe.weights, before, atol=0)


def test_online_probe_saves_and_loads(tmp_path):
    probed = _probed_twin(_model(), num_classes=4)
    probed.fit(_labelled_dataset(np.arange(8) % 4), epochs=1, verbose=0)
    probed.save(tmp_path / "probed.keras")
    loaded = keras.models.load_model(tmp_path / "probed.keras")
    assert loaded.num_classes == 4
    _assert_weights_close(
        loaded.probe.weights, [np.asarray(v) for v in probed.probe.weights], atol=0
    )


def _concat_views_run(concat_views, epochs=1):
    """(losses, weights, online-network calls per trace) of 2 steps per epoch on 8 images."""
    keras.utils.set_random_seed(0)
    encoder = tiny_encoder(norm=FusedBatchNormalization)
    model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16, concat_views=concat_views)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    calls = []
    online_forward = model.online_forward
    model.online_forward = lambda view, training=True: (calls.append(1), online_forward(view))[1]
    view1, view2 = view_batches(8)
    history = model.fit(
        {"view1": view1, "view2": view2},
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[TargetUpdate(0.9)],
    )
    return history.history["loss"], [np.array(v) for v in model.weights], len(calls)


# On TensorFlow the per-view reference runs the fused BN kernel and the concatenated pass
# Keras-style ops: rounding differences, grown by 2 steps of a 4-image BN, reach 4e-4 on
# one AMD EPYC and 4.2e-3 on another (oneDNN picks its kernels by the CPU); on JAX both are
# the same ops (1e-6). BN over both views together: ≥ 0.3. The mean loss of the 2 steps
# differed by 1.7e-5 relative on an AMD EPYC (under 1e-5 on a Xeon).
_CONCAT_ATOL = 1e-2 if keras.backend.backend() == "tensorflow" else 1e-5
_CONCAT_LOSS_RTOL = 1e-4 if keras.backend.backend() == "tensorflow" else 1e-5


def test_concat_views_equals_a_pass_per_view():
    """One pass over both views (per-view BN statistics) = a pass per view: same losses,
    online and target weights and BN moving statistics after 2 steps."""
    losses, weights, calls = _concat_views_run(False)
    concat_losses, concat_weights, concat_calls = _concat_views_run(True)
    assert concat_calls >= 1 and calls == 2 * concat_calls  # online passes, per trace
    np.testing.assert_allclose(concat_losses, losses, rtol=_CONCAT_LOSS_RTOL)
    _assert_weights_close(concat_weights, weights, atol=_CONCAT_ATOL)


def test_concat_views_with_joint_statistics_would_differ(monkeypatch):
    """The check above can fail: one pass with BN statistics over both views together is
    a different step."""
    _, weights, _ = _concat_views_run(False)
    joint = lambda views: per_view_statistics(1)  # noqa: E731
    monkeypatch.setattr("keras_byol.model.per_view_statistics", joint)
    _, joint_weights, _ = _concat_views_run(True)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(joint_weights, weights))
    assert difference > (20 if keras.backend.backend() == "tensorflow" else 50) * _CONCAT_ATOL


def test_concat_views_needs_batchnorms_that_keep_per_view_statistics():
    with pytest.raises(ValueError, match="FusedBatchNormalization.*'bn'"):
        keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, concat_views=True)
    model = keras_byol.BYOL(
        tiny_encoder(norm=FusedBatchNormalization), projection_dim=8, concat_views=True
    )
    assert keras_byol.BYOL.from_config(model.get_config()).concat_views is True


def test_concat_views_in_mixed_precision_give_the_per_view_loss():
    keras.config.set_dtype_policy("mixed_bfloat16")
    losses = []
    for concat_views in (False, True):
        keras.utils.set_random_seed(0)
        encoder = tiny_encoder(norm=FusedBatchNormalization)
        model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16, concat_views=concat_views)
        loss, outputs = model.compute_losses(*view_batches(BATCH))
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        assert tuple(outputs["projection"].shape) == (BATCH, 8)
        losses.append(float(loss))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-2)  # bfloat16 rounding


def _remat_run(remat, monkeypatch):
    """(losses, weights, rematerialized encoder calls per trace) of 2 SGD steps of an
    encoder with BatchNorm on 8 images (the ResNets run in benchmarks/memory.py --remat)."""
    keras.utils.set_random_seed(0)
    calls = []
    rematerialized_call = keras_byol.model.rematerialized_call
    monkeypatch.setattr(
        keras_byol.model,
        "rematerialized_call",
        lambda network, inputs: (calls.append(1), rematerialized_call(network, inputs))[1],
    )
    # The heads' init the tolerance below was set with (float rounding scales with it).
    model = keras_byol.BYOL(
        tiny_encoder(), projection_dim=8, hidden_dim=16, remat=remat, head_init="truncated_normal"
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    view1, view2 = view_batches(8)
    history = model.fit(
        {"view1": view1, "view2": view2}, batch_size=BATCH, epochs=1, shuffle=False, verbose=0
    )
    return history.history["loss"], [np.array(v) for v in model.weights], len(calls)


def test_remat_takes_the_same_step(monkeypatch):
    """Recomputing each online encoder pass in the backward pass changes nothing: the same
    losses, online and target weights and BatchNorm moving statistics (assigned once per
    pass, not again by the recomputation) after 2 steps."""
    losses, weights, calls = _remat_run(False, monkeypatch)
    remat_losses, remat_weights, remat_calls = _remat_run(True, monkeypatch)
    assert calls == 0 and remat_calls >= 2  # two views per trace
    np.testing.assert_allclose(remat_losses, losses, rtol=1e-5)
    _assert_weights_close(remat_weights, weights)


def test_remat_is_saved_and_refused_with_concat_views():
    model = keras_byol.BYOL(tiny_encoder(), projection_dim=8, hidden_dim=16, remat=True)
    assert keras_byol.BYOL.from_config(model.get_config()).remat is True
    with pytest.raises(ValueError, match="nothing to save"):
        keras_byol.BYOL(
            tiny_encoder(norm=FusedBatchNormalization), projection_dim=8, concat_views=True,
            remat=True,
        )  # fmt: skip

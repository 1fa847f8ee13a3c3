"""MirroredStrategy on 2 logical CPUs: one step on a global batch 2B equals one single-device
step on the same 2B examples (synchronized BatchNorm, which a model built with default
arguments has: keras_byol's ResNet and heads, and a plain Keras encoder inside BYOL), and
differs without sync; with
steps_per_execution=3 the strategy gives the same weights as 3 single-step calls; both views
in one pass (concat_views, per-view synchronized statistics) equal a pass per view; the
views made inside the step are one device's views of the global batch.

Logical devices must be configured before TensorFlow starts, so the check runs in a fresh
process and prints its measurements as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras import layers
import keras_byol
from keras_byol.callbacks import TargetUpdate
from keras_byol.normalization import FusedBatchNormalization
from keras_byol.schedules import CosineTargetDecay

def build(sync, steps_per_execution=1, concat_views=None):
    # concat_views None: Keras' BatchNormalization; True/False: keras_byol's, with that option.
    keras.utils.set_random_seed(0)
    images = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(images)
    norm = layers.BatchNormalization if concat_views is None else FusedBatchNormalization
    x = norm(momentum=0.9, epsilon=1e-5, synchronized=sync)(x)
    encoder = keras.Model(images, layers.GlobalAveragePooling2D()(layers.ReLU()(x)))
    model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16, synchronized_batchnorm=sync,
                            concat_views=bool(concat_views))
    model.compile(optimizer=keras.optimizers.SGD(0.5), steps_per_execution=steps_per_execution)
    return model

rng = np.random.default_rng(0)
views = {"view1": rng.random((8, 8, 8, 3), dtype=np.float32),
         "view2": rng.random((8, 8, 8, 3), dtype=np.float32)}
dataset = lambda: tf.data.Dataset.from_tensor_slices(views).batch(8)  # global batch 2B = 8

single = build(False)
initial = [np.array(v) for v in single.weights]
trainable_ids = {id(v) for v in single.trainable_variables}
online_initial = [w for v, w in zip(single.weights, initial) if id(v) in trainable_ids]
target_initial = [np.array(v) for v in single.target_weights]
def one_step(model):
    history = model.fit(dataset(), epochs=1, verbose=0, callbacks=[TargetUpdate(0.9, 10)])
    return history.history["loss"][0]

loss_single = one_step(single)

def relative(a_vars, b_vars, start):
    num = sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(a_vars, b_vars))
    den = sum(np.sum((np.asarray(b) - s) ** 2) for b, s in zip(b_vars, start))
    return float(np.sqrt(num / den))

result = {"loss_single": loss_single}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for sync in (True, False):
    with strategy.scope():
        model = build(sync)
    for variable, value in zip(model.weights, initial):
        variable.assign(value)
    loss = one_step(model)
    result["sync" if sync else "no_sync"] = {
        "replicas": strategy.num_replicas_in_sync,
        "loss_rel_err": abs(loss - loss_single) / loss_single,
        "online_update_rel_err": relative(
            model.trainable_variables, single.trainable_variables, online_initial),
        "target_update_rel_err": relative(
            model.target_weights, single.target_weights, target_initial),
    }

# steps_per_execution under the strategy: 3 steps in one call == 3 calls of one step.
many = {k: np.concatenate([v, v[::-1], v[:, ::-1]]) for k, v in views.items()}  # 3 batches
runs = {}
for steps_per_execution in (1, 3):
    with strategy.scope():
        model = build(True, steps_per_execution)
    for variable, value in zip(model.weights, initial):
        variable.assign(value)
    model.fit(tf.data.Dataset.from_tensor_slices(many).batch(8), epochs=1, verbose=0,
              callbacks=[TargetUpdate(0.9, 3)])
    runs[steps_per_execution] = model
one, three = runs[1], runs[3]
result["steps_per_execution"] = {
    "iterations": [int(one.optimizer.iterations.numpy()), int(three.optimizer.iterations.numpy())],
    "online_rel_err": relative(three.trainable_variables, one.trainable_variables, online_initial),
    "target_rel_err": relative(three.target_weights, one.target_weights, target_initial),
}

# Both views in one pass under the strategy (each replica thread enters per_view_statistics;
# synchronized statistics per view across replicas) == a pass per view.
passes = {}
for concat_views in (False, True):
    with strategy.scope():
        model = build(True, concat_views=concat_views)
    for variable, value in zip(model.weights, initial):
        variable.assign(value)
    passes[concat_views] = (one_step(model), model)
(loss_per_view, per_view), (loss_concat, concat) = passes[False], passes[True]
result["concat_views"] = {
    "loss_rel_err": abs(loss_concat - loss_per_view) / loss_per_view,
    "online_rel_err": relative(concat.trainable_variables, per_view.trainable_variables,
                               online_initial),
    "target_rel_err": relative(concat.target_weights, per_view.target_weights, target_initial),
    "vs_single_device_loss_rel_err": abs(loss_concat - loss_single) / loss_single,
}
# A Python user's model with default arguments, built inside the strategy's scope: the
# keras_byol ResNet, and a plain Keras encoder (its BatchNormalization synchronized=False).
def defaults_model(encoder_kind, **byol_arguments):
    keras.utils.set_random_seed(0)
    if encoder_kind == "resnet":
        encoder = keras_byol.encoders.resnet("resnet18", (8, 8, 3), small_images=True, width=0.125)
    else:
        images = keras.Input((8, 8, 3))
        x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(images))
        encoder = keras.Model(images, layers.GlobalAveragePooling2D()(layers.ReLU()(x)))
    model = keras_byol.BYOL(encoder, projection_dim=8, hidden_dim=16,
                            target_decay=CosineTargetDecay(0.9, 10), **byol_arguments)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    return model

for encoder_kind in ("resnet", "keras"):
    reference = defaults_model(encoder_kind)
    start = [np.array(v) for v in reference.weights]
    ids = {id(v) for v in reference.trainable_variables}
    online_start = [w for v, w in zip(reference.weights, start) if id(v) in ids]
    target_start = [np.array(v) for v in reference.target_weights]
    loss_reference = reference.fit(dataset(), epochs=1, verbose=0).history["loss"][0]
    for name, arguments in (("defaults", {}), ("off", {"synchronized_batchnorm": False})):
        with strategy.scope():
            model = defaults_model(encoder_kind, **arguments)
        for variable, value in zip(model.weights, start):
            variable.assign(value)
        loss = model.fit(dataset(), epochs=1, verbose=0).history["loss"][0]
        result[f"{encoder_kind}_{name}"] = {
            "loss_rel_err": abs(loss - loss_reference) / loss_reference,
            "online_update_rel_err": relative(
                model.trainable_variables, reference.trainable_variables, online_start),
            "target_update_rel_err": relative(
                model.target_weights, reference.target_weights, target_start),
        }
print(json.dumps(result))
"""


def _measure(script):
    """The JSON that `script` prints last, run in a fresh process (logical devices)."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_step_equals_the_single_device_step():
    measured = _measure(_SCRIPT)
    print(json.dumps(measured, indent=2))  # the measured values, shown with pytest -s
    sync, no_sync = measured["sync"], measured["no_sync"]
    assert sync["replicas"] == 2
    # Synchronized BN: the same step as on one device (loss exactly, update to float error).
    assert sync["loss_rel_err"] <= 1e-5
    assert sync["online_update_rel_err"] <= 2e-3
    assert sync["target_update_rel_err"] <= 2e-3
    # Without synchronization each replica normalizes its own half: a different step.
    assert no_sync["online_update_rel_err"] > 0.05
    assert no_sync["loss_rel_err"] > 1e-3
    # steps_per_execution=3 under the strategy skips no target update.
    chunked = measured["steps_per_execution"]
    assert chunked["iterations"] == [3, 3]
    assert chunked["online_rel_err"] <= 1e-4 and chunked["target_rel_err"] <= 1e-4
    # One pass over both views: the per-view step, and still the single-device loss.
    concat = measured["concat_views"]
    assert concat["loss_rel_err"] <= 1e-5 and concat["vs_single_device_loss_rel_err"] <= 1e-5
    assert concat["online_rel_err"] <= 1e-4 and concat["target_rel_err"] <= 1e-4
    # Default arguments synchronize every BatchNorm under the strategy; an explicit False
    # turns it off (and then the step differs, so the check above can fail).
    for encoder_kind in ("resnet", "keras"):
        defaults, off = (
            measured[f"{encoder_kind}_defaults"],
            measured[f"{encoder_kind}_off"],
        )
        assert defaults["loss_rel_err"] <= 1e-5, encoder_kind
        assert defaults["online_update_rel_err"] <= 2e-3, encoder_kind
        assert defaults["target_update_rel_err"] <= 2e-3, encoder_kind
        assert off["online_update_rel_err"] > 0.05 and off["loss_rel_err"] > 1e-3, encoder_kind


_VIEWS_SCRIPT = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_byol import views

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images = np.random.default_rng(0).integers(0, 256, (8, 20, 20, 3), dtype=np.uint8)
def augmenter(view1=views.BYOL_VIEW1):
    return views.TwoViewAugmenter(view1, views.BYOL_VIEW2, image_size=16, seed=0)

with strategy.scope():
    mirrored = augmenter()
batches = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices(images).batch(8))  # 4 images per replica
made = tf.function(lambda x: strategy.run(mirrored, args=(x,)))(next(iter(batches)))
single = augmenter()(images)  # the same seed on one device, the global batch of 8
result = {}
for name in ("view1", "view2"):
    halves = [t.numpy() for t in strategy.experimental_local_results(made[name])]
    result[name] = float(np.abs(np.concatenate(halves) - np.asarray(single[name])).max())
result["replicas_differ"] = not np.allclose(halves[0], halves[1])
with strategy.scope():
    custom = augmenter(view1=keras.layers.Pipeline([views.RandomResizedCrop(16)]))
try:
    tf.function(lambda x: strategy.run(custom, args=(x,)))(next(iter(batches)))
    result["custom_refused"] = ""
except ValueError as error:
    result["custom_refused"] = str(error)
print(json.dumps(result))
"""


@pytest.mark.slow
def test_views_under_mirrored_strategy_are_the_one_device_views_of_the_global_batch():
    """Every replica reads the same seed state: each takes its own rows of one draw for the
    global batch, so the replicas' views together are one device's views of that batch
    (before, each replica drew the same decisions for its own images)."""
    measured = _measure(_VIEWS_SCRIPT)
    assert measured["view1"] <= 1e-5 and measured["view2"] <= 1e-5, measured
    assert measured["replicas_differ"]
    assert "custom view layer under tf.distribute" in measured["custom_refused"], measured

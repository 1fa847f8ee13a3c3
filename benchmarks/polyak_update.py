"""Cost of BYOL's Polyak target update for ResNet-50, per update (165 averaged
variables: the encoder's and the projector's parameters).

Compares an eager Python loop over the variables (what a naive callback does) with the
update as keras_byol runs it: traced into a tf.function (as inside Keras' compiled train
step), with and without XLA. Then times whole train steps of the same model (224 px
random views, batch --step-batch, SGD; the step includes the update) and prints the
update's share of a step. Prints one JSON line per result with the machine.

    python benchmarks/polyak_update.py --step-batch 16
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import describe  # noqa: E402

import keras_byol  # noqa: E402


def _time_per_call(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _train_step_seconds(model, batch, warmup=1, steps=2):
    """Median seconds of `steps` fit steps on random 224 px views, after `warmup`."""
    model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
    views = np.random.default_rng(0).random((2, batch, 224, 224, 3), dtype=np.float32)
    count = warmup + steps
    data = {
        "view1": np.concatenate([views[0]] * count),
        "view2": np.concatenate([views[1]] * count),
    }
    ends = [time.perf_counter()]
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    model.fit(data, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return float(np.median(np.diff(ends)[warmup:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-batch", type=int, default=16, help="0: skip the step timing")
    args = parser.parse_args()
    encoder = keras_byol.encoders.resnet("resnet50", input_shape=(224, 224, 3))
    model = keras_byol.BYOL(encoder)
    tau = tf.constant(0.99)
    machine = describe(tensorflow=tf.__version__, keras=keras.__version__)
    variants = {
        "eager_loop": (lambda: model.polyak_update(tau), 5),
        "tf_function": (tf.function(lambda: model.polyak_update(tau)), 20),
        "tf_function_xla": (tf.function(lambda: model.polyak_update(tau), jit_compile=True), 20),
    }
    update_ms = {}
    for name, (fn, repeats) in variants.items():
        update_ms[name] = 1e3 * _time_per_call(fn, repeats)
        line = {"what": "polyak_update", "variant": name, "encoder": "resnet50"}
        line.update(averaged_variables=len(model.target_weights))
        line.update(ms_per_update=round(update_ms[name], 2), machine=machine)
        print(json.dumps(line), flush=True)
    if args.step_batch > 0:
        step_ms = 1e3 * _train_step_seconds(model, args.step_batch)
        line = {"what": "polyak_update_share_of_step", "encoder": "resnet50", "size": 224}
        line.update(batch=args.step_batch, ms_per_train_step=round(step_ms, 1))
        line.update(ms_per_update=round(update_ms["tf_function"], 2))
        line.update(share=round(update_ms["tf_function"] / step_ms, 5), machine=machine)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

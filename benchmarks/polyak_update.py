"""Cost of BYOL's Polyak target update for ResNet-50, per update (165 averaged
variables: the encoder's and the projector's parameters).

Compares an eager Python loop over the variables (what a naive callback does) with the
update as keras_byol runs it: traced into a tf.function (as inside Keras' compiled train
step), with and without XLA. Prints one JSON line per variant with the machine.

    python benchmarks/polyak_update.py
"""

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


def main():
    encoder = keras_byol.encoders.resnet("resnet50", input_shape=(224, 224, 3))
    model = keras_byol.BYOL(encoder)
    tau = tf.constant(0.99)
    machine = describe(tensorflow=tf.__version__, keras=keras.__version__)
    variants = {
        "eager_loop": (lambda: model.polyak_update(tau), 5),
        "tf_function": (tf.function(lambda: model.polyak_update(tau)), 20),
        "tf_function_xla": (tf.function(lambda: model.polyak_update(tau), jit_compile=True), 20),
    }
    for name, (fn, repeats) in variants.items():
        seconds = _time_per_call(fn, repeats)
        print(
            json.dumps(
                {
                    "what": "polyak_update",
                    "variant": name,
                    "encoder": "resnet50",
                    "averaged_variables": len(model.target_weights),
                    "ms_per_update": round(1e3 * seconds, 2),
                    "machine": machine,
                }
            )
        )


if __name__ == "__main__":
    main()

"""End-to-end BYOL training throughput with the views made in tf.data or inside the step.

`model.fit` from uint8 source images (no decode) on each backend, two ways:
  tfdata  `data.pretrain_dataset(..., augment_on="cpu")`: views made by tf.data on the host
  device  the step makes them (`BYOL(augmenter=views.TwoViewAugmenter(...))`): TF from
          `pretrain_dataset(..., augment_on="device")`, JAX from `image_batches.ImageBatches`
          (no TensorFlow in the JAX device run's input)
ResNet-18, small-image stem at ≤ 64 px, the paper's views (blur and all), SGD; heads
512→4096→256. One image = both views. Each (backend, input) runs in its own process and
prints a JSON line; the last line compares device with tfdata per backend. On a CPU the
views and the step share the cores, so this says what the device views cost where there is
no accelerator; `benchmarks/jax_step.py --views=device` times them on a GPU.

    python benchmarks/views_step.py                         # 32 px, batch 64, both backends
    python benchmarks/views_step.py --size 96 --batch 32 --steps 10
    python benchmarks/views_step.py --views-only --size 224 --batch 32   # the views alone
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

RUNS = [("tensorflow", "tfdata"), ("tensorflow", "device"), ("jax", "tfdata"), ("jax", "device")]


def worker(args):
    import keras
    import numpy as np

    import keras_byol
    from keras_byol import views
    from keras_byol.image_batches import ImageBatches, source_size

    keras.utils.set_random_seed(0)
    size, batch = args.size, args.batch
    steps = args.warmup + args.steps
    images = np.random.default_rng(0).integers(
        0, 256, (batch * 4, source_size(size), source_size(size), 3), dtype=np.uint8
    )
    view1, view2 = (
        (views.SMALL_IMAGE_VIEW1, views.SMALL_IMAGE_VIEW2)
        if size <= 64
        else (
            views.BYOL_VIEW1,
            views.BYOL_VIEW2,
        )
    )
    augmenter = None
    if args.input == "device":
        augmenter = views.TwoViewAugmenter(view1, view2, size, seed=0)
    if args.input == "device" and args.backend == "jax":
        dataset = ImageBatches(images, batch, size, seed=0)
        epochs, per_epoch = -(-steps // len(dataset)), len(dataset)
    else:
        from keras_byol import data

        dataset = data.pretrain_dataset(
            images, batch_size=batch, image_size=size, seed=0,
            augment_on=args.input.replace("tfdata", "cpu"),
            view1=view1, view2=view2, repeat=True,
        )  # fmt: skip
        epochs, per_epoch = 1, steps
    if args.views_only:
        return time_views(args, dataset, augmenter)
    encoder = keras_byol.encoders.resnet("resnet18", (size, size, 3), small_images=size <= 64)
    tau = keras_byol.schedules.CosineTargetDecay(0.996, total_steps=epochs * per_epoch)
    model = keras_byol.BYOL(encoder, projection_dim=256, hidden_dim=4096, target_decay=tau,
                            augmenter=augmenter)  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            times.append(time.perf_counter())

    model.fit(dataset, epochs=epochs, steps_per_epoch=per_epoch, verbose=0, callbacks=[Clock()])
    timed = times[args.warmup :]
    seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
    result = {"what": "fit_throughput", "backend": args.backend, "input": args.input}
    result.update(size=size, batch=batch, steps=len(timed) - 1, arch="resnet18")
    result.update(images_per_s=round(batch / seconds, 1), ms_per_step=round(1e3 * seconds, 1))
    print(json.dumps(result), flush=True)


def time_views(args, dataset, augmenter):
    """Views alone: batches of tf.data views per second, or the augmenter compiled
    (tf.function / jax.jit with its seeds threaded) on one uint8 batch."""
    import keras

    if augmenter is None:
        batches = iter(dataset)
        call = lambda: next(batches)  # noqa: E731
    elif args.backend == "jax":
        import jax

        from keras_byol.backends.jax import _run_stateless

        images = jax.numpy.asarray(dataset[0]["images"])  # ImageBatches
        variables = augmenter.non_trainable_variables
        make = jax.jit(lambda values: _run_stateless(variables, values, lambda: augmenter(images)))
        state = [v.value for v in variables]

        def call():
            nonlocal state
            views, state = make(state)
            return jax.block_until_ready(views)
    else:
        import tensorflow as tf

        images = tf.constant(next(iter(dataset))["images"])
        call = tf.function(lambda: augmenter(images))
    for _ in range(args.warmup):
        call()
    start = time.perf_counter()
    for _ in range(args.steps):
        keras.tree.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else x, call())
    seconds = (time.perf_counter() - start) / args.steps
    result = {"what": "views_throughput", "backend": args.backend, "input": args.input}
    result.update(size=args.size, batch=args.batch, steps=args.steps)
    result.update(images_per_s=round(args.batch / seconds, 1), ms_per_batch=round(1e3 * seconds, 1))
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", default=",".join(f"{b}:{i}" for b, i in RUNS))
    parser.add_argument(
        "--views-only", action="store_true", help="time the views alone, no training step"
    )
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        return worker(args)
    results = []
    for run in args.runs.split(","):
        backend, kind = run.split(":")
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [sys.executable, __file__, f"--backend={backend}", f"--input={kind}"]
        command += [f"--{k}={getattr(args, k)}" for k in ("size", "batch", "warmup", "steps")]
        command += ["--views-only"] if args.views_only else []
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        line = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
        print(line, flush=True)
        results.append(json.loads(line))
    speed = {(r["backend"], r["input"]): r["images_per_s"] for r in results}
    summary = {"what": "device_views_vs_tfdata", "size": args.size, "batch": args.batch}
    summary["views_only"] = args.views_only
    for backend in ("tensorflow", "jax"):
        if (backend, "device") in speed and (backend, "tfdata") in speed:
            ratio = speed[backend, "device"] / speed[backend, "tfdata"]
            summary[f"{backend}_device_over_tfdata"] = round(ratio, 3)
    summary["machine"] = describe()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

"""BYOL train steps on the JAX backend, from views on the device or from raw uint8 images.

Defaults are the speed issue's GPU setting: ResNet-50, 224 px, batch 256, `mixed_bfloat16`,
LARS; heads 2048→4096→256 and 256→4096→256. Each step is keras_byol's stateless JAX train
step (both loss terms, LARS, the Polyak update inside the jit) compiled with `jax.jit`, the
model state donated; the two views are random arrays made on the device once, so no host
transfer is timed. `--concat-views` runs each network once over both views concatenated
(per-view BatchNorm statistics), the `BYOL(concat_views=True)` fast path.
`--views=device` times the step end to end from raw images: the batch is uint8
(B, S', S', 3), S' = round(S / 0.875) (256 at 224), and `BYOL(augmenter=views.
TwoViewAugmenter(BYOL_VIEW1, BYOL_VIEW2, S))` makes the paper's two views inside the jitted
step (decode excluded); a further line times the views alone (jitted) and their share of
the step. Prints JSON lines: images/s (one image = both views), ms per step, the device's
peak memory where it reports one, and the Polyak update timed alone (jitted) with its
share of a step. Imports no TensorFlow.

    KERAS_BACKEND=jax python benchmarks/jax_step.py                    # GPU: the issue's setting
    KERAS_BACKEND=jax python benchmarks/jax_step.py --views=device     # GPU: from uint8 images
    KERAS_BACKEND=jax python benchmarks/jax_step.py --arch resnet18 --size 32 --batch 8 \\
        --dtype float32 --small-images --warmup 1 --steps 2                # a CPU smoke run
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

import keras_byol  # noqa: E402
from keras_byol.backends.jax import _run_stateless  # noqa: E402


def build(args):
    """A compiled BYOL model and its state (trainable, non-trainable, optimizer, metrics)."""
    keras.config.set_dtype_policy(args.dtype)
    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    encoder = keras_byol.encoders.resnet(args.arch, shape, small_images=args.small_images)
    tau = keras_byol.schedules.CosineTargetDecay(0.996, total_steps=args.warmup + args.steps)
    augmenter = None
    if args.views == "device":
        views = keras_byol.views
        augmenter = views.TwoViewAugmenter(views.BYOL_VIEW1, views.BYOL_VIEW2, args.size, seed=0)
    model = keras_byol.BYOL(
        encoder, target_decay=tau, concat_views=args.concat_views, augmenter=augmenter
    )
    if args.optimizer == "lars":
        optimizer = keras_byol.optimizers.LARS(learning_rate=0.2 * args.batch / 256)
    else:
        optimizer = keras.optimizers.SGD(0.06, momentum=0.9)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)
    state = tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            optimizer.variables,
            model.metrics_variables,
        )
    )
    return model, state


def time_steps(step, state, data, warmup, steps):
    """(seconds per step over `steps` after `warmup`, compile+warm-up seconds, final state)."""
    start = time.perf_counter()
    for _ in range(warmup):
        _, state = step(state, data)
    jax.block_until_ready(state)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        logs, state = step(state, data)
    jax.block_until_ready((logs, state))
    return (time.perf_counter() - start) / steps, warm, state, logs


def polyak_seconds(model, state, repeats=20):
    """Seconds per jitted Polyak update alone on the model's variables."""
    trainable, non_trainable = state[0], state[1]
    variables = model.trainable_variables + model.non_trainable_variables

    @jax.jit
    def update(trainable, non_trainable):
        _, values = _run_stateless(
            variables, list(trainable) + list(non_trainable), lambda: model.polyak_update(0.99)
        )
        return values[len(trainable) :]

    non_trainable = jax.block_until_ready(update(trainable, non_trainable))
    start = time.perf_counter()
    for _ in range(repeats):
        non_trainable = update(trainable, non_trainable)
    jax.block_until_ready(non_trainable)
    return (time.perf_counter() - start) / repeats


def views_seconds(model, state, images, repeats=10):
    """Seconds per jitted call of the model's augmenter alone on `images` (its seeds
    threaded statelessly, as in the step)."""
    variables = model.non_trainable_variables

    @jax.jit
    def make(non_trainable, images):
        result, values = _run_stateless(variables, non_trainable, lambda: model.augmenter(images))
        return result, values

    non_trainable = state[1]
    views, non_trainable = jax.block_until_ready(make(non_trainable, images))
    start = time.perf_counter()
    for _ in range(repeats):
        views, non_trainable = make(non_trainable, images)
    jax.block_until_ready(views)
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", default="mixed_bfloat16", help="a Keras dtype policy")
    parser.add_argument("--optimizer", default="lars", choices=["lars", "sgd"])
    parser.add_argument("--small-images", action="store_true", help="CIFAR-style stem")
    parser.add_argument(
        "--concat-views", action="store_true", help="one pass over both views (BYOL option)"
    )
    parser.add_argument(
        "--views",
        default="precomputed",
        choices=["precomputed", "device"],
        help="precomputed: random float views on the device; device: made in the step "
        "from uint8 images",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")

    model, state = build(args)
    shape = (args.batch, args.size, args.size, 3)
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    if args.views == "device":
        side = keras_byol.image_batches.source_size(args.size)
        images = jax.random.randint(key1, (args.batch, side, side, 3), 0, 256).astype("uint8")
        data = {"images": images}
    else:
        data = {"view1": jax.random.uniform(key1, shape), "view2": jax.random.uniform(key2, shape)}
    step = jax.jit(lambda state, data: model.train_step(state, data), donate_argnums=0)
    seconds, warm, state, logs = time_steps(step, state, data, args.warmup, args.steps)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    result = {"what": "train_step", "impl": "keras_byol", "backend": "jax", **vars(args)}
    result.update(
        images_per_s=round(args.batch / seconds, 1),
        ms_per_step=round(1e3 * seconds, 2),
        compile_and_warmup_s=round(warm, 1),
        loss=round(float(np.asarray(logs["loss"])), 4),
        peak_device_memory_gib=round(stats["peak_bytes_in_use"] / 2**30, 2)
        if "peak_bytes_in_use" in stats
        else None,
        device_memory_limit_gib=round(stats["bytes_limit"] / 2**30, 2)
        if "bytes_limit" in stats
        else None,
        device=str(device.device_kind),
        machine=describe(jax=jax.__version__, keras=keras.__version__),
    )
    print(json.dumps(result), flush=True)
    update = polyak_seconds(model, state)
    share = {"what": "polyak_update_share_of_step", "arch": args.arch, "batch": args.batch}
    share.update(ms_per_update=round(1e3 * update, 3), ms_per_step=round(1e3 * seconds, 2))
    share.update(share=round(update / seconds, 5), device=str(device.device_kind))
    print(json.dumps(share), flush=True)
    if args.views == "device":
        made = views_seconds(model, state, data["images"])
        share = {"what": "views_share_of_step", "arch": args.arch, "batch": args.batch}
        share.update(size=args.size, ms_per_views=round(1e3 * made, 2))
        share.update(ms_per_step=round(1e3 * seconds, 2), share=round(made / seconds, 4))
        share.update(views_images_per_s=round(args.batch / made, 1), device=str(device.device_kind))
        print(json.dumps(share), flush=True)


if __name__ == "__main__":
    main()

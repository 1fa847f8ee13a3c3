"""BYOL train-step throughput on this machine: keras_byol (TF, TF+XLA, JAX) beside the peer.

ResNet-18 with the small-image stem, 32 px, batch 128, float32, heads 512→4096→256 and
256→4096→256, SGD(0.06, momentum 0.9) as in the peer (lightly's BYOL example), random
views made once. One image = one source image seen as two views. Each variant runs in its
own process (Keras fixes the backend per process) and prints one JSON line; the peer
(`../shared/bench/peer_lightly.py --what train`) runs in the same invocation when
`--peer-python` points at an interpreter that has torch and lightly.

    python benchmarks/train_step.py --peer-python /tmp/peer/bin/python
    python benchmarks/train_step.py --variants tensorflow --repeats 3 --peer-python ...

--repeats N runs the variants and the peer N times in turn and prints each ratio's
minimum and median: on this shared machine either side moves by ~10% between runs.
--steps-per-execution N compiles N steps into one call (Keras' `steps_per_execution`);
--warmup and --steps then count calls of N steps each.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

PEER = ROOT.parent / "shared" / "bench" / "peer_lightly.py"
VARIANTS = {  # name → (KERAS_BACKEND, jit_compile, dtype policy, BYOL concat_views)
    "tensorflow": ("tensorflow", False, "float32", False),
    "tensorflow_concat": ("tensorflow", False, "float32", True),
    "tensorflow_xla": ("tensorflow", True, "float32", False),
    "jax": ("jax", True, "float32", False),
    "jax_concat": ("jax", True, "float32", True),
    "tensorflow_bf16": ("tensorflow", False, "mixed_bfloat16", False),
}
FP32_VARIANTS = "tensorflow,tensorflow_xla,jax"


def run_variant(
    name, batch, size, warmup, steps, steps_per_execution=1, accumulation_steps=1, remat=False,
    arch="resnet18",
):  # fmt: skip
    """Times `steps` calls of `steps_per_execution` batches after `warmup` untimed calls;
    returns one result dict. accumulation_steps N > 1: SGD accumulates N batches per
    applied step (each call then covers N× the batches); remat: `BYOL(remat=True)` (each
    view's online encoder pass recomputed in the backward pass)."""
    import keras

    import keras_byol

    _, jit_compile, policy, concat_views = VARIANTS[name]
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    encoder = keras_byol.encoders.resnet(arch, (size, size, 3), small_images=size <= 64)
    model = keras_byol.BYOL(
        encoder, projection_dim=256, hidden_dim=4096, concat_views=concat_views, remat=remat
    )
    extra = {"gradient_accumulation_steps": accumulation_steps} if accumulation_steps > 1 else {}
    model.compile(
        optimizer=keras.optimizers.SGD(0.06, momentum=0.9, **extra),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    rng = np.random.default_rng(0)
    shape = (batch, size, size, 3)
    view1, view2 = (rng.random(shape, dtype=np.float32) for _ in range(2))
    # Under accumulation an applied step takes N batches: warm up and time N× the calls.
    warmup, steps = warmup * accumulation_steps, steps * accumulation_steps
    total = (warmup + steps) * steps_per_execution
    views = {"view1": np.concatenate([view1] * total), "view2": np.concatenate([view2] * total)}

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    timer = StepTimes()
    history = model.fit(
        views, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer]
    )
    # Keras calls batch callbacks once per call of steps_per_execution steps.
    durations = np.diff(timer.times)[warmup:] / steps_per_execution
    return {
        "impl": "keras_byol",
        "variant": name,
        "backend": keras.backend.backend(),
        "jit_compile": jit_compile,
        "dtype_policy": policy,
        "concat_views": model.concat_views,
        "what": "train_step",
        "arch": arch,
        "accumulation_steps": accumulation_steps,
        "remat": remat,
        "size": size,
        "batch": batch,
        "images_per_s": round(batch * len(durations) / float(np.sum(durations)), 2),
        "ms_per_step_median": round(1e3 * float(np.median(durations)), 1),
        "ms_per_step_min": round(1e3 * float(np.min(durations)), 1),
        "first_step_s_incl_compile": round(float(timer.times[1] - timer.times[0]), 1),
        "warmup_steps": warmup * steps_per_execution,
        "timed_steps": steps * steps_per_execution,
        "steps_per_execution": steps_per_execution,
        "final_loss": round(float(history.history["loss"][-1]), 4),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "keras": keras.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=FP32_VARIANTS, help=f"any of {list(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="variants+peer rounds")
    parser.add_argument("--steps-per-execution", type=int, default=1, help="steps per call")
    parser.add_argument("--peer-python", default="", help="python with torch + lightly")
    parser.add_argument("--accumulation-steps", type=int, default=1, help="batches per step")
    parser.add_argument("--remat", action="store_true", help="BYOL(remat=True)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = run_variant(
            args.worker, args.batch, args.size, args.warmup, args.steps, args.steps_per_execution,
            args.accumulation_steps, args.remat, args.arch,
        )  # fmt: skip
        print(json.dumps({**result, "machine": describe()}), flush=True)
        return

    all_ratios = {}
    for _ in range(args.repeats):
        for name, ratio in run_once(args).items():
            all_ratios.setdefault(name, []).append(ratio)
    if args.repeats > 1 and all_ratios:
        summary = {
            name: {"ratios": r, "min": min(r), "median": float(np.median(r))}
            for name, r in all_ratios.items()
        }
        print(json.dumps({"what": "train_step_ratio_summary", "variants": summary}), flush=True)


def run_worker(name, args):
    """`run_variant` in a fresh process (Keras fixes its backend per process)."""
    command = [sys.executable, __file__, "--worker", name, "--batch", str(args.batch)]
    command += ["--size", str(args.size), "--warmup", str(args.warmup)]
    command += ["--steps", str(args.steps), "--steps-per-execution", str(args.steps_per_execution)]
    command += ["--accumulation-steps", str(getattr(args, "accumulation_steps", 1))]
    command += ["--arch", getattr(args, "arch", "resnet18")]
    command += ["--remat"] if getattr(args, "remat", False) else []
    env = {
        **os.environ,
        "KERAS_BACKEND": VARIANTS[name][0],
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_once(args):
    """Every variant, then the peer; prints their lines; returns {variant: × peer}."""
    results = {}
    for name in args.variants.split(","):
        results[name] = run_worker(name, args)
        print(json.dumps(results[name]), flush=True)
    if not args.peer_python:
        return {}
    command = [
        args.peer_python,
        str(PEER),
        "--what",
        "train",
        "--arch",
        "resnet18",
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
    ]
    peer = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    peer.pop("step_ms", None)
    print(json.dumps({**peer, "machine": describe()}), flush=True)
    ratios = {
        name: round(r["images_per_s"] / peer["images_per_s"], 3) for name, r in results.items()
    }
    print(
        json.dumps(
            {
                "what": "train_step_ratio_vs_peer",
                "ratios": ratios,
                "peer_images_per_s": peer["images_per_s"],
                "machine": describe(),
            }
        ),
        flush=True,
    )
    return ratios


if __name__ == "__main__":
    main()

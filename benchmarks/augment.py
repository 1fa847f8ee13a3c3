"""Views throughput: keras_byol's tf.data pipeline beside lightly's BYOL transforms, one run.

One image = one uint8 source image turned into both views (the paper's view 1 and view 2).
Sizes: 32 px from 32×32 sources and 224 px from 256×256 sources, batch 128, 256 distinct
random sources held in memory (as the peer's --pool). The peer
(`../shared/bench/peer_lightly.py --what augment`, a PyTorch DataLoader with 2 workers)
runs when --peer-python points at an interpreter with torch and lightly; --repeats N
alternates N keras_byol/peer pairs per size and prints the ratios' minimum and median
(the shared 2-core machine moves both sides by tens of percent between runs).

    python benchmarks/augment.py --repeats 3 --peer-python /tmp/peer/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from keras_byol import data  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

PEER = ROOT.parent / "shared" / "bench" / "peer_lightly.py"
SOURCE_SIZE = {32: 32, 224: 256}


def measure(size, batch, batches, warmup):
    source = SOURCE_SIZE[size]
    images = np.random.default_rng(0).integers(0, 256, (256, source, source, 3), dtype=np.uint8)
    ds = data.pretrain_dataset(images, batch_size=batch, image_size=size, seed=0, repeat=True)
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        views = next(iterator)
    elapsed = time.perf_counter() - start
    assert views["view1"].shape == (batch, size, size, 3)
    return {
        "impl": "keras_byol",
        "what": "augment",
        "size": size,
        "source_size": source,
        "batch": batch,
        "images_per_s": round(batch * batches / elapsed, 1),
        "timed_batches": batches,
        "machine": describe(tensorflow=tf.__version__),
    }


def run_peer(python, size, batch, batches):
    command = [
        python,
        str(PEER),
        "--what",
        "augment",
        "--size",
        str(size),
        "--batch",
        str(batch),
        "--workers",
        "2",
        "--aug-batches",
        str(batches),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="ours/peer pairs per size")
    parser.add_argument("--peer-python", default="")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        ratios = []
        for _ in range(args.repeats):
            ours = measure(size, args.batch, args.batches, args.warmup)
            print(json.dumps(ours), flush=True)
            if not args.peer_python:
                continue
            peer = run_peer(args.peer_python, size, args.batch, args.batches)
            print(json.dumps(peer), flush=True)
            ratios.append(round(ours["images_per_s"] / peer["images_per_s"], 3))
            print(
                json.dumps({"what": "augment_ratio_vs_peer", "size": size, "ratio": ratios[-1]}),
                flush=True,
            )
        if len(ratios) > 1:
            summary = {"what": "augment_ratio_summary", "size": size, "ratios": ratios}
            summary.update(min=min(ratios), median=float(np.median(ratios)))
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

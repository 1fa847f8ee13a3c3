"""Peak memory of a BYOL train step against the batch size, and the largest batch that fits.

Runs `train_step.py`'s worker (default: ResNet-18 small-image stem, 32 px, fp32, SGD;
TensorFlow backend) once per batch size in its own process and reads the process's peak
resident memory. Fits peak = a + b·batch over the runs and prints the batch at which the
fit reaches this machine's available memory (an estimate: check it by running that batch;
a worker killed for memory prints a "failed" line). Prints JSON lines.

--accumulation-steps N runs each batch size as N accumulated batches per optimizer step
(the effective batch is N× larger; memory follows the batch, plus one gradient-sized
accumulator); --remat trains `BYOL(remat=True)`; --arch and
--size choose the network (e.g. resnet50 at 224 px for the ImageNet recipe).

    python benchmarks/memory.py --batches 128,256,512,1024
    python benchmarks/memory.py --batches 128,256 --accumulation-steps 4
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402
from train_step import VARIANTS, run_worker  # noqa: E402


def available_mb():
    """MemAvailable of /proc/meminfo in MiB (Linux)."""
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) // 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tensorflow", help=f"one of {list(VARIANTS)}")
    parser.add_argument("--batches", default="128,256,512,1024")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--accumulation-steps", type=int, default=1)
    parser.add_argument("--remat", action="store_true")
    args = parser.parse_args()
    available = available_mb()
    batches, peaks = [], []
    for batch in (int(b) for b in args.batches.split(",")):
        line = {"what": "train_step_memory", "variant": args.variant, "arch": args.arch}
        line.update(size=args.size, accumulation_steps=args.accumulation_steps, remat=args.remat)
        worker = argparse.Namespace(
            batch=batch, size=args.size, warmup=1, steps=1, steps_per_execution=1,
            accumulation_steps=args.accumulation_steps, remat=args.remat, arch=args.arch,
        )  # fmt: skip
        try:
            result = run_worker(args.variant, worker)
        except subprocess.CalledProcessError as error:  # e.g. SIGKILL from the OOM killer
            print(json.dumps({**line, "batch": batch, "failed": str(error)}), flush=True)
            continue
        batches.append(batch)
        peaks.append(result["max_rss_mb"])
        line.update(batch=batch, effective_batch=batch * args.accumulation_steps)
        line.update(max_rss_mb=peaks[-1], images_per_s=result["images_per_s"])
        print(json.dumps(line), flush=True)
    if len(batches) < 2:
        return
    per_image, fixed = np.polyfit(batches, peaks, 1)
    summary = {
        "what": "train_step_memory_fit",
        "variant": args.variant,
        "arch": args.arch,
        "size": args.size,
        "accumulation_steps": args.accumulation_steps,
        "remat": args.remat,
        "fixed_mb": round(float(fixed)),
        "mb_per_image": round(float(per_image), 2),
        "available_mb_at_start": available,
        "largest_batch_by_fit": int((available - fixed) // per_image),
        "largest_batch_run": max(batches),
        "machine": describe(),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

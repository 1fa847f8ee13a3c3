"""Runs the quality peer (../shared/bench/peer_quality_mnist.py) unchanged with another seed.

The peer seeds everything with `torch.manual_seed(0)`; this wrapper adds SEED to every
seed it sets, so seed 0 is the peer as published and seeds 1, 2, … are independent runs
of the same protocol (the 4,000 / 1,000 split is numpy's and stays fixed). Needs the
peer's interpreter (torch + lightly):

    SEED=1 EPOCHS=15 /tmp/peer/bin/python benchmarks/peer_quality_seeded.py
"""

import os
import runpy
from pathlib import Path

import torch

PEER = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer_quality_mnist.py"
OFFSET = int(os.environ.get("SEED", 0))
_manual_seed = torch.manual_seed


def _offset_seed(seed):
    return _manual_seed(seed + OFFSET)


torch.manual_seed = _offset_seed
runpy.run_path(str(PEER), run_name="__main__")

"""MultiWorkerMirroredStrategy with two real worker processes on 127.0.0.1 (TF_CONFIG).

1. Both workers train the smoke setting from scratch, each with its own workdir: their final
   weights agree, the chief's workdir holds checkpoint, export and logs, the other's is
   empty; run again, the worker that cannot see the chief's checkpoint makes both stop.
2. The CLI on one shared workdir (steps_per_execution=3): after the first checkpoint one
   worker is killed (SIGKILL), then the other; restarted, both resume from the checkpoint
   and finish the run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [f"--flagfile={ROOT / 'configs' / 'smoke.cfg'}", "--strategy=multi_worker"]

_WORKER = """
import sys
import numpy as np
from keras_byol import experiment
from keras_byol.config import PretrainConfig

config = PretrainConfig(
    image_size=16, projection_dim=16, hidden_dim=64, epochs=2, steps_per_epoch=3,
    batch_size=32, eval_epochs=2, shuffle_buffer=512, strategy="multi_worker")
result = experiment.pretrain(config, sys.argv[1])
np.save(sys.argv[2], np.concatenate([np.ravel(w) for w in result["model"].get_weights()]))
print("steps_done", result["steps_done"], "export_dir", result["export_dir"])
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(commands, log_dir, tag):
    """Starts one process per command, worker i with TF_CONFIG task index i."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(len(commands))]
    processes = []
    for index, command in enumerate(commands):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        log = open(log_dir / f"{tag}_worker{index}.log", "w")
        processes.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    return processes


def _wait(processes, log_dir, tag, timeout=600, check=True):
    deadline = time.time() + timeout
    outputs = []
    for index, process in enumerate(processes):
        try:
            process.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        outputs.append((log_dir / f"{tag}_worker{index}.log").read_text())
        assert process.returncode == 0 or not check, outputs[-1][-4000:]
    return outputs


@pytest.mark.slow
def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    workdirs = [tmp_path / "chief_workdir", tmp_path / "worker1_workdir"]
    commands = [
        [sys.executable, "-c", _WORKER, str(workdirs[i]), str(tmp_path / f"weights{i}.npy")]
        for i in range(2)
    ]
    outputs = _wait(_start_workers(commands, tmp_path, "fresh"), tmp_path, "fresh")
    assert "steps_done 6 export_dir" in outputs[0] and "steps_done 6 export_dir None" in outputs[1]
    chief_weights, worker_weights = (np.load(tmp_path / f"weights{i}.npy") for i in range(2))
    assert chief_weights.shape == worker_weights.shape and chief_weights.size > 10_000
    np.testing.assert_allclose(chief_weights, worker_weights, rtol=0, atol=1e-6)
    chief_files = {p.name for p in workdirs[0].iterdir()}
    assert {"checkpoint", "encoder", "byol.keras", "config.json", "logs"} <= chief_files
    assert not workdirs[1].exists()  # the non-chief wrote nothing, not even the folder

    # Run again: the chief sees its checkpoint (step 6), worker 1 none (step 0). Both stop
    # with the same clear error instead of training two different models.
    outputs = _wait(_start_workers(commands, tmp_path, "again"), tmp_path, "again", check=False)
    for output in outputs:
        assert "cannot see the checkpoint" in output and "--workdir must be storage" in output


@pytest.mark.slow
def test_killed_workers_resume_from_the_chief_checkpoint(tmp_path):
    workdir = tmp_path / "shared_workdir"
    command = [sys.executable, "-m", "keras_byol.train", *SMOKE, f"--workdir={workdir}"]
    command += ["--epochs=3", "--noevaluate", "--steps_per_execution=3"]
    processes = _start_workers([command, command], tmp_path, "first")
    checkpoint = workdir / "checkpoint" / "byol.keras"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        assert all(p.poll() is None for p in processes), "a worker exited before checkpointing"
        time.sleep(0.2)
    assert checkpoint.exists(), "no checkpoint within 300 s"
    os.kill(processes[1].pid, signal.SIGKILL)  # one worker dies ...
    time.sleep(1)
    os.kill(processes[0].pid, signal.SIGKILL)  # ... and the job is restarted on both
    for p in processes:
        p.wait(timeout=60)
    first_log = (tmp_path / "first_worker0.log").read_text()
    assert "Done:" not in first_log  # it was really interrupted

    outputs = _wait(_start_workers([command, command], tmp_path, "second"), tmp_path, "second")
    for output in outputs:
        resumed = [line for line in output.splitlines() if line.startswith("Resuming from")]
        assert resumed, output[-3000:]
        step = int(resumed[0].rsplit("step ", 1)[1].rstrip("."))
        assert 3 <= step < 9 and step % 3 == 0, resumed
        assert "Done: 9 steps" in output, output[-3000:]
    assert "encoder exported to" in outputs[0]
    assert "the chief writes the workdir" in outputs[1]

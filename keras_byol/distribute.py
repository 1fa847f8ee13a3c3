"""The training job's `tf.distribute` strategies: default, mirrored, multi_worker and tpu.

Each strategy is TensorFlow's own; this module only builds it from a name and checks what it
needs first (TF_CONFIG for multi_worker, a reachable TPU for tpu), so that a bad setting ends
with a clear message before any training starts.

multi_worker must be created before TensorFlow runs any op in the process (TensorFlow's
rule for collective ops): `experiment.pretrain` makes the strategy first.
"""

import json
import os
import socket
import threading
from urllib.parse import urlparse

import numpy as np

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def parse_tf_config(environ=None):
    """The validated TF_CONFIG of this worker.

    Returns:
        dict with "cluster" ({job: ["host:port", ...]}) and "task" ({"type", "index"}).

    Raises:
        ValueError: TF_CONFIG is missing, not JSON, or does not name this worker's task in
            its cluster; the message shows a valid example.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "")

    def fail(problem):
        raise ValueError(
            f"--strategy=multi_worker needs a valid TF_CONFIG environment variable on every "
            f"worker ({problem}). Set it, e.g. {_TF_CONFIG_EXAMPLE} on the first worker and "
            "index 1 on the second, or drop --strategy=multi_worker."
        )

    if not text.strip():
        fail("TF_CONFIG is not set")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"TF_CONFIG is not JSON: {error}")
    if not isinstance(tf_config, dict):
        fail("TF_CONFIG must be a JSON object")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not any(
        isinstance(cluster.get(job), list) and cluster.get(job) for job in ("chief", "worker")
    ):
        fail('its "cluster" lists no "worker" or "chief" addresses')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and ":" in a for a in addresses
        ):
            fail(f'cluster["{job}"] must be a list of "host:port" strings; got {addresses!r}')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        fail(f'its "task" must name a job of the cluster ({sorted(cluster)}); got {task!r}')
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        fail(
            f'task index {index!r} is not a position in cluster["{task["type"]}"] '
            f"(0..{len(cluster[task['type']]) - 1})"
        )
    return tf_config


def _check_tpu_answers(address, timeout):
    """Raises ValueError when a grpc://host:port address does not accept a connection."""
    parsed = urlparse(address)
    if parsed.scheme != "grpc" or not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as error:
        raise ValueError(_no_tpu(address, f"{error}")) from None


def _no_tpu(address, why):
    where = address or "the default address (Colab/Cloud TPU VM)"
    return (
        f"no TPU at {where}; drop --strategy=tpu to train on this machine's devices, or pass "
        "--tpu=NAME_OR_grpc://IP:8470 of a running TPU (on a Cloud TPU VM or in a Colab TPU "
        f"runtime, leave --tpu empty). What failed: {why}"
    )


def connect_tpu(address="", timeout=300.0):
    """Resolves, connects to and initializes the TPU system at `address`.

    Args:
        address: a TPU name, "grpc://IP:PORT", "local", or "" for the runtime's default.
        timeout: seconds to wait for the address to accept a connection, and then for the
            TPU system to connect and initialize (a port that accepts TCP but is no TPU
            would otherwise hang in TensorFlow's connect forever).

    Returns:
        the `TPUClusterResolver`.

    Raises:
        ValueError: no TPU answers there ("no TPU at ADDRESS; drop --strategy=tpu or ...").
    """
    import tensorflow as tf

    _check_tpu_answers(address, min(timeout, 10.0))
    outcome = {}

    def connect():
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
            if address not in ("", "local"):
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            outcome["resolver"] = resolver
        except (ValueError, OSError, tf.errors.OpError) as error:
            text = str(error).strip()
            outcome["error"] = text.splitlines()[0] if text else repr(error)

    # TensorFlow's connect has no timeout of its own: it runs in a daemon thread, which
    # is left behind (and ends with the process) when it does not return in time.
    thread = threading.Thread(target=connect, name="connect_tpu", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ValueError(_no_tpu(address, f"no answer from a TPU within {timeout:g} s"))
    if "error" in outcome:
        raise ValueError(_no_tpu(address, outcome["error"]))
    return outcome["resolver"]


def make_strategy(name, tpu="", tpu_timeout=300.0):
    """The `tf.distribute.Strategy` called `name` (one of STRATEGIES).

    default: the current (one-device) strategy; mirrored: `MirroredStrategy` over the local
    GPUs or logical CPUs; multi_worker: `MultiWorkerMirroredStrategy` from TF_CONFIG;
    tpu: `TPUStrategy` on the TPU at `tpu` (see `connect_tpu` for `tpu_timeout`).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return tf.distribute.TPUStrategy(connect_tpu(tpu, tpu_timeout))
    raise ValueError(f"strategy must be one of {STRATEGIES}; got {name!r}.")


def is_chief(strategy):
    """Whether this process writes checkpoints, logs and exports (one writer per cluster)."""
    return bool(strategy.extended.should_checkpoint)


def gather_from_workers(strategy, values):
    """(replicas, len(values)) int64: `values` as every replica of every worker has them.

    One all-gather under a multi-worker strategy (every worker must call it); elsewhere the
    local values, one row.
    """
    import tensorflow as tf

    if not across_workers(strategy):
        return np.asarray([values], np.int64)
    per_replica = strategy.run(lambda: tf.constant([values], tf.int64))
    return strategy.gather(per_replica, axis=0).numpy()


def check_workers_see_the_same_checkpoint(strategy, checkpoint_path):
    """Raises ValueError unless every worker sees the same checkpoint file (or none).

    Under a multi-worker strategy each worker reads the chief's checkpoint from the shared
    workdir; a worker that cannot see it would build a fresh model while the others load
    one, and the first collective op would fail with a shape mismatch. Call it before any
    variable exists (every worker must call it).
    """
    exists = os.path.exists(checkpoint_path)
    size = os.path.getsize(checkpoint_path) if exists else -1
    seen = gather_from_workers(strategy, [size])
    if np.any(seen != seen[0]):
        mine = f"{size} bytes" if exists else "none"
        raise ValueError(
            f"The workers do not see the same checkpoint {checkpoint_path!r} (this one: "
            f"{mine}); some cannot see the checkpoint. The --workdir must be storage that "
            "every worker reads and the chief writes (a shared file system, e.g. NFS or gcsfuse)."
        )


def across_workers(strategy):
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy)."""
    import tensorflow as tf

    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )

"""The training job's strategy choices: TF_CONFIG validation and TPU errors (no TPU here)."""

import json
import socket

import pytest

from keras_byol import distribute

VALID = {
    "cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]},
    "task": {"type": "worker", "index": 1},
}


def test_a_valid_tf_config_is_returned():
    assert distribute.parse_tf_config({"TF_CONFIG": json.dumps(VALID)}) == VALID
    with_chief = {
        "cluster": {"chief": ["a:1"], "worker": ["b:1"]},
        "task": {"type": "chief", "index": 0},
    }
    assert distribute.parse_tf_config({"TF_CONFIG": json.dumps(with_chief)}) == with_chief


@pytest.mark.parametrize(
    "tf_config,problem",
    [
        (None, "TF_CONFIG is not set"),
        ("{cluster: worker}", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}), 'no "worker"'),
        (json.dumps({**VALID, "cluster": {"worker": ["no-port"]}}), "host:port"),
        (json.dumps({**VALID, "task": {"type": "ps", "index": 0}}), "must name a job"),
        (json.dumps({**VALID, "task": {"type": "worker", "index": 2}}), "task index 2"),
        (json.dumps({**VALID, "task": {"type": "worker"}}), "task index None"),
    ],
)
def test_a_bad_tf_config_names_the_problem_and_the_fix(tf_config, problem):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ValueError) as error:
        distribute.parse_tf_config(environ)
    message = str(error.value)
    assert problem in message
    assert "--strategy=multi_worker" in message and '"task"' in message  # the example


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address,where",
    [
        (f"grpc://127.0.0.1:{_closed_port()}", "no TPU at grpc://127.0.0.1:"),
        ("", "no TPU at the default address"),
        ("local", "no TPU at local"),
    ],
    ids=["closed_port", "default", "local"],  # (the port differs per collecting process)
)
def test_no_reachable_tpu_is_a_clear_error(address, where):
    with pytest.raises(ValueError) as error:
        distribute.make_strategy("tpu", address)
    assert where in str(error.value) and "drop --strategy=tpu" in str(error.value)


def test_default_and_mirrored_strategies():
    import tensorflow as tf

    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert distribute.is_chief(mirrored) and not distribute.across_workers(mirrored)
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("parameter_server")

"""Official BYOL checkpoints → keras_byol: the Keras networks give the Haiku network's outputs.

The reference is the official network built in Haiku (`official_byol.py`), initialized,
perturbed so that no weight keeps its initial value, its BatchNorm statistics moved by
training-mode passes, and written as the official `Checkpointer` writes (a dill pickle).
"""

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import dill
import jax
import keras
import numpy as np
import pytest

import keras_byol
from keras_byol import pretrained
from keras_byol.heads import MLPHead
from keras_byol.pretrained import OfficialCheckpointError, load_official, read_official

sys.path.insert(0, os.path.dirname(__file__))
import official_byol  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
HEADS = dict(hidden=64, projection=16, classes=10)
# Max |Keras − Haiku| / max |Haiku| allowed, float32 (measured ~1e-6 on this machine).
TOLERANCE = 1e-4


def relative_difference(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A ResNet-50 ×1 BYOL in Haiku (small heads), its checkpoint, and its outputs."""
    network = official_byol.official_network("resnet50", 1, **HEADS)
    rng = np.random.default_rng(0)
    batch = rng.random((4, SIZE, SIZE, 3), dtype=np.float32)
    online = official_byol.trained_looking(network, batch, seed=0)
    target = official_byol.trained_looking(network, batch, seed=1, start=online)
    folder = tmp_path_factory.mktemp("official")
    # The published files were written by the Haiku of 2020, whose params were frozendicts.
    path = official_byol.write_official_checkpoint(
        folder / "pretrain_res50x1.pkl", online, target, container="frozendict"
    )
    images = rng.random((3, SIZE, SIZE, 3), dtype=np.float32)
    expected = {
        name: official_byol.forward(network, *pair, images)
        for name, pair in (("online", online), ("target", target))
    }
    return types.SimpleNamespace(
        path=path, folder=folder, online=online, target=target, images=images, expected=expected
    )


def assert_byol_gives_haiku_outputs(model, official):
    images = official.images
    online, target = official.expected["online"], official.expected["target"]
    features = model.encoder(images, training=False)
    projection = model.projector(features, training=False)
    differences = {
        "embedding": relative_difference(features, online["embedding"]),
        "projection": relative_difference(projection, online["projection"]),
        "prediction": relative_difference(
            model.predictor(projection, training=False), online["prediction"]
        ),
        "logits": relative_difference(model.probe(features), online["logits"]),
    }
    target_features = model.target_encoder(images, training=False)
    differences["target embedding"] = relative_difference(target_features, target["embedding"])
    differences["target projection"] = relative_difference(
        model.target_projector(target_features, training=False), target["projection"]
    )
    assert max(differences.values()) < TOLERANCE, differences
    return differences


@pytest.mark.slow
def test_official_resnet50_and_heads_give_the_haiku_outputs(official):
    model = load_official(official.path, image_size=SIZE)
    assert isinstance(model, keras_byol.BYOL)
    assert model.encoder.name == "resnet50" and model.head_output_bias is False
    assert (model.projection_dim, model.hidden_dim, model.num_classes) == (16, 64, 10)
    assert_byol_gives_haiku_outputs(model, official)
    # The moving statistics come from the file (what inference mode normalizes with).
    params, state = official.online
    stem = state["res_net50/~/initial_batchnorm/~/var_ema"]["average"]
    np.testing.assert_array_equal(
        model.encoder.get_layer("stem_norm").moving_variance, stem[0, 0, 0]
    )
    # Every encoder parameter and moving statistic of the file, and nothing else.
    resnet = [
        leaf.size
        for tree in (params, {k: {"average": v["average"]} for k, v in state.items()})
        for module, leaves in tree.items()
        if module.startswith("res_net50/")
        for leaf in leaves.values()
    ]
    assert model.encoder.count_params() == sum(resnet)


@pytest.mark.parametrize("network", ["online", "target"])
def test_either_encoder_alone(official, network):
    encoder = load_official(official.path, include_heads=False, network=network, image_size=SIZE)
    assert isinstance(encoder, keras.Model) and encoder.name == "resnet50"
    features = encoder(official.images, training=False)
    expected = official.expected[network]["embedding"]
    assert relative_difference(features, expected) < TOLERANCE
    other = official.expected["target" if network == "online" else "online"]["embedding"]
    assert relative_difference(features, other) > 1e-2  # the two networks differ


@pytest.mark.parametrize("container", ["dict", "FlatMap"])
def test_haiku_containers_of_later_versions_read_the_same(official, container, tmp_path):
    path = official_byol.write_official_checkpoint(
        tmp_path / "checkpoint.pkl", official.online, official.target, container=container
    )
    later, published = read_official(path), read_official(official.path)
    assert later.step == published.step == 1234
    for field in ("online_params", "target_params", "online_state", "target_state"):
        first = jax.tree_util.tree_leaves_with_path(getattr(later, field))
        second = jax.tree_util.tree_leaves_with_path(getattr(published, field))
        assert [path for path, _ in first] == [path for path, _ in second]
        for (_, x), (_, y) in zip(first, second):
            np.testing.assert_array_equal(x, y)


_BLOCKER = """
import sys, numpy as np
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Blocked())
import keras
from keras_byol.pretrained import load_official
assert keras.backend.backend() == {backend!r}
model = load_official(sys.argv[1], image_size={size})
images = np.load(sys.argv[2])
features = model.encoder(images, training=False)
projection = model.projector(features, training=False)
np.savez(sys.argv[3], embedding=np.asarray(features), projection=np.asarray(projection),
         prediction=np.asarray(model.predictor(projection, training=False)),
         target=np.asarray(model.target_encoder(images, training=False)))
"""


def run_blocked(official, tmp_path, backend, blocked):
    np.save(tmp_path / "images.npy", official.images)
    script = _BLOCKER.format(blocked=blocked, backend=backend, size=SIZE)
    result = subprocess.run(
        [sys.executable, "-c", script, str(official.path), str(tmp_path / "images.npy"),
         str(tmp_path / "outputs.npz")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend,
             "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    online, target = official.expected["online"], official.expected["target"]
    for name in ("embedding", "projection", "prediction"):
        assert relative_difference(outputs[name], online[name]) < TOLERANCE, name
    assert relative_difference(outputs["target"], target["embedding"]) < TOLERANCE


def test_loading_needs_neither_haiku_nor_jax_nor_dill(official, tmp_path):
    run_blocked(official, tmp_path, "tensorflow", {"haiku", "jax", "jaxlib", "dill"})


@pytest.mark.slow
def test_loading_on_the_jax_backend_without_tensorflow_haiku_or_dill(official, tmp_path):
    run_blocked(official, tmp_path, "jax", {"tensorflow", "haiku", "dill"})


@pytest.mark.slow
def test_the_converter_writes_what_the_training_job_exports(official, tmp_path):
    import tensorflow as tf

    output = tmp_path / "converted"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    converted = subprocess.run(
        [sys.executable, "-m", "keras_byol.convert", f"--official={official.path}",
         f"--output={output}", f"--image_size={SIZE}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert "resnet50 ×1" in converted.stdout, converted.stdout
    online = official.expected["online"]

    served = tf.saved_model.load(str(output / "encoder"))
    embedding = served.serve(tf.constant(official.images)).numpy()
    assert relative_difference(embedding, online["embedding"]) < TOLERANCE
    pixels = np.round(official.images * 255).astype(np.uint8)
    from_uint8 = served.serve_uint8(tf.constant(pixels)).numpy()
    assert relative_difference(from_uint8, embedding) < 0.05  # 8-bit rounding of the inputs

    model = keras.saving.load_model(output / "byol.keras")
    assert_byol_gives_haiku_outputs(model, official)

    evaluated = subprocess.run(
        [sys.executable, "-m", "keras_byol.evaluate", f"--encoder={output / 'encoder'}",
         "--protocol=knn", "--k=5"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((output / "eval.json").read_text())["knn"]
    assert 0 <= results["top1"] <= 1 and results["train_examples"] > 0


def test_the_converter_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "not_byol.pkl"
    bad.write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    result = subprocess.run(
        [sys.executable, "-m", "keras_byol.convert", f"--official={bad}",
         f"--output={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "not an official BYOL checkpoint" in result.stderr and "'weights'" in result.stderr
    assert not (tmp_path / "out" / "byol.keras").exists()


# ------------------------------------------------------------------------- bad files
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malformed_files_are_refused_with_the_reason(official, tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(Path(official.path).read_bytes()[: 1 << 20])
    marker = tmp_path / "code_ran"
    code = tmp_path / "code.pkl"
    code.write_bytes(pickle.dumps({"experiment_state": _RunsCode(marker)}, protocol=2))
    linear_eval = tmp_path / "linear_eval.pkl"
    Backbone = official_byol._named_tuple("_EvalExperimentState", ("backbone_params",), "byol")
    linear_eval.write_bytes(
        dill.dumps({"experiment_state": Backbone(official.online[0]), "step": 1}, protocol=2)
    )
    cases = {
        garbage: "not an official BYOL checkpoint",
        truncated: "not an official BYOL checkpoint",
        code: "system, which an official BYOL checkpoint does not hold",
        linear_eval: "no 'online_params'",
        tmp_path / "missing.pkl": "No official BYOL checkpoint at",
    }
    for path, message in cases.items():
        with pytest.raises(OfficialCheckpointError, match=message):
            load_official(path)
    assert not marker.exists()


def _edited(checkpoint, edit):
    """The checkpoint with `edit(params)` applied to copies of both networks' params."""
    copies = {}
    for network in ("online", "target"):
        params = {
            module: dict(leaves)
            for module, leaves in getattr(checkpoint, f"{network}_params").items()
        }
        edit(params)
        copies[f"{network}_params"] = params
    return checkpoint._replace(**copies)


def _without_last_block_of_group_2(params):
    for module in [m for m in params if "block_group_2/~/block_5/" in m]:
        del params[module]


def _with_a_fourth_conv(params):
    params["res_net50/~/block_group_0/~/block_0/~/conv_3"] = {"w": np.zeros((1, 1, 64, 64))}


def _without_the_stem_offset(params):
    del params["res_net50/~/initial_batchnorm"]["offset"]


def _with_an_unknown_leaf(params):
    params["projector/linear"]["w_hat"] = params["projector/linear"]["w"]


def _with_a_wrong_shape(params):
    params["projector/linear_1"]["w"] = params["projector/linear_1"]["w"][:-1]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_without_last_block_of_group_2, r"blocks per group \(3, 4, 5, 3\)"),
        (_with_a_fourth_conv, "no place .*block_0/~/conv_3"),
        (_without_the_stem_offset, r"no official value .*stem_norm/beta"),
        (_with_an_unknown_leaf, "projector/linear/w_hat: unknown parameter"),
        (_with_a_wrong_shape, r"projector/linear_1/w has shape \(63, 16\)"),
    ],
    ids=["missing-block", "extra-conv", "missing-offset", "unknown-leaf", "wrong-shape"],
)
def test_a_wrong_architecture_is_an_error_naming_the_parameter(official, edit, message):
    checkpoint = _edited(read_official(official.path), edit)
    with pytest.raises(OfficialCheckpointError, match=message):
        load_official(checkpoint, image_size=SIZE)


def test_target_network_is_for_the_encoder_alone(official):
    with pytest.raises(ValueError, match="network='target' is for include_heads=False"):
        load_official(official.path, network="target")


def test_heads_without_output_bias_round_trip(tmp_path):
    head = MLPHead(8, 4, output_bias=False)
    head.build((None, 6))
    assert [w.path.split("/")[-1] for w in head.out.weights] == ["kernel"]
    assert MLPHead.from_config(head.get_config()).output_bias is False
    encoder = keras_byol.encoders.resnet("resnet18", (16, 16, 3), small_images=True, width=0.25)
    model = keras_byol.BYOL(encoder, projection_dim=4, hidden_dim=8, head_output_bias=False)
    model.save(tmp_path / "byol.keras")
    loaded = keras.saving.load_model(tmp_path / "byol.keras")
    assert loaded.head_output_bias is False and loaded.target_projector.out.bias is None


# ----------------------------------------------------------------- other published sizes
@pytest.mark.slow
def test_official_resnet50_x2_encoder_gives_the_haiku_features():
    network = official_byol.official_network("resnet50", 2, **HEADS)
    rng = np.random.default_rng(1)
    batch = rng.random((2, SIZE, SIZE, 3), dtype=np.float32)
    online = official_byol.trained_looking(network, batch, seed=2)
    (params, state) = online
    checkpoint = pretrained.OfficialCheckpoint(params, params, state, state, step=0)
    encoder = load_official(checkpoint, include_heads=False, image_size=SIZE)
    assert encoder.output.shape[-1] == 4096
    images = rng.random((2, SIZE, SIZE, 3), dtype=np.float32)
    expected = official_byol.forward(network, *online, images)["embedding"]
    assert relative_difference(encoder(images, training=False), expected) < TOLERANCE


@pytest.mark.slow
def test_official_resnet200_x2_maps_every_parameter():
    """The ResNet-200 ×2 of the paper's best result: every Haiku parameter and moving
    statistic has its Keras variable and every Keras variable its value (zeros that take
    no memory stand in for the 250 M weights; the shapes are Haiku's)."""
    network = official_byol.official_network("resnet200", 2, **HEADS)
    image = np.zeros((1, SIZE, SIZE, 3), np.float32)
    shapes = jax.eval_shape(lambda: network.init(jax.random.PRNGKey(0), image, True))
    params, state = jax.tree_util.tree_map(
        lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes
    )
    assert pretrained.official_architecture(params) == {
        "encoder": "resnet200", "width": 2, "projection_dim": 16, "hidden_dim": 64,
        "predictor_hidden_dim": 64, "num_classes": 10,
    }  # fmt: skip
    checkpoint = pretrained.OfficialCheckpoint(params, params, state, state, step=0)
    encoder = load_official(checkpoint, include_heads=False, image_size=SIZE)
    assert encoder.output.shape[-1] == 4096
    resnet = [
        np.prod(s.shape)
        for m, leaves in shapes[0].items()
        if m.startswith("res_net200/")
        for s in leaves.values()
    ]
    statistics = [
        np.prod(v["average"].shape) for m, v in shapes[1].items() if m.startswith("res_net200/")
    ]
    assert encoder.count_params() == sum(resnet) + sum(statistics)


@pytest.mark.slow
def test_pretraining_continues_from_the_official_checkpoint(official):
    model = load_official(official.path, image_size=SIZE)
    model.set_target_decay(keras_byol.schedules.CosineTargetDecay(0.99, total_steps=10))
    model.compile(optimizer=keras_byol.optimizers.LARS(0.1, weight_decay=1e-6))
    target_before = [np.array(w) for w in model.target_weights]
    online_before = [np.array(w) for w in model.online_ema_weights]
    views = np.random.default_rng(3).random((2, 4, SIZE, SIZE, 3), dtype=np.float32)
    logs = model.train_on_batch({"view1": views[0], "view2": views[1]}, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0 < logs["loss"] <= 8  # two terms of 2 − 2cos
    online_after = [np.array(w) for w in model.online_ema_weights]
    # ξ ← τξ + (1 − τ)θ with the updated θ, from the file's target and τ_0 = 0.99.
    for target, old, online in zip(model.target_weights, target_before, online_after):
        np.testing.assert_allclose(target, 0.99 * old + 0.01 * online, rtol=1e-5, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(online_before, online_after))

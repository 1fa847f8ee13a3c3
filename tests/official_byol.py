"""The official BYOL network in Haiku, and checkpoint files in the official layout (tests only).

Built from the facts of deepmind-research `byol/utils/networks.py` and `byol_experiment.py`
(structure and names, not their code): a ResNet v1 torso (`hk.nets.ResNet.BlockGroup`,
bottleneck blocks with a projection shortcut in every group's first block, 7×7 stride-2
`initial_conv` with 'SAME' padding, `initial_batchnorm`, 3×3 stride-2 'SAME' max-pool, mean
over space), the `projector` and `predictor` MLPs (Linear with bias → BatchNorm → ReLU →
Linear without bias) and a `classifier` Linear on the stop-gradient embedding; images in
[0, 1] normalized with the ImageNet mean and std first. BatchNorm: decay 0.9, ε 1e-5.

`write_official_checkpoint` writes what the official `Checkpointer` writes: a dill pickle
(protocol 2) of `{experiment_state, step, rng}`, where `experiment_state` is the
`_ByolExperimentState` named tuple of `byol.byol_experiment` (online/target params and
state, the LARS optimizer state) with NumPy leaves.
"""

import collections

import dill
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from haiku._src import data_structures

# The official encoder classes' block counts (networks.py).
BLOCKS = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet200": (3, 24, 36, 3),
}
_BN = dict(decay_rate=0.9, eps=1e-5, create_scale=True, create_offset=True)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _named_tuple(name, fields, module):
    """A named tuple class that pickles as the official code's (dill saves it by value)."""
    cls = collections.namedtuple(name, fields)
    cls.__module__ = module
    return cls


ExperimentState = _named_tuple(
    "_ByolExperimentState",
    ("online_params", "target_params", "online_state", "target_state", "opt_state"),
    "byol.byol_experiment",
)
AddWeightDecayState = _named_tuple("AddWeightDecayState", (), "byol.utils.optimizers")
ScaleByLarsState = _named_tuple("ScaleByLarsState", ("mu",), "byol.utils.optimizers")
ScaleByScheduleState = _named_tuple("ScaleByScheduleState", ("count",), "optax._src.transform")


class _Torso(hk.Module):
    def __init__(self, blocks_per_group, width, name):
        super().__init__(name=name)
        self.initial_conv = hk.Conv2D(
            64 * width, kernel_shape=7, stride=2, with_bias=False, padding="SAME",
            name="initial_conv",
        )  # fmt: skip
        self.initial_batchnorm = hk.BatchNorm(name="initial_batchnorm", **_BN)
        self.groups = [
            hk.nets.ResNet.BlockGroup(
                channels=width * channels,
                num_blocks=blocks,
                stride=stride,
                bn_config=_BN,
                resnet_v2=False,
                bottleneck=True,
                use_projection=True,
                name=f"block_group_{i}",
            )  # fmt: skip
            for i, (blocks, channels, stride) in enumerate(
                zip(blocks_per_group, (256, 512, 1024, 2048), (1, 2, 2, 2))
            )
        ]

    def __call__(self, images, is_training):
        out = jax.nn.relu(self.initial_batchnorm(self.initial_conv(images), is_training))
        out = hk.max_pool(out, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for group in self.groups:
            out = group(out, is_training, False)
        return jnp.mean(out, axis=(1, 2))


class _MLP(hk.Module):
    def __init__(self, name, hidden_size, output_size):
        super().__init__(name=name)
        self.hidden_size, self.output_size = hidden_size, output_size

    def __call__(self, inputs, is_training):
        out = hk.Linear(self.hidden_size, with_bias=True)(inputs)
        out = jax.nn.relu(hk.BatchNorm(**_BN)(out, is_training=is_training))
        return hk.Linear(self.output_size, with_bias=False)(out)


def official_network(encoder="resnet50", width=1, hidden=4096, projection=256, classes=1000):
    """`hk.transform_with_state` of the official forward: images in [0, 1] →
    {"embedding", "projection", "prediction", "logits"}; apply(..., is_training)."""

    def forward(images, is_training):
        images = (images - jnp.asarray(_MEAN)) / jnp.asarray(_STD)
        depth = encoder.removeprefix("resnet")
        embedding = _Torso(BLOCKS[encoder], width, name=f"res_net{depth}")(images, is_training)
        projection_out = _MLP("projector", hidden, projection)(embedding, is_training)
        prediction = _MLP("predictor", hidden, projection)(projection_out, is_training)
        logits = hk.Linear(classes, name="classifier")(jax.lax.stop_gradient(embedding))
        return {
            "embedding": embedding,
            "projection": projection_out,
            "prediction": prediction,
            "logits": logits,
        }

    return hk.transform_with_state(forward)


def trained_looking(network, images, seed, start=None):
    """Parameters and BatchNorm state that look trained: every parameter perturbed (so no
    γ is 1 and no β 0) and the moving statistics moved by training-mode passes, from a
    fresh initialization or from `start` (params, state)."""
    apply = jax.jit(network.apply, static_argnums=4)
    init = jax.jit(network.init, static_argnums=2)
    params, state = start or init(jax.random.PRNGKey(seed), images, True)
    noise = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * noise.standard_normal(p.shape).astype(p.dtype), params
    )
    for shift in (0.3, -0.1):
        _, state = apply(params, state, None, images + shift, True)
    return to_numpy(params), to_numpy(state)


def forward(network, params, state, images):
    """The official network in inference mode (BatchNorm on its moving averages)."""
    outputs, _ = jax.jit(network.apply, static_argnums=4)(params, state, None, images, False)
    return to_numpy(outputs)


def to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def haiku_container(tree, kind):
    """The params/state mapping as Haiku has stored it over its versions: plain dicts
    (today), `frozendict` (2020, the published checkpoints' Haiku) or `FlatMap`."""
    if kind == "dict":
        return tree
    make = {"frozendict": data_structures.frozendict, "FlatMap": data_structures.FlatMap}[kind]
    return make({module: make(leaves) for module, leaves in tree.items()})


def write_official_checkpoint(path, online, target, step=1234, container="dict"):
    """Writes `online` and `target` ((params, state) pairs) as the official Checkpointer
    does; the optimizer state is LARS's (weight decay, momentum buffers, schedule)."""
    (online_params, online_state), (target_params, target_state) = online, target
    momentum = jax.tree_util.tree_map(np.zeros_like, online_params)
    state = ExperimentState(
        online_params=haiku_container(online_params, container),
        target_params=haiku_container(target_params, container),
        online_state=haiku_container(online_state, container),
        target_state=haiku_container(target_state, container),
        opt_state=(
            AddWeightDecayState(),
            ScaleByLarsState(mu=haiku_container(momentum, container)),
            ScaleByScheduleState(count=np.asarray(step, np.int32)),
        ),
    )
    with open(path, "wb") as file:
        dill.dump(
            dict(experiment_state=state, step=step, rng=jax.random.PRNGKey(7)), file, protocol=2
        )
    return path

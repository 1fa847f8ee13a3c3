"""The official BYOL checkpoints (deepmind-research `byol/`) loaded into keras_byol models.

The published files (ResNet-50 ×1, ResNet-200 ×2 and the ablation checkpoints) are what the
official `Checkpointer` writes: a dill pickle (protocol 2) of `{experiment_state, step, rng}`,
where `experiment_state` is a named tuple of Haiku params and state (online and target)
and the LARS optimizer state, with NumPy leaves. They are read here with a restricted
unpickler: Haiku, JAX and dill are not needed, and the file can only build the plain
data it should hold (named tuples, mappings, NumPy arrays); anything else it references
is refused by name (a pickle can otherwise run code).

Every official parameter is mapped by name to a Keras variable; one that has no place, or a
Keras variable that gets no value, is an error naming it. Haiku module (under `res_netN/~/`
for the encoder, N the depth) → keras_byol layer:

    initial_conv, initial_batchnorm           → encoder stem_conv, stem_norm
    block_group_g/~/block_b/~/conv_i          → encoder stage{g+1}_block{b+1}_{a,b,c}_conv
    block_group_g/~/block_b/~/batchnorm_i     → encoder stage{g+1}_block{b+1}_{a,b,c}_norm
    block_group_g/~/block_b/~/shortcut_conv   → encoder stage{g+1}_block{b+1}_proj_conv
    block_group_g/~/block_b/~/shortcut_batchnorm → encoder stage{g+1}_block{b+1}_proj_norm
    projector/linear, batch_norm, linear_1    → projector hidden, norm, out (no bias)
    predictor/linear, batch_norm, linear_1    → predictor hidden, norm, out (no bias)
    classifier                                → online_probe (BYOL's num_classes)

Leaves: `w` → kernel (HWIO and (in, out), as Keras), `b` → bias, `scale` → gamma,
`offset` → beta ((1, 1, 1, C) → (C,)); state `…/~/mean_ema` and `…/~/var_ema` → moving_mean
and moving_variance (their `average`). The online network fills BYOL's online encoder,
projector, predictor and probe; the target network its target encoder and projector.
"""

import codecs
import collections
import os
import pickle
import re

import numpy as np

from keras_byol import encoders
from keras_byol.model import BYOL

# Leaf → Keras variable attribute. BatchNorm state: `…/~/mean_ema` and `…/~/var_ema` hold
# `average` (what Haiku normalizes with at inference), `hidden` and `counter`.
_PARAM_LEAVES = {"w": "kernel", "b": "bias", "scale": "gamma", "offset": "beta"}
_STATE_LEAVES = {"mean_ema": "moving_mean", "var_ema": "moving_variance"}
_NETWORKS = ("online", "target")
_ENCODER_MODULE = re.compile(r"^(res_net\d+)/~/(.+)$")
_BLOCK_MODULE = re.compile(
    r"^block_group_(?P<group>\d+)/~/block_(?P<block>\d+)/~/"
    r"(?:(?P<kind>conv|batchnorm)_(?P<position>[012])|shortcut_(?P<shortcut>conv|batchnorm))$"
)
# The heads' sub-layers by attribute (`MLPHead.hidden`, `.norm`, `.out`).
_HEAD_LAYERS = {"linear": "hidden", "batch_norm": "norm", "linear_1": "out"}


class OfficialCheckpointError(ValueError):
    """The file is not an official BYOL checkpoint keras_byol can load (the message says why)."""


OfficialCheckpoint = collections.namedtuple(
    "OfficialCheckpoint",
    ("online_params", "target_params", "online_state", "target_state", "step"),
)
OfficialCheckpoint.__doc__ = """An official checkpoint's networks as plain data.

`*_params` and `*_state`: {Haiku module name: {leaf name: np.ndarray}}; `step`: the
optimizer step it was saved at. The optimizer state and the rng are not kept."""


# ------------------------------------------------------------------------------ reading
def _plain_mapping(*args, **kwargs):
    """Haiku's `frozendict` (2020) and `FlatMapping`/`FlatMap` pickle as (class, (mapping,))."""
    return dict(*args, **kwargs)


def _named_tuple_class(name, fields, module=None, defaults=None):
    """dill saves named tuple classes by value: a fresh class with the same fields."""
    del module
    return collections.namedtuple(name, fields, defaults=defaults, rename=True)


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only named tuples, mappings, tuples/lists and NumPy arrays."""

    _NUMPY = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol 5 pickles
        ("numpy._core.numeric", "_frombuffer"),
    }

    def __init__(self, file):
        super().__init__(file)
        self._array_reconstructors = {
            super(_RestrictedUnpickler, self).find_class(module, "_reconstruct")
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        }
        self._replacements = {
            ("_codecs", "encode"): codecs.encode,  # protocol 2 stores bytes this way
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("haiku._src.data_structures", "frozendict"): _plain_mapping,
            ("haiku._src.data_structures", "FlatMapping"): _plain_mapping,
            ("haiku._src.data_structures", "FlatMap"): _plain_mapping,
            ("dill._dill", "_create_namedtuple"): _named_tuple_class,
            ("dill._dill", "_create_array"): self._array,
            ("jax._src.array", "_reconstruct_array"): self._array,
        }

    def _array(self, reconstruct, args, state, *unused):
        """dill's and JAX's array pickles: NumPy's reconstruction, then its state."""
        if reconstruct not in self._array_reconstructors:
            raise pickle.UnpicklingError(f"an array rebuilt by {reconstruct!r}")
        array = reconstruct(*args)
        array.__setstate__(state)
        return array

    def find_class(self, module, name):
        if (module, name) in self._NUMPY:
            with np.testing.suppress_warnings() as quiet:  # numpy.core's alias warns
                quiet.filter(DeprecationWarning)
                return super().find_class(module, name)
        if (module, name) in self._replacements:
            return self._replacements[(module, name)]
        raise pickle.UnpicklingError(
            f"it references {module}.{name}, which an official BYOL checkpoint does not hold "
            "(only named tuples, mappings and NumPy arrays are loaded: a pickle can run code)"
        )


def _field(container, name):
    if isinstance(container, dict):
        return container[name]
    return getattr(container, name)


def _as_modules(tree, what):
    """{module: {leaf: np.ndarray}} from a Haiku params/state mapping, checked."""
    if not isinstance(tree, dict):
        raise OfficialCheckpointError(f"{what} is a {type(tree).__name__}, not a mapping.")
    modules = {}
    for module, leaves in tree.items():
        if not isinstance(leaves, dict):
            raise OfficialCheckpointError(f"{what}[{module!r}] is not a mapping of arrays.")
        modules[module] = {}
        for leaf, value in leaves.items():
            if isinstance(value, dict):  # BatchNorm state: mean_ema/var_ema hold three arrays
                modules[module][leaf] = {k: np.asarray(v) for k, v in value.items()}
            else:
                modules[module][leaf] = np.asarray(value)
    return modules


def read_official(path):
    """Reads an official BYOL checkpoint file (e.g. `pretrain_res50x1.pkl`).

    Args:
        path: the `.pkl` file the official code (or its published checkpoints) wrote.

    Returns:
        An `OfficialCheckpoint` of plain dicts of NumPy arrays.

    Raises:
        OfficialCheckpointError: the file is missing, truncated, not a pickle, references
            code other than plain data, or lacks the experiment state's fields.
    """
    if not os.path.isfile(path):
        raise OfficialCheckpointError(f"No official BYOL checkpoint at {path!r}.")
    try:
        with open(path, "rb") as file:
            data = _RestrictedUnpickler(file).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise OfficialCheckpointError(
            f"{path} is not an official BYOL checkpoint: {error}."
        ) from error
    if not isinstance(data, dict) or "experiment_state" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise OfficialCheckpointError(
            f"{path} is not an official BYOL checkpoint: it holds {found}, not a dict with "
            "'experiment_state', 'step' and 'rng'."
        )
    state = data["experiment_state"]
    fields = {}
    for network in _NETWORKS:
        for kind in ("params", "state"):
            name = f"{network}_{kind}"
            try:
                tree = _field(state, name)
            except (KeyError, AttributeError):
                raise OfficialCheckpointError(
                    f"{path}: the experiment state has no {name!r} (a linear-evaluation "
                    "checkpoint? Those hold the backbone only; this reads pretraining ones)."
                ) from None
            fields[name] = _as_modules(tree, f"{path}: {name}")
    return OfficialCheckpoint(step=int(np.asarray(data.get("step", -1))), **fields)


# --------------------------------------------------------------------------- the network
def official_architecture(params):
    """The network an official params mapping describes.

    Returns:
        dict(encoder="resnet50", width=1, projection_dim, hidden_dim, predictor_hidden_dim,
        num_classes) — the heads' entries None when the params have none.

    Raises:
        OfficialCheckpointError: no ResNet, blocks that are not a keras_byol architecture,
            or a non-integer width.
    """
    prefixes = {m.group(1) for m in map(_ENCODER_MODULE.match, params) if m}
    if len(prefixes) != 1:
        raise OfficialCheckpointError(
            f"Expected the parameters of one official ResNet ('res_netN/~/…'); found "
            f"{sorted(prefixes) or 'none'}."
        )
    prefix = prefixes.pop()
    blocks = collections.defaultdict(set)
    for module in params:
        match = _ENCODER_MODULE.match(module)
        block = match and _BLOCK_MODULE.match(match.group(2))
        if block:
            blocks[int(block["group"])].add(int(block["block"]))
    per_group = tuple(len(blocks[g]) for g in range(4))
    names = [
        name
        for name, (kind, counts) in encoders.ARCHITECTURES.items()
        if kind == "bottleneck" and counts == per_group
    ]
    if not names or sorted(blocks) != [0, 1, 2, 3]:
        raise OfficialCheckpointError(
            f"{prefix}: blocks per group {per_group} are not a bottleneck ResNet keras_byol "
            "builds (ResNet-50/101/152/200: (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), "
            "(3, 24, 36, 3))."
        )
    name = names[0]
    if prefix != name.replace("resnet", "res_net"):
        raise OfficialCheckpointError(
            f"The module {prefix!r} holds the blocks of a {name}: the file is inconsistent."
        )
    stem = params.get(f"{prefix}/~/initial_conv", {}).get("w")
    if stem is None or stem.ndim != 4 or stem.shape[-1] % 64:
        raise OfficialCheckpointError(
            f"{prefix}/~/initial_conv/w should be a 7×7 kernel with 64·width outputs; got "
            f"{None if stem is None else stem.shape}."
        )

    def width_of(module, axis):
        kernel = params.get(module, {}).get("w")
        return None if kernel is None else int(kernel.shape[axis])

    return {
        "encoder": name,
        "width": stem.shape[-1] // 64,
        "projection_dim": width_of("projector/linear_1", 1),
        "hidden_dim": width_of("projector/linear", 1),
        "predictor_hidden_dim": width_of("predictor/linear", 1),
        "num_classes": width_of("classifier", 1),
    }


def _encoder_layer(module, prefix):
    """The Keras encoder layer of an official module under `prefix/~/` (False: no place)."""
    rest = module[len(prefix) + 3 :]
    if rest in ("initial_conv", "initial_batchnorm"):
        return "stem_conv" if rest == "initial_conv" else "stem_norm"
    block = _BLOCK_MODULE.match(rest)
    if block is None:
        return False  # an encoder module that keras_byol's ResNet has no place for
    part = "proj" if block["shortcut"] else "abc"[int(block["position"])]
    suffix = "conv" if (block["kind"] or block["shortcut"]) == "conv" else "norm"
    return f"stage{int(block['group']) + 1}_block{int(block['block']) + 1}_{part}_{suffix}"


def _head_layer(module, head):
    """The sub-layer name of a projector/predictor module (False: no place for it)."""
    return _HEAD_LAYERS.get(module[len(head) + 1 :], False)


def _networks_of(network_params, architecture, keras_parts):
    """{official module: Keras layer} for the parts asked: keras_parts maps "encoder",
    "projector", "predictor", "classifier" to the Keras layer (or model) to fill."""
    prefix = architecture["encoder"].replace("resnet", "res_net")
    layers, unmapped = {}, []
    for module in network_params:
        if module.startswith(prefix + "/~/"):
            part, name = "encoder", _encoder_layer(module, prefix)
        elif module.startswith(("projector/", "predictor/")):
            part = module.split("/")[0]
            name = _head_layer(module, part)
        elif module == "classifier":
            part, name = "classifier", None
        else:
            part, name = None, False
        if name is False:
            unmapped.append(module)
        elif part in keras_parts:
            target = keras_parts[part]
            if name is None:
                layers[module] = target
            elif part == "encoder":
                layers[module] = target.get_layer(name)
            else:
                layers[module] = getattr(target, name)
    if unmapped:
        raise OfficialCheckpointError(
            f"Official modules with no place in keras_byol's {architecture['encoder']} and "
            f"heads: {unmapped}."
        )
    return layers


def _assign(layers, params, state, where):
    """Assigns every official leaf to its Keras variable; returns the variables set."""
    assigned = {}

    def put(layer, attribute, value, source):
        variable = getattr(layer, attribute, None)
        if variable is None:
            raise OfficialCheckpointError(
                f"{where}{source}: the Keras layer {layer.name!r} has no {attribute} "
                "(a head with an output bias, or an encoder without BatchNorm?)."
            )
        shape = tuple(variable.shape)
        if value.shape != shape:
            if value.size != int(np.prod(shape)) or value.squeeze().shape != shape:
                raise OfficialCheckpointError(
                    f"{where}{source} has shape {value.shape}; {variable.path} needs {shape}."
                )
            value = value.reshape(shape)  # Haiku's BatchNorm keeps (1, 1, 1, C)
        variable.assign(value.astype(variable.dtype))
        assigned[id(variable)] = source

    for module, layer in layers.items():
        for leaf, value in params.get(module, {}).items():
            if leaf not in _PARAM_LEAVES:
                raise OfficialCheckpointError(f"{where}{module}/{leaf}: unknown parameter.")
            put(layer, _PARAM_LEAVES[leaf], value, f"{module}/{leaf}")
        for leaf, attribute in _STATE_LEAVES.items():
            statistics = state.get(f"{module}/~/{leaf}")
            if statistics is not None:
                put(layer, attribute, statistics["average"], f"{module}/~/{leaf}/average")
    known = {f"{module}/~/{leaf}" for module in layers for leaf in _STATE_LEAVES}
    extra = [s for s in state if s not in known and s.split("/~/")[0] in layers]
    if extra:
        raise OfficialCheckpointError(f"{where}state with no place in Keras: {extra}.")
    return assigned


def _check_all_set(networks, assigned, where):
    missing = [
        variable.path
        for network in networks
        for variable in network.weights
        if id(variable) not in assigned
    ]
    if missing:
        raise OfficialCheckpointError(
            f"{where}no official value for these Keras variables: {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''} ({len(missing)} in all)."
        )


def _fill(parts, checkpoint, network, architecture, path):
    """Fills the Keras `parts` from `network`'s params and state; every leaf placed once."""
    params = getattr(checkpoint, f"{network}_params")
    state = getattr(checkpoint, f"{network}_state")
    where = f"{path} ({network} network): "
    layers = _networks_of(params, architecture, parts)
    assigned = _assign(layers, params, state, where)
    _check_all_set(parts.values(), assigned, where)


def load_official(path, *, include_heads=True, network="online", image_size=224):
    """Loads an official BYOL checkpoint (deepmind-research `byol/`) into keras_byol.

    No Haiku, JAX or dill needed (`read_official`). The architecture (ResNet depth and
    width, head sizes, classes of the online classifier) is read from the file.

    Args:
        path: the official `.pkl` file, e.g. `pretrain_res50x1.pkl`, or an
            `OfficialCheckpoint` that `read_official` returned (read once, load twice).
        include_heads: True: a `keras_byol.BYOL` with online encoder, projector, predictor,
            online probe (the official `classifier`) and target encoder and projector, each
            with its BatchNorm moving statistics, ready to evaluate or to continue
            pretraining (compile it with an optimizer: the file's LARS state is not loaded).
            False: the encoder alone.
        network: with include_heads=False, which encoder: "online" (the one the paper
            evaluates) or "target".
        image_size: the encoder's input side (224 for ImageNet; any size runs the same
            weights).

    Returns:
        `keras_byol.BYOL` or a functional encoder `keras.Model` (images in [0, 1] →
        (B, 2048·width) features, `keras_byol.encoders.resnet` with the file's depth and
        width).

    Raises:
        OfficialCheckpointError: the file is not an official pretraining checkpoint, its
            network is not one keras_byol builds, or a parameter has no place (named).

    Example:
        >>> encoder = load_official("pretrain_res50x1.pkl", include_heads=False)
        >>> encoder(images_in_0_1).shape  # (B, 2048)
    """
    if network not in _NETWORKS:
        raise ValueError(f"network must be one of {_NETWORKS}; got {network!r}.")
    if include_heads and network != "online":
        raise ValueError(
            "include_heads=True returns the whole BYOL, whose online and target networks both "
            "come from the file; network='target' is for include_heads=False (the target "
            "encoder alone)."
        )
    if isinstance(path, OfficialCheckpoint):
        checkpoint, path = path, "the checkpoint"
    else:
        checkpoint = read_official(path)
    architecture = official_architecture(checkpoint.online_params)
    if official_architecture(checkpoint.target_params) != architecture:
        raise OfficialCheckpointError(f"{path}: the online and target networks differ in shape.")

    encoder = encoders.resnet(
        architecture["encoder"], (image_size, image_size, 3), width=architecture["width"]
    )
    if not include_heads:
        _fill({"encoder": encoder}, checkpoint, network, architecture, path)
        return encoder

    heads = ("projection_dim", "hidden_dim", "predictor_hidden_dim")
    if any(architecture[h] is None for h in heads):
        raise OfficialCheckpointError(
            f"{path}: the online network has no projector/predictor; load the encoder alone "
            "with include_heads=False."
        )
    model = BYOL(
        encoder,
        projection_dim=architecture["projection_dim"],
        hidden_dim=architecture["hidden_dim"],
        predictor_hidden_dim=architecture["predictor_hidden_dim"],
        num_classes=architecture["num_classes"],
        head_output_bias=False,  # the official heads' output Linear has none
        probe_standardize=False,  # the official classifier reads the raw embedding
    )
    online = {"encoder": model.encoder, "projector": model.projector, "predictor": model.predictor}
    if model.probe is not None:
        online["classifier"] = model.probe
    _fill(online, checkpoint, "online", architecture, path)
    target = {"encoder": model.target_encoder, "projector": model.target_projector}
    _fill(target, checkpoint, "target", architecture, path)
    return model


__all__ = ["OfficialCheckpoint", "OfficialCheckpointError"]
__all__ += ["load_official", "official_architecture", "read_official"]

"""Every private Keras detail keras_byol uses still exists, and is used only in workarounds.py.

When a newer Keras renames or drops one of them, these tests fail with its name: check
`keras_byol/workarounds.py` against that Keras before raising setup.cfg's cap.
"""

import re
from pathlib import Path

import keras
import numpy as np

from keras_byol import workarounds

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_keras_is_the_one_the_workarounds_were_checked_against():
    checked = workarounds.KERAS_CHECKED.split(".")[:2]
    assert keras.__version__.split(".")[:2] == checked, (
        f"Keras {keras.__version__}: keras_byol/workarounds.py was checked against "
        f"{workarounds.KERAS_CHECKED}; check each piece there first."
    )


def test_the_private_optimizer_attributes_exist():
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    variable = keras.Variable(np.ones((2, 2), "float32"))
    optimizer.build([variable])
    missing = [a for a in workarounds.PRIVATE_OPTIMIZER_ATTRIBUTES if not hasattr(optimizer, a)]
    assert not missing, missing
    assert workarounds.batch_count_variable(optimizer) is optimizer._iterations
    rate = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert workarounds.learning_rate_schedule(keras.optimizers.SGD(rate)) is rate


def test_the_private_model_and_layer_attributes_exist():
    inputs = keras.Input((3,))
    inner = keras.Sequential([keras.layers.Dense(2, name="inner_dense")])
    model = keras.Model(inputs, inner(inputs))
    missing = [a for a in workarounds.PRIVATE_MODEL_ATTRIBUTES if not hasattr(model, a)]
    assert not missing, missing
    assert "inner_dense" in [layer.name for layer in workarounds.nested_layers(model)]
    layer_class = workarounds.BaseImagePreprocessingLayer
    missing = [a for a in workarounds.PRIVATE_IMAGE_LAYER_ATTRIBUTES if not hasattr(layer_class, a)]
    assert not missing, missing
    assert hasattr(layer_class, "get_random_transformation")
    assert hasattr(layer_class, "transform_images")
    # layer_seed_generator also reads the layer's backend by its private `_backend`.
    from keras_byol import views

    solarize = views.Solarize(0.5, seed=3)
    assert isinstance(workarounds.layer_seed_generator(solarize), keras.random.SeedGenerator)


def test_no_other_module_reaches_into_private_keras():
    private = (
        workarounds.PRIVATE_OPTIMIZER_ATTRIBUTES
        + workarounds.PRIVATE_MODEL_ATTRIBUTES
        + workarounds.PRIVATE_IMAGE_LAYER_ATTRIBUTES
    )
    names = "|".join(re.escape(a) for a in private)
    pattern = re.compile(r"keras\.src|\.(" + names + r")\b")
    found = []
    for path in sorted((ROOT / "keras_byol").rglob("*.py")):
        if path.name == "workarounds.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
    # The scan sees what it looks for: workarounds.py itself matches.
    assert pattern.search((ROOT / "keras_byol" / "workarounds.py").read_text())

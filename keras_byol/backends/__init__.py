"""The few lines of the BYOL step that differ per Keras backend.

Each module (`tensorflow`, `jax`) has `train_step(model, ...)`, the signature Keras' trainer
of that backend calls, and `check_accumulation(model)`. `current()` imports the running
backend's module on first use: each imports its own framework, and TensorFlow is an
optional dependency on JAX.
"""

import importlib

import keras

BACKENDS = ("tensorflow", "jax")


def current():
    """The step module of the running Keras backend."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise NotImplementedError(
            f"keras_byol trains on the TensorFlow and JAX backends; got {backend!r}."
        )
    return importlib.import_module(f"keras_byol.backends.{backend}")

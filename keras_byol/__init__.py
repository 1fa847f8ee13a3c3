"""keras_byol: BYOL (Bootstrap Your Own Latent) for Keras 3.

Public names: `BYOL` and the submodules `losses`, `schedules`, `optimizers`, `encoders`,
`heads`, `callbacks`, `monitors`, `evaluation`, `views`; loaded on first use (most need
TensorFlow or matplotlib): `augment`, `data`, `export`, `config`, `distribute`,
`experiment`, `plots`, and the TensorFlow-free `folders`, `image_batches` and `pretrained`
(the official checkpoints). Importing
sets no precision policy, device or seed.
"""

import importlib

from keras_byol import (
    callbacks,
    encoders,
    evaluation,
    heads,
    losses,
    monitors,
    optimizers,
    schedules,
    views,
)
from keras_byol.model import BYOL

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("augment", "data", "export", "config", "distribute", "experiment", "plots")
_LAZY_SUBMODULES += ("folders", "image_batches", "pretrained")

__all__ = ["BYOL", "callbacks", "encoders", "evaluation", "heads", "losses", "monitors"]
__all__ += ["optimizers", "schedules", "views"]
__all__ += list(_LAZY_SUBMODULES)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_byol.{name}")
    raise AttributeError(f"module 'keras_byol' has no attribute {name!r}")

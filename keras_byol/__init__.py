"""keras_byol: BYOL (Bootstrap Your Own Latent) for Keras 3.

Public names: `BYOL` and the submodules `losses`, `schedules`, `optimizers`, `encoders`,
`heads`, `callbacks`. Importing sets no precision policy, device or seed.
"""

from keras_byol import callbacks, encoders, heads, losses, optimizers, schedules
from keras_byol.model import BYOL

__version__ = "0.1.0"

__all__ = ["BYOL", "callbacks", "encoders", "heads", "losses", "optimizers", "schedules"]

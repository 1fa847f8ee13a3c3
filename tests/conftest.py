"""Shared fixtures: tiny encoders and view batches (32×32, batch ≤ 8), fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402


def tiny_encoder(image_size=16, channels=8, name="tiny", norm=layers.BatchNormalization):
    """Conv → BN → ReLU → GAP: (B, S, S, 3) → (B, channels); small enough for exact replays.

    `norm`: the BatchNorm class (keras_byol's FusedBatchNormalization for concat_views).
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Conv2D(channels, 3, padding="same", name="conv")(images)
    x = norm(momentum=0.9, epsilon=1e-5, name="bn")(x)
    x = layers.ReLU()(x)
    return keras.Model(images, layers.GlobalAveragePooling2D()(x), name=name)


def view_batches(num_images=24, image_size=16, seed=0):
    """Two float32 views in [0, 1], shape (num_images, S, S, 3) each."""
    rng = np.random.default_rng(seed)
    view1 = rng.random((num_images, image_size, image_size, 3), dtype=np.float32)
    view2 = np.clip(view1 + 0.1 * rng.standard_normal(view1.shape), 0, 1).astype("float32")
    return view1, view2


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")

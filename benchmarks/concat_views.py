"""Does one encoder pass over both views concatenated pay on this machine? (TF backend, CPU)

Times keras_byol's BYOL step (each view through its own online and target pass, batch B)
against the same step with the two views concatenated into one pass of 2B. The
concatenated variant here normalizes over all 2B images, so it is a timing probe only: a
version that keeps BatchNorm statistics per view (as the per-view reference needs) can only
add work to it. ResNet-18 small stem, 32 px, batch 128, SGD 0.06 momentum 0.9, one JSON
line per timed run, the two variants alternating.

    python benchmarks/concat_views.py
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402
from machine import describe  # noqa: E402

import keras_byol  # noqa: E402
from keras_byol.losses import byol_loss  # noqa: E402


class ConcatenatedViews(keras_byol.BYOL):
    """BYOL with both views in one online pass and one target pass (BN over 2B: timing only)."""

    def compute_losses(self, view1, view2, labels=None):
        both = ops.concatenate([view1, view2], axis=0)
        _, projection, prediction = self.online_forward(both)
        target = self.target_forward(both)
        p1, p2 = ops.split(prediction, 2)
        t1, t2 = ops.split(target, 2)
        loss = byol_loss(p1, p2, t1, t2)
        return loss, {"byol_loss": loss, "projection": ops.split(projection, 2)[0]}


def images_per_second(model_class, batch=128, size=32, steps=6):
    keras.utils.set_random_seed(0)
    encoder = keras_byol.encoders.resnet("resnet18", (size, size, 3), small_images=True)
    model = model_class(encoder, projection_dim=256, hidden_dim=4096)
    model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
    images = np.random.default_rng(0).random((batch * steps, size, size, 3), dtype=np.float32)
    views = {"view1": images, "view2": images[::-1].copy()}
    model.fit(views, batch_size=batch, epochs=1, steps_per_epoch=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(views, batch_size=batch, epochs=1, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def main():
    for repeat in range(2):
        for name, model_class in (
            ("per_view_passes", keras_byol.BYOL),
            ("concatenated_views", ConcatenatedViews),
        ):
            result = {
                "impl": "keras_byol",
                "what": "train_step",
                "variant": name,
                "repeat": repeat,
                "arch": "resnet18",
                "size": 32,
                "batch": 128,
                "images_per_s": round(images_per_second(model_class), 2),
                "machine": describe(keras=keras.__version__),
            }
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

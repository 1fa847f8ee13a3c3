"""BYOL's view ops, and the two views on any backend made inside the compiled train step.

`ViewConfig` holds every knob of a view; `VIEW_OPS` is the one list of the ops after the
crop (flip, colour jitter, grayscale, blur, solarize): each `ViewOp` names its config
fields and the scalars it draws, its TensorFlow kernel (`keras_byol.view_kernels`, run by
the tf.data views of `keras_byol.augment`) and its Keras layer (run here). Both executors
walk that list.

`TwoViewAugmenter` maps a batch of raw images to {"view1", "view2"}; each view is a
`keras.layers.Pipeline` (`view_pipeline`) of image-preprocessing layers, every random
decision drawn per image from Keras' seeded random (`keras.random` with a `SeedGenerator`:
stateless inside the JAX step). It imports no TensorFlow, so the JAX path needs none.

One view, in the paper's order (Table 6; `ViewConfig` holds every knob):
    RandomResizedCrop (ours)      area ~ U[0.08, 1]·H·W, log ratio ~ U[log 3/4, log 4/3],
                                  ten candidates then the central fallback; bicubic
    keras.layers.RandomFlip       Keras core: a flip per image with p 0.5 (the paper's)
    RandomApply(ColorJitter) (ours)  p 0.8; brightness, contrast, saturation, hue in a
                                  random order per image, each clipped to [0, 1]
    keras.layers.RandomGrayscale  Keras core: per image with p, luma 0.2989/0.5870/0.1140
    RandomApply(GaussianBlur) (ours)  σ ~ U[0.1, 2] per image, 23 taps at 224 px,
                                  zero padding
    RandomApply(Solarize) (ours)  x → 1 − x where x ≥ 0.5
Keras' own RandomCrop (offset per batch), RandomGaussianBlur (σ per batch), Solarization
(threshold scaled by the value range) and RandomColorJitter (fixed order, no apply
probability) differ from the paper, and Keras has no resized crop and no random-apply.

The maths equals `keras_byol.augment` (the tf.data views; tested op by op and as
distributions). Every image has its own crop box and σ without a loop: the resize is a
matrix per image and axis (einsum), the blur a sum of 2r + 1 shifted copies.
"""

import dataclasses
import itertools
import math
import warnings

import keras
import numpy as np

from keras_byol.workarounds import (
    BaseImagePreprocessingLayer,
    in_tf_graph,
    layer_seed_generator,
)

_JITTER_PARAMS = ("brightness", "contrast", "saturation", "hue")
_BRIGHTNESS_MODES = ("additive", "multiplicative")
_CROP_ATTEMPTS = 10
_KEYS_A = -0.5  # the Keys cubic kernel's a: tf.image.resize's bicubic (half-pixel centres)
_TABLE_STEPS = 1024.0  # tf.image.resize's bicubic kernel table: steps per pixel


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Every knob of one BYOL view; the defaults are the paper's view 1.

    Attributes:
        crop_area: (min, max) fraction of the image area kept by the random resized crop.
        crop_ratio: (min, max) aspect ratio w/h, sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying the colour jitter (all four ops) to an image.
        brightness: brightness strength b: δ drawn from U[−b, b].
        brightness_mode: "additive" — x + δ, the official code's (default); or
            "multiplicative" — x·(1 + δ), torchvision's ColorJitter (what PyTorch BYOL
            libraries such as lightly and solo-learn apply). They differ where it shows on
            dark backgrounds: an additive δ lifts black to grey, a factor keeps it black.
        contrast: contrast factor drawn from U[1 − c, 1 + c], around the per-channel mean.
        saturation: saturation factor drawn from U[1 − s, 1 + s] (HSV S channel).
        hue: hue shift drawn from U[−h, h] in turns of the colour wheel (HSV H channel).
        random_order: apply the four jitter ops in a random order per image.
        grayscale_p: probability of converting to luma (0.2989, 0.5870, 0.1140) × 3.
        blur_p: probability of a Gaussian blur.
        blur_sigma: (min, max) of σ in pixels, drawn uniformly.
        blur_kernel_fraction: the kernel spans this fraction of the output size: radius =
            ⌊size·fraction⌋ // 2, taps = 2·radius + 1 (23 taps at 224 px).
        solarize_p: probability of solarizing (x → 1 − x where x ≥ threshold).
        solarize_threshold: the solarize threshold, in [0, 1] pixel units.
    """

    crop_area: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    brightness_mode: str = "additive"
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    random_order: bool = True
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self):
        for name in ("crop_area", "crop_ratio", "blur_sigma"):  # lists from a JSON config
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ViewConfig.{name} is a probability in [0, 1]; got {value}.")
        lo, hi = self.crop_area
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"ViewConfig.crop_area needs 0 < min <= max <= 1; got {self.crop_area}."
            )
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"ViewConfig.crop_ratio needs 0 < min <= max; got {self.crop_ratio}.")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"ViewConfig.blur_sigma needs 0 < min <= max; got {self.blur_sigma}.")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ViewConfig.{name} must be in [0, 1]; got {getattr(self, name)}.")
        if self.brightness_mode not in _BRIGHTNESS_MODES:
            raise ValueError(
                f"ViewConfig.brightness_mode must be one of {_BRIGHTNESS_MODES}; got "
                f"{self.brightness_mode!r}."
            )
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ViewConfig.hue must be in [0, 0.5]; got {self.hue}.")


BYOL_VIEW1 = ViewConfig()
"""The paper's view 1 (τ in Table 6): blur always, never solarize."""
BYOL_VIEW2 = ViewConfig(blur_p=0.1, solarize_p=0.2)
"""The paper's view 2 (τ′ in Table 6): blur p 0.1, solarize p 0.2."""
SMALL_IMAGE_VIEW1 = dataclasses.replace(BYOL_VIEW1, brightness_mode="multiplicative")
"""Small images (~32 px): the paper's view 1 with torchvision's multiplicative brightness.

Chosen by measurement (benchmarks/RESULTS.md, "The small-image recipe": real digits, 3
seeds): against the paper's additive brightness, jitter strength 0.5 (SimCLR's CIFAR
setting, this preset until 2026-12-03) and blur off, this one learned the best features;
additive brightness lifts a black background to grey. At 32 px the blur kernel has 3 taps.
"""
SMALL_IMAGE_VIEW2 = dataclasses.replace(BYOL_VIEW2, brightness_mode="multiplicative")
"""Small images: the paper's view 2 (blur p 0.1, solarize p 0.2), multiplicative brightness."""
LINEAR_EVAL_VIEW = ViewConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
"""Training images of the linear and fine-tuning protocols: random resized crop + flip only."""


def blur_radius(size, fraction=0.1):
    """Kernel radius for an output of `size` px: taps = 2·radius + 1 (23 at 224 px)."""
    return int(size * fraction) // 2


# ------------------------------------------------------------------------ the view ops
@dataclasses.dataclass(frozen=True)
class ViewOp:
    """One random step of a view after its crop, for both executors: the tf.data views
    (`keras_byol.augment`, one image at a time) and the views in the step (the Keras layers
    of `view_pipeline`, a batch at a time). `VIEW_OPS` lists them in the order they apply;
    adding an op is one entry there (and the `ViewConfig` fields it reads).

    Attributes:
        name: the key of its decision (applied or not, per image) in the sampled parameters.
        probability: the `ViewConfig` field holding the chance that an image gets it.
        ranges: names of the scalars drawn per image, each uniform in its `bounds`.
        bounds: config → one (low, high) per entry of `ranges`.
        keys: extra uniforms drawn per image (the jitter's 4 order keys).
        key_params: the parameters made from the keys (in both executors by the op).
        enabled: (config, size) → whether the view has this step at all (its probability > 0
            is checked apart).
        tf_apply: (view, params, config, size, compiled) → view: the TensorFlow kernel on one
            (S, S, 3) float32 view, params a dict of this image's scalars (its ranges and
            key_params); compiled: XLA-compile where it pays (the jitter).
        tf_keys: (keys, config) → dict of key_params, TensorFlow, one image's keys.
        keras_layer: (config, size, next_seed) → the Keras layer of this step in a
            `view_pipeline` (next_seed() gives each random layer its seed, in order). Default:
            `RandomApply(ViewOpLayer(self, config), probability)`, which draws `ranges` per
            image and applies `keras_apply` (an op with keys gives its own keras_layer).
        keras_apply: (backend, images, params, config) → images: the Keras-ops kernel on a
            (B, S, S, 3) float batch, params a dict of (B,) tensors.
    """

    name: str
    probability: str
    tf_apply: object
    ranges: tuple = ()
    bounds: object = lambda config: ()
    keys: int = 0
    key_params: tuple = ()
    enabled: object = lambda config, size: True
    tf_keys: object = None
    keras_layer: object = None
    keras_apply: object = None

    @property
    def params(self):
        """The names of the parameters its kernels read besides its decision."""
        return self.ranges + self.key_params

    def active(self, config, size):
        """Whether a view of `config` at `size` px has this step."""
        return getattr(config, self.probability) > 0 and self.enabled(config, size)

    def layer(self, config, size, next_seed):
        """This step's Keras layer for a `view_pipeline`, tagged with the op."""
        if self.keras_layer is not None:
            layer = self.keras_layer(config, size, next_seed)
        else:
            inner = ViewOpLayer(self, config, seed=next_seed() if self.ranges else None)
            layer = RandomApply(inner, getattr(config, self.probability), seed=next_seed())
        layer.view_op = self
        return layer


def _tf_kernels():
    """keras_byol.view_kernels, the ops' TensorFlow kernels: loaded only when tf.data makes
    views (this module runs without TensorFlow)."""
    from keras_byol import view_kernels

    return view_kernels


def _flip_layer(config, size, next_seed):
    if config.flip_p != 0.5:
        raise ValueError(
            f"ViewConfig(flip_p={config.flip_p}): the device views flip with Keras' "
            "RandomFlip, which flips half the images; use flip_p 0.5 or 0, or make these "
            'views in tf.data (pretrain_dataset(..., augment_on="cpu")).'
        )
    return keras.layers.RandomFlip("horizontal", seed=next_seed(), dtype="float32")


def _jitter_layer(config, size, next_seed):
    jitter = ColorJitter(
        config.brightness,
        config.contrast,
        config.saturation,
        config.hue,
        config.random_order,
        config.brightness_mode,
        seed=next_seed(),
    )
    return RandomApply(jitter, config.jitter_p, seed=next_seed())


def _blur_layer(config, size, next_seed):
    blur = GaussianBlur(config.blur_sigma, config.blur_kernel_fraction, seed=next_seed())
    return RandomApply(blur, config.blur_p, seed=next_seed())


VIEW_OPS = [
    ViewOp(
        "flip",
        "flip_p",
        tf_apply=lambda view, params, config, size, compiled: _tf_kernels().flip(view),
        keras_layer=_flip_layer,
    ),
    ViewOp(
        "jitter",
        "jitter_p",
        ranges=("brightness", "contrast", "saturation", "hue"),
        bounds=lambda config: (
            (-config.brightness, config.brightness),
            (1 - config.contrast, 1 + config.contrast),
            (1 - config.saturation, 1 + config.saturation),
            (-config.hue, config.hue),
        ),
        keys=4,
        key_params=("order",),
        tf_keys=lambda keys, config: {"order": _tf_kernels().jitter_order(keys, config)},
        tf_apply=lambda view, params, config, size, compiled: _tf_kernels().color_jitter(
            view, params, config.brightness_mode, compiled
        ),
        keras_layer=_jitter_layer,
    ),
    ViewOp(
        "grayscale",
        "grayscale_p",
        tf_apply=lambda view, params, config, size, compiled: _tf_kernels().to_grayscale(view),
        keras_layer=lambda config, size, next_seed: keras.layers.RandomGrayscale(
            config.grayscale_p, seed=next_seed(), dtype="float32"
        ),
    ),
    ViewOp(
        "blur",
        "blur_p",
        ranges=("sigma",),
        bounds=lambda config: (config.blur_sigma,),
        enabled=lambda config, size: blur_radius(size, config.blur_kernel_fraction) >= 1,
        tf_apply=lambda view, params, config, size, compiled: _tf_kernels().gaussian_blur(
            view, params["sigma"], blur_radius(size, config.blur_kernel_fraction)
        ),
        keras_layer=_blur_layer,
    ),
    ViewOp(
        "solarize",
        "solarize_p",
        tf_apply=lambda view, params, config, size, compiled: _tf_kernels().solarize(
            view, config.solarize_threshold
        ),
        keras_layer=lambda config, size, next_seed: RandomApply(
            Solarize(config.solarize_threshold), config.solarize_p, seed=next_seed()
        ),
    ),
]
"""BYOL's view ops after the crop, in the order they apply (the paper's, Table 6)."""


# ------------------------------------------------------------------------ the layers
class _ViewLayer(BaseImagePreprocessingLayer):
    """Keras' image-preprocessing base, float32 by default (views stay float32 under a
    mixed policy: the encoder casts), no `factor`, its own SeedGenerator."""

    _USE_BASE_FACTOR = False

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def __call__(self, inputs, **kwargs):
        if keras.backend.backend() == "tensorflow":
            # Keras' DataLayer casts the input to the compute dtype inside any TF graph (a
            # compiled train step too, not only tf.data): uint8 0–255 would arrive as float
            # 0–255. On the TF backend its switch to TF ops is not needed: skip it.
            return keras.layers.Layer.__call__(self, inputs, **kwargs)
        if in_tf_graph() and keras.backend.standardize_dtype(inputs.dtype) == "uint8":
            raise TypeError(
                f"{self.name} in tf.data on the {keras.backend.backend()} backend: Keras casts "
                "uint8 images to float without scaling there; pass float images in [0, 1] "
                "(or use the layer inside the model)."
            )
        return super().__call__(inputs, **kwargs)

    def _uniform(self, shape, seed=None):
        seed = layer_seed_generator(self) if seed is None else seed

        def draw(n):
            return self.backend.random.uniform((n, *shape[1:]), seed=seed)

        return replica_slice(draw, shape[0])

    def _batch_size(self, images):
        return self.backend.core.shape(images)[0]

    def transform_labels(self, labels, transformation, training=True):
        return labels

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError(f"{type(self).__name__} transforms images only.")

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        raise NotImplementedError(f"{type(self).__name__} transforms images only.")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def tf_replicas():
    """(this replica's index, replicas in sync) inside a `tf.distribute` replica context of
    several replicas; (0, 1) elsewhere (one device, JAX, a TensorFlow eager call)."""
    if keras.backend.backend() != "tensorflow":
        return 0, 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def replica_slice(draw, batch_size):
    """draw(batch_size), or under R tf.distribute replicas this replica's slice of
    draw(R·batch_size): every replica reads the same seed state, so each takes its own
    rows of one global draw (independent decisions, as one device's)."""
    replica, replicas = tf_replicas()
    if replicas == 1:
        return draw(batch_size)
    return draw(replicas * batch_size)[replica * batch_size : (replica + 1) * batch_size]


def _per_image(values):
    """(B,) → (B, 1, 1, 1), to broadcast a per-image value over an image batch."""
    return keras.ops.reshape(values, (-1, 1, 1, 1))


@keras.saving.register_keras_serializable(package="keras_byol")
class RandomResizedCrop(_ViewLayer):
    """torchvision's / the paper's random resized crop, a box per image, bicubic resize.

    Area ~ U[area]·H·W and log(w/h) ~ U[log ratio]: ten candidates, the first that fits;
    if none fits, the largest central crop with the ratio clamped (torchvision's fallback).
    The resize equals `tf.image.resize(crop, (size, size), "bicubic")` (Keys a = −0.5,
    half-pixel centres, sample points rounded to 1/1024 px as TF's kernel table, taps
    outside the crop dropped and the weights renormalized), clipped to [0, 1]. It is one
    (size, H) and one (size, W) matrix per image, applied with einsum: on a 2-core CPU 7×
    faster than gathering each output pixel's 4 taps (74 against 554 ms for 32 views of
    224 px from 256 px, JAX).

    Input: (B, H, W, C) uint8 in [0, 255] or float in [0, 1], C ∈ {1, 3, 4}, H and W known.
    Output: (B, size, size, 3) float32 in [0, 1].
    """

    def __init__(self, size, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.size = int(size)
        self.area = tuple(float(a) for a in area)
        self.ratio = tuple(float(r) for r in ratio)

    def sample_boxes(self, batch_size, height, width, seed=None):
        """{"top", "left", "crop_height", "crop_width"}: (B,) float32 boxes in pixels."""
        ops = self.backend.numpy
        u = self._uniform((batch_size, 2 * _CROP_ATTEMPTS + 2), seed)
        h, w = float(height), float(width)
        target_area = h * w * (self.area[0] + (self.area[1] - self.area[0]) * u[:, :_CROP_ATTEMPTS])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = ops.exp(log_lo + (log_hi - log_lo) * u[:, _CROP_ATTEMPTS : 2 * _CROP_ATTEMPTS])
        crop_w = ops.round(ops.sqrt(target_area * aspect))
        crop_h = ops.round(ops.sqrt(target_area / aspect))
        fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w) & (crop_h <= h)
        fits = self.backend.cast(fits, "float32")
        # The first candidate that fits: a one-hot of it (all zero when none fits).
        first = fits * ops.concatenate(
            [ops.ones_like(fits[:, :1]), ops.cumprod(1.0 - fits, axis=1)[:, :-1]], axis=1
        )
        any_fits = ops.sum(first, axis=1) > 0
        in_ratio = w / h
        lo, hi = self.ratio
        fallback_w = round(h * hi) if in_ratio > hi else w
        fallback_h = round(w / lo) if in_ratio < lo else h
        crop_w = ops.where(any_fits, ops.sum(first * crop_w, axis=1), fallback_w)
        crop_h = ops.where(any_fits, ops.sum(first * crop_h, axis=1), fallback_h)
        top = ops.where(
            any_fits,
            ops.floor(u[:, 2 * _CROP_ATTEMPTS] * (h - crop_h + 1)),
            ops.floor((h - crop_h) / 2),
        )
        left = ops.where(
            any_fits,
            ops.floor(u[:, 2 * _CROP_ATTEMPTS + 1] * (w - crop_w + 1)),
            ops.floor((w - crop_w) / 2),
        )
        return {"top": top, "left": left, "crop_height": crop_h, "crop_width": crop_w}

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        height, width = _static_size(images)
        return self.sample_boxes(self._batch_size(images), height, width, seed)

    def transform_images(self, images, transformation, training=True):
        images = to_rgb_float(images, self.backend)
        height, width = _static_size(images)
        t = transformation
        rows = self._resize_matrix(t["top"], t["crop_height"], height)
        columns = self._resize_matrix(t["left"], t["crop_width"], width)
        ops = self.backend.numpy
        view = ops.einsum("bsh,bhwc->bswc", rows, images)
        view = ops.einsum("btw,bswc->bstc", columns, view)
        return ops.clip(view, 0.0, 1.0)

    def _resize_matrix(self, start, length, in_size):
        """(B, size, in_size): row s weights source pixel p by the Keys cubic kernel at the
        distance between p and the crop's sample point of s; pixels outside the crop get 0."""
        ops = self.backend.numpy
        outputs = self.backend.convert_to_tensor(np.arange(self.size, dtype="float32") + 0.5)
        sources = self.backend.convert_to_tensor(np.arange(in_size, dtype="float32"))
        centres = (length[:, None] / self.size) * outputs[None, :] - 0.5
        # TensorFlow reads the kernel from a table of 1024 steps per pixel: the sample
        # point's fraction is rounded to 1/1024 (up to 1e-3 of a pixel value otherwise).
        whole = ops.floor(centres)
        centres = whole + ops.round((centres - whole) * _TABLE_STEPS) / _TABLE_STEPS
        pixels = sources[None, None, :] - start[:, None, None]
        d = ops.abs(centres[:, :, None] - pixels)
        a = _KEYS_A
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = ops.where(d <= 1, near, ops.where(d < 2, far, 0.0))
        inside = (pixels >= 0) & (pixels < length[:, None, None])
        weights = ops.where(inside, weights, 0.0)
        return weights / ops.sum(weights, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "area": self.area, "ratio": self.ratio}


@keras.saving.register_keras_serializable(package="keras_byol")
class ColorJitter(_ViewLayer):
    """Brightness, contrast, saturation and hue, each clipped to [0, 1], in a random order
    per image (the official code's; `random_order=False`: that order), every image its own
    δ and factors. Always applies: wrap it in `RandomApply` for the paper's p 0.8.

    brightness: x + δ ("additive") or x·(1 + δ) ("multiplicative"), δ ~ U[−b, b];
    contrast: (x − μ_c)·f + μ_c, μ_c the per-channel mean, f ~ U[1 − c, 1 + c];
    saturation: HSV S·f clipped to 1, f ~ U[1 − s, 1 + s]; hue: HSV H + δ mod 1, δ ~ U[−h, h].
    Input and output: (B, H, W, 3) float in [0, 1].
    """

    def __init__(
        self,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        random_order=True,
        brightness_mode="additive",
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if brightness_mode not in _BRIGHTNESS_MODES:
            raise ValueError(
                f"brightness_mode must be one of {_BRIGHTNESS_MODES}; got {brightness_mode!r}."
            )
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.random_order = bool(random_order)
        self.brightness_mode = brightness_mode

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        ops = self.backend.numpy
        u = self._uniform((self._batch_size(images), 8), seed)
        low = np.array([-self.brightness, 1 - self.contrast, 1 - self.saturation, -self.hue])
        high = np.array([self.brightness, 1 + self.contrast, 1 + self.saturation, self.hue])
        values = low.astype("float32") + (high - low).astype("float32") * u[:, :4]
        if self.random_order:
            order = ops.argsort(u[:, 4:], axis=1)
        else:
            order = ops.zeros_like(self.backend.cast(u[:, 4:], "int32")) + np.arange(4)
        return {
            **{name: values[:, i] for i, name in enumerate(_JITTER_PARAMS)},
            "order": self.backend.cast(order, "int32"),
        }

    def transform_images(self, images, transformation, training=True):
        ops, image_ops = self.backend.numpy, self.backend.image
        t = transformation
        for slot in range(4):
            op = _per_image(t["order"][:, slot])
            if self.brightness_mode == "additive":
                bright = images + _per_image(t["brightness"])
            else:
                bright = images * (1.0 + _per_image(t["brightness"]))
            mean = ops.mean(images, axis=(1, 2), keepdims=True)
            contrast = (images - mean) * _per_image(t["contrast"]) + mean
            hsv = image_ops.rgb_to_hsv(images)
            h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
            saturated = ops.clip(s * _per_image(t["saturation"]), 0.0, 1.0)
            saturation = image_ops.hsv_to_rgb(ops.concatenate([h, saturated, v], axis=-1))
            hue = ops.mod(h + _per_image(t["hue"]), 1.0)
            hue = image_ops.hsv_to_rgb(ops.concatenate([hue, s, v], axis=-1))
            jittered = ops.where(
                op == 0,
                bright,
                ops.where(op == 1, contrast, ops.where(op == 2, saturation, hue)),
            )
            images = ops.clip(jittered, 0.0, 1.0)
        return images

    def get_config(self):
        return {
            **super().get_config(),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "random_order": self.random_order,
            "brightness_mode": self.brightness_mode,
        }


@keras.saving.register_keras_serializable(package="keras_byol")
class GaussianBlur(_ViewLayer):
    """Separable Gaussian blur with σ ~ U[sigma] per image (Keras' RandomGaussianBlur draws
    one σ per batch), radius ⌊size·kernel_fraction⌋ // 2, zero 'SAME' padding (the
    official code's). Always blurs: wrap it in `RandomApply` for a probability.
    Input and output: (B, S, S, 3) float (square views)."""

    def __init__(self, sigma=(0.1, 2.0), kernel_fraction=0.1, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.sigma = tuple(float(s) for s in sigma)
        self.kernel_fraction = float(kernel_fraction)

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        u = self._uniform((self._batch_size(images),), seed)
        return {"sigma": self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u}

    def transform_images(self, images, transformation, training=True):
        ops = self.backend.numpy
        size, width = _static_size(images)
        if size != width:
            raise ValueError(f"GaussianBlur takes square views; got {size}×{width}.")
        radius = blur_radius(size, self.kernel_fraction)
        if radius < 1:
            return images
        variance = 2.0 * transformation["sigma"] ** 2
        offsets = self.backend.convert_to_tensor(np.arange(-radius, radius + 1, dtype="float32"))
        taps = ops.exp(-(offsets**2)[None, :] / variance[:, None])
        taps = taps / ops.sum(taps, axis=1, keepdims=True)  # (B, 2r + 1)
        for axis in (1, 2):  # zero padding, then the weighted sum of the 2r + 1 shifts
            pad = [(0, 0)] * 4
            pad[axis] = (radius, radius)
            padded = ops.pad(images, pad)
            blurred = 0.0
            for k in range(2 * radius + 1):
                shifted = padded[:, k : k + size] if axis == 1 else padded[:, :, k : k + size]
                blurred = blurred + shifted * _per_image(taps[:, k])
            images = blurred
        return images

    def get_config(self):
        return {
            **super().get_config(),
            "sigma": self.sigma,
            "kernel_fraction": self.kernel_fraction,
        }


@keras.saving.register_keras_serializable(package="keras_byol")
class Solarize(_ViewLayer):
    """x → 1 − x where x ≥ threshold (in [0, 1] pixel units; Keras' Solarization scales its
    threshold by the value range). Always applies: wrap it in `RandomApply`."""

    def __init__(self, threshold=0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def get_random_transformation(self, data, training=True, seed=None):
        return None

    def transform_images(self, images, transformation, training=True):
        if self.threshold == 0.5:
            return self.backend.numpy.minimum(images, 1.0 - images)
        flipped = self.backend.cast(images >= self.threshold, images.dtype)
        return images + flipped * (1.0 - 2.0 * images)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class ViewOpLayer(_ViewLayer):
    """The Keras layer of a `ViewOp` that gives a `keras_apply` kernel: draws the op's
    `ranges` per image (one uniform draw) and applies the kernel. Always applies:
    `ViewOp.layer` wraps it in `RandomApply` with the op's probability. Built by
    `view_pipeline` from a `ViewConfig` (a saved `TwoViewAugmenter` rebuilds it so)."""

    def __init__(self, op, config, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if op.keras_apply is None or op.keys:
            raise ValueError(
                f"ViewOp {op.name!r}: the views in the step need its keras_layer, or a "
                "keras_apply kernel and no keys."
            )
        self.op, self.config = op, config

    def get_random_transformation(self, data, training=True, seed=None):
        if not self.op.ranges:
            return None
        images = data["images"] if isinstance(data, dict) else data
        u = self._uniform((self._batch_size(images), len(self.op.ranges)), seed)
        return {
            name: low + (high - low) * u[:, i]
            for i, (name, (low, high)) in enumerate(
                zip(self.op.ranges, self.op.bounds(self.config))
            )
        }

    def transform_images(self, images, transformation, training=True):
        return self.op.keras_apply(self.backend, images, transformation or {}, self.config)

    def get_config(self):
        return {**super().get_config(), "op": self.op.name}


@keras.saving.register_keras_serializable(package="keras_byol")
class RandomApply(_ViewLayer):
    """Applies `layer` to each image with probability `rate`, drawn per image.

    `layer`: one of this module's layers, a Keras image-preprocessing layer (its own draws
    are made for the whole batch, then kept where applied) or any Keras layer mapping a
    batch to a batch of the same shape.
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"RandomApply rate is a probability in [0, 1]; got {rate}.")
        self.layer = layer
        self.rate = float(rate)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        applied = self._uniform((self._batch_size(images),), seed) < self.rate
        inner = None
        if isinstance(self.layer, BaseImagePreprocessingLayer):
            inner = self.layer.get_random_transformation(images, training=training)
        return {"applied": applied, "inner": inner}

    def transform_images(self, images, transformation, training=True):
        if isinstance(self.layer, BaseImagePreprocessingLayer):
            changed = self.layer.transform_images(images, transformation["inner"], training)
        else:
            changed = self.layer(images, training=training)
        return self.backend.numpy.where(_per_image(transformation["applied"]), changed, images)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "rate": self.rate,
        }


# ------------------------------------------------------------------ views of a config
def _static_size(images):
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(
            "The views need images of a known height and width (a fixed-size batch, e.g. "
            'pretrain_dataset(..., augment_on="device")); got shape '
            f"{tuple(images.shape)}."
        )
    return int(height), int(width)


def to_rgb_float(images, backend=keras.ops):
    """(B, H, W, C) uint8 or float, C ∈ {1, 3, 4} → (B, H, W, 3) float32 in [0, 1]."""
    check_images(images)
    dtype = keras.backend.standardize_dtype(images.dtype)
    channels = images.shape[-1]
    if channels == 1:
        images = backend.numpy.concatenate([images] * 3, axis=-1)
    elif channels == 4:
        images = images[..., :3]
    images = backend.cast(images, "float32")
    return images / 255.0 if dtype == "uint8" else images


def check_images(images):
    """Raises unless images are (B, H, W, C) uint8 or float with C ∈ {1, 3, 4}."""
    if len(images.shape) != 4:
        raise ValueError(f"The views take (B, H, W, C) images; got shape {tuple(images.shape)}.")
    if images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Images need 1, 3 or 4 channels; got shape {tuple(images.shape)}.")
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype != "uint8" and "float" not in dtype:
        raise TypeError(f"Images must be uint8 in [0, 255] or float in [0, 1]; got {dtype}.")


def view_pipeline(config, image_size, seed=None, name=None):
    """The `keras.layers.Pipeline` that makes one view of `config` at `image_size` px.

    seed: None (non-deterministic) or an int; layer k of the pipeline gets seed + k.
    """
    offsets = itertools.count()

    def next_seed():
        offset = next(offsets)
        return None if seed is None else seed + offset

    layers = [RandomResizedCrop(image_size, config.crop_area, config.crop_ratio, seed=next_seed())]
    layers += [op.layer(config, image_size, next_seed) for op in active_ops(config, image_size)]
    return keras.layers.Pipeline(layers, name=name)


def active_ops(config, size):
    """The `VIEW_OPS` that a view of `config` at `size` px applies, in order."""
    return [op for op in VIEW_OPS if op.active(config, size)]


# Keras' own layers in a view (they draw for the batch they see); ours draw per replica.
_KERAS_LAYERS = (keras.layers.RandomFlip, keras.layers.RandomGrayscale)


def _keras_decisions(layer, batch_size):
    """(B, 1, 1, 1) booleans: where Keras' RandomFlip flips / RandomGrayscale converts,
    drawn by the layer itself for `batch_size` images."""
    drawn = layer.get_random_transformation(keras.ops.zeros((batch_size, 1, 1, 3)))
    return drawn["flips"] if isinstance(layer, keras.layers.RandomFlip) else drawn


def _keras_transformation(layer, decisions, images):
    """The transformation Keras' RandomFlip / RandomGrayscale takes for these decisions."""
    decisions = keras.ops.reshape(decisions, (-1, 1, 1, 1))
    if isinstance(layer, keras.layers.RandomFlip):
        return {"flips": decisions, "input_shape": keras.ops.shape(images)}
    return decisions


def sample_view_params(pipeline, batch_size, height, width):
    """Every random decision of `batch_size` views of a `view_pipeline`, as numpy arrays.

    Returns {"top", "left", "crop_height", "crop_width"} and, for each op of `VIEW_OPS`, its
    decision and parameters (the keys of `augment.sample_view_params`; an op the config
    leaves out reads False), drawn as the layers draw them (for the statistical tests).
    """
    params = {op.name: np.zeros(batch_size, bool) for op in VIEW_OPS}
    small = np.zeros((batch_size, 1, 1, 3), "float32")
    for layer in pipeline.layers:
        if isinstance(layer, RandomResizedCrop):
            params.update(layer.sample_boxes(batch_size, height, width))
        elif isinstance(layer, _KERAS_LAYERS):
            params[layer.view_op.name] = _keras_decisions(layer, batch_size)
        else:
            drawn = layer.get_random_transformation(small)
            params[layer.view_op.name] = drawn["applied"]
            params.update(drawn["inner"] or {})
    return {
        key: np.asarray(value).reshape(batch_size, -1).squeeze(-1)
        if key != "order"
        else np.asarray(value)
        for key, value in params.items()
    }


def apply_view_params(pipeline, images, params):
    """The views of `images` by a `view_pipeline` with the decisions `params` (the dict of
    `sample_view_params`, one entry per image) instead of the layers' own draws."""
    for layer in pipeline.layers:
        op = getattr(layer, "view_op", None)
        if isinstance(layer, RandomResizedCrop):
            transformation = {
                key: params[key] for key in ("top", "left", "crop_height", "crop_width")
            }
        elif op is None:
            raise TypeError(f"apply_view_params takes a view_pipeline; found {layer.name}.")
        elif isinstance(layer, _KERAS_LAYERS):
            transformation = _keras_transformation(layer, params[op.name], images)
        else:
            inner = {name: params[name] for name in op.params} or None
            transformation = {"applied": params[op.name], "inner": inner}
        images = layer.transform_images(images, transformation)
    return images


@keras.saving.register_keras_serializable(package="keras_byol")
class TwoViewAugmenter(keras.layers.Layer):
    """Maps a batch of images to BYOL's two views, every random decision drawn per image.

    Input: (B, H, W, C) uint8 in [0, 255] or float in [0, 1], C ∈ {1, 3, 4}, H, W ≥ 2
    and known. Output: {"view1": (B, S, S, 3), "view2": (B, S, S, 3)} float32 in [0, 1],
    S = image_size. Runs on every backend inside the model (`BYOL(..., augmenter=...)`: the
    views are made in the compiled train step, on the accelerator) or eagerly.

    Args:
        view1, view2: a `ViewConfig` (default: the paper's `BYOL_VIEW1`, `BYOL_VIEW2`),
            made by `view_pipeline`; or any Keras layer, e.g. a `keras.layers.Pipeline`,
            that maps the raw batch to (B, S, S, 3) float views.
        image_size: output size S.
        seed: integer seed; the same seed gives the same sequence of views.

    Example:
        >>> augmenter = TwoViewAugmenter(image_size=32, seed=0)
        >>> views = augmenter(uint8_images)  # {"view1": (B, 32, 32, 3), "view2": ...}
    """

    def __init__(self, view1=BYOL_VIEW1, view2=BYOL_VIEW2, image_size=224, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive; got {image_size}.")
        self.image_size = int(image_size)
        self.seed = seed
        self.view1, self.pipeline1 = self._view(view1, 0)
        self.view2, self.pipeline2 = self._view(view2, 100)

    def _view(self, view, offset):
        if isinstance(view, dict):
            view = (
                keras.saving.deserialize_keras_object(view)
                if "class_name" in view
                else ViewConfig(**view)
            )
        if isinstance(view, ViewConfig):
            seed = None if self.seed is None else self.seed + offset
            return view, view_pipeline(view, self.image_size, seed, name=f"view{offset // 100 + 1}")
        if not isinstance(view, keras.layers.Layer):
            raise TypeError(f"A view is a ViewConfig or a Keras layer; got {type(view).__name__}.")
        return view, view

    def build(self, input_shape):
        # The only state, the layers' seed generators, exists from __init__.
        self.built = True

    def save_own_variables(self, store):
        # Keras saves no SeedGenerator state; saved here, a resumed run continues the
        # views' random streams instead of replaying them from the start.
        for i, state in enumerate(self.non_trainable_variables):
            store[f"seed_state_{i}"] = state

    def load_own_variables(self, store):
        states = self.non_trainable_variables
        if len(store.keys()) == 0:
            warnings.warn(
                f"{self.name}: the saved model holds no seed state of its views (saved by an "
                "older keras_byol); they restart their random streams from the seed.",
                stacklevel=2,
            )
            return
        if len(store.keys()) != len(states):
            raise ValueError(
                f"{self.name}: the saved model holds {len(store.keys())} seed states for "
                f"{len(states)} random layers of these views; build the same views to load it."
            )
        for i, state in enumerate(states):
            state.assign(store[f"seed_state_{i}"])

    def call(self, images, training=True):
        check_images(images)
        return {
            "view1": self._view_of(self.view1, self.pipeline1, images),
            "view2": self._view_of(self.view2, self.pipeline2, images),
        }

    def _view_of(self, config, pipeline, images):
        replicas = tf_replicas()[1]
        if replicas == 1:
            return pipeline(images, training=True)
        if not isinstance(config, ViewConfig):
            raise ValueError(
                f"{self.name}: a custom view layer under tf.distribute with "
                f"{replicas} replicas: every replica reads the same seed state, so "
                "Keras' random layers would draw the same decisions on each. Use ViewConfig "
                "views (their draws are split per replica), make the views in tf.data "
                '(augment_on="cpu"), '
                "or train on JAX (DataParallel draws for the global batch)."
            )
        # Keras' RandomFlip and RandomGrayscale draw for the batch they see: draw for the
        # global batch here and keep this replica's rows (ours split in `replica_slice`).
        batch = keras.ops.shape(images)[0]
        for layer in pipeline.layers:
            if isinstance(layer, _KERAS_LAYERS):
                decisions = replica_slice(lambda n, layer=layer: _keras_decisions(layer, n), batch)
                images = layer.transform_images(
                    images, _keras_transformation(layer, decisions, images)
                )
            else:
                images = layer(images, training=True)
        return images

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.image_size, self.image_size, 3)
        return {"view1": shape, "view2": shape}

    def get_config(self):
        def serialize(view):
            if isinstance(view, ViewConfig):
                return dataclasses.asdict(view)
            return keras.saving.serialize_keras_object(view)

        return {
            **super().get_config(),
            "view1": serialize(self.view1),
            "view2": serialize(self.view2),
            "image_size": self.image_size,
            "seed": self.seed,
        }

"""BYOL's two views in tf.data (TensorFlow, on the CPU), every random decision per image.

Pipeline of one view (BYOL paper, Table 6; official code's order):
random resized crop (bicubic) → horizontal flip → colour jitter (brightness, contrast,
saturation, hue in random order, each clipped to [0, 1]; applied with p) → grayscale
→ Gaussian blur (separable) → solarize → clip to [0, 1].

Sampling (`sample_view_params`) is separate from applying (`apply_view`) so that each
can be tested on its own. Everything here is TensorFlow, one image at a time, for
`data.pretrain_dataset(..., augment_on="cpu")`. Speed: one RNG draw per view; from
`COMPILED_MIN_SIZE` px up, tf.data runs the jitter ops XLA-compiled.

The same views inside the model, on any backend, are `keras_byol.views` (Keras layers,
`views.TwoViewAugmenter`; `ViewConfig` and the presets live there and are re-exported here).
"""

import math
import warnings

import tensorflow as tf

from keras_byol import views
from keras_byol.views import (  # noqa: F401 (ViewConfig and the presets live there)
    BYOL_VIEW1,
    BYOL_VIEW2,
    LINEAR_EVAL_VIEW,
    SMALL_IMAGE_VIEW1,
    SMALL_IMAGE_VIEW2,
    ViewConfig,
    blur_radius,
)


def __getattr__(name):
    if name == "TwoViewAugmenter":  # the Keras-layer augmenter, which runs inside the step
        warnings.warn(
            "keras_byol.augment.TwoViewAugmenter is keras_byol.views.TwoViewAugmenter: the "
            "views made inside the train step (Keras layers); augment makes them in tf.data. "
            "Import it from keras_byol.views.",
            DeprecationWarning,
            stacklevel=2,
        )
        return views.TwoViewAugmenter
    raise AttributeError(f"module 'keras_byol.augment' has no attribute {name!r}")


_LUMA = (0.2989, 0.5870, 0.1140)
_JITTER_PARAMS = ("brightness", "contrast", "saturation", "hue")  # jitter_op indices 0-3
_NUM_JITTER_OPS = len(_JITTER_PARAMS)


def one_view(image, seed, size, config=LINEAR_EVAL_VIEW):
    """One random view (size, size, 3) float32 in [0, 1] of an (H, W, C) image; seed (2,)."""
    image = to_rgb(image)
    params = sample_view_params(
        config, tf.cast(seed, tf.int64), tf.shape(image)[0], tf.shape(image)[1]
    )
    return apply_view(image, params, size, config)


# ---------------------------------------------------------------------------- sampling
_CROP_ATTEMPTS = 10
# A view's Bernoulli decisions (each with the probability ViewConfig.<name>_p) and its
# uniform scalars, in the order they take in the view's one uniform draw.
_COINS = ("flip", "jitter", "grayscale", "blur", "solarize")
_RANGES = _JITTER_PARAMS + ("sigma",)


def sample_crop_box(
    seed, height, width, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=_CROP_ATTEMPTS
):
    """torchvision's RandomResizedCrop box: area ~ U[area]·H·W, log(w/h) ~ U[log ratio].

    Ten candidates are drawn at once and the first that fits is taken; if none fits, the
    largest central crop with the ratio clamped to `ratio` (torchvision's fallback).

    Args:
        seed: stateless seed, int32/int64 tensor of shape (2,).
        height, width: image size (scalar int tensors, ≥ 1).

    Returns:
        (top, left, crop_height, crop_width) as int32 scalars.
    """
    u = tf.random.stateless_uniform((2 * attempts + 2,), seed=seed)
    return _crop_box_from_uniforms(u, height, width, area, ratio, attempts)


def _crop_box_from_uniforms(u, height, width, area, ratio, attempts):
    """The crop box from (2·attempts + 2,) uniforms: areas, log-ratios, then the position."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    target_area = h * w * (area[0] + (area[1] - area[0]) * u[:attempts])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[attempts : 2 * attempts])
    crop_w = tf.round(tf.sqrt(target_area * aspect))
    crop_h = tf.round(tf.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    any_fits = tf.reduce_any(fits)

    # Fallback: the whole image, cropped centrally to the nearest allowed ratio.
    in_ratio = w / h
    fallback_w = tf.where(
        in_ratio < ratio[0], w, tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    )
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    crop_w = tf.where(any_fits, crop_w[first], fallback_w)
    crop_h = tf.where(any_fits, crop_h[first], fallback_h)
    pos_top, pos_left = u[2 * attempts], u[2 * attempts + 1]
    top = tf.where(any_fits, tf.floor(pos_top * (h - crop_h + 1)), tf.floor((h - crop_h) / 2))
    left = tf.where(any_fits, tf.floor(pos_left * (w - crop_w + 1)), tf.floor((w - crop_w) / 2))
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def _ranges(config):
    """(low, high) of each entry of _RANGES for this config."""
    return (
        (-config.brightness, config.brightness),
        (1 - config.contrast, 1 + config.contrast),
        (1 - config.saturation, 1 + config.saturation),
        (-config.hue, config.hue),
        config.blur_sigma,
    )


def sample_view_params(config, seed, height, width):
    """Every random decision of one view of one image, from one uniform draw.

    One `stateless_uniform` of 2·10 + 2 + 4 + 5 + 5 values holds, in this order, the crop
    box's uniforms, the four jitter-order keys, one uniform per Bernoulli decision (u < p)
    and one per scalar range (low + (high − low)·u). (A draw per decision would cost a seed
    split and an RNG op each, which dominates the views' time at small image sizes.)

    Returns:
        dict of scalar tensors: crop box (top, left, crop_height, crop_width), flip,
        jitter, brightness, contrast, saturation, hue, order ((4,) int32 permutation of
        0 brightness, 1 contrast, 2 saturation, 3 hue), grayscale, blur, sigma, solarize.
    """
    crop_count = 2 * _CROP_ATTEMPTS + 2
    u = tf.random.stateless_uniform(
        (crop_count + _NUM_JITTER_OPS + len(_COINS) + len(_RANGES),), seed=tf.cast(seed, tf.int64)
    )
    crop, keys, coins, scalars = tf.split(
        u, [crop_count, _NUM_JITTER_OPS, len(_COINS), len(_RANGES)]
    )
    top, left, crop_h, crop_w = _crop_box_from_uniforms(
        crop, height, width, config.crop_area, config.crop_ratio, _CROP_ATTEMPTS
    )
    order = tf.argsort(keys) if config.random_order else tf.range(_NUM_JITTER_OPS)
    probabilities = tf.constant([getattr(config, f"{name}_p") for name in _COINS])
    low, high = (tf.constant(bounds) for bounds in zip(*_ranges(config)))
    return {
        "top": top,
        "left": left,
        "crop_height": crop_h,
        "crop_width": crop_w,
        "order": tf.cast(order, tf.int32),
        **dict(zip(_COINS, tf.unstack(coins < probabilities))),
        **dict(zip(_RANGES, tf.unstack(low + (high - low) * scalars))),
    }


# ----------------------------------------------------------------------------- the ops
def to_rgb(image):
    """(H, W, C) uint8 or float image, C ∈ {1, 3, 4} → (H, W, 3), dtype kept (alpha dropped)."""
    channels = image.shape[-1]
    if channels not in (1, 3, 4):
        raise ValueError(f"Images need 1, 3 or 4 channels; got shape {image.shape}.")
    if image.dtype != tf.uint8 and not image.dtype.is_floating:
        raise TypeError(f"Images must be uint8 in [0, 255] or float in [0, 1]; got {image.dtype}.")
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    return image[..., :3]


def to_float(image):
    """uint8 [0, 255] → float32 [0, 1]; float images are cast to float32 unchanged."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def to_rgb_float(image):
    """(H, W, C) uint8 or float image, C ∈ {1, 3, 4} → (H, W, 3) float32 in [0, 1]."""
    return to_float(to_rgb(image))


def crop_and_resize(image, top, left, crop_height, crop_width, size):
    """Crops (top, left, h, w) from an (H, W, 3) image and resizes it bicubically.

    The crop is taken before the conversion to float, so a uint8 source is converted only
    where it is kept. Returns (size, size, 3) float32 in [0, 1].
    """
    crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_height, crop_width, 3]))
    resized = tf.image.resize(to_float(crop), (size, size), method="bicubic")
    return tf.clip_by_value(resized, 0.0, 1.0)


def adjust_brightness(image, delta):
    """x + δ, clipped to [0, 1]."""
    return tf.clip_by_value(image + delta, 0.0, 1.0)


def scale_brightness(image, delta):
    """x·(1 + δ), clipped to [0, 1] (torchvision's brightness factor 1 + δ)."""
    return tf.clip_by_value(image * (1.0 + delta), 0.0, 1.0)


def adjust_contrast(image, factor):
    """(x − μ_c)·f + μ_c with μ_c the per-channel mean over the image, clipped.

    TensorFlow's fused AdjustContrastv2 kernel computes exactly this (≈ 3× faster at 224 px
    than the same formula in separate ops).
    """
    return tf.clip_by_value(tf.image.adjust_contrast(image, factor), 0.0, 1.0)


def adjust_saturation(image, factor):
    """HSV saturation S → min(S·f, 1), hue and value kept, clipped.

    TensorFlow's fused AdjustSaturation kernel (one pass, no HSV tensor in memory).
    """
    return tf.clip_by_value(tf.image.adjust_saturation(image, factor), 0.0, 1.0)


def adjust_hue(image, delta):
    """HSV hue + δ (mod 1 turn), back to RGB, clipped.

    TensorFlow's fused AdjustHue kernel: equal to rgb_to_hsv → shift → hsv_to_rgb within
    1e-6 (tested) and ≈ 2.5× faster at 224 px.
    """
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


_NO_JITTER = _NUM_JITTER_OPS  # the op index of "leave the image as it is"


def jitter_op(image, op, params, brightness_mode="additive"):
    """Jitter op number `op` (0 brightness, 1 contrast, 2 saturation, 3 hue, 4 none)."""
    brightness = adjust_brightness if brightness_mode == "additive" else scale_brightness
    return tf.switch_case(
        op,
        [
            lambda: brightness(image, params["brightness"]),
            lambda: adjust_contrast(image, params["contrast"]),
            lambda: adjust_saturation(image, params["saturation"]),
            lambda: adjust_hue(image, params["hue"]),
            lambda: image,
        ],
    )


# XLA fuses one jitter op's per-pixel work into one loop: on a 2-core CPU the 224 px views
# went from ≈ 178 to ≈ 230 images/s in tf.data. One op per compiled call: compiling all
# four slots as one function took 14 s at 224 px (0.5 s for one slot), and at 32 px the
# call's overhead outweighs the gain. Blur stays out: XLA's CPU convolution is ~10× slower.
_compiled_jitter_op = tf.function(jitter_op, jit_compile=True)
COMPILED_MIN_SIZE = 96
"""tf.data runs the jitter ops XLA-compiled (`compiled=True`) from this view size up."""


def color_jitter(image, params, brightness_mode="additive", compiled=False):
    """The four jitter ops in `params["order"]` (entries 4 are skipped); one op per slot.

    compiled: run each op as an XLA-compiled function (same maths; views within 2e-5,
        tested).
    """
    op_fn = _compiled_jitter_op if compiled else jitter_op
    for slot in range(_NUM_JITTER_OPS):
        image = op_fn(image, params["order"][slot], params, brightness_mode)
    return image


def to_grayscale(image):
    """Luma 0.2989 R + 0.5870 G + 0.1140 B, repeated to 3 channels (one (3, 3) contraction)."""
    weights = tf.constant([[luma] * 3 for luma in _LUMA], image.dtype)
    return tf.tensordot(image, weights, axes=1)


def gaussian_blur(image, sigma, radius):
    """Separable Gaussian blur of an (H, W, 3) image, zero 'SAME' padding (official code)."""
    if radius < 1:
        return image
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * sigma**2))
    kernel /= tf.reduce_sum(kernel)
    vertical = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), [1, 1, 3, 1])
    horizontal = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), [1, 1, 3, 1])
    batch = image[tf.newaxis]
    batch = tf.nn.depthwise_conv2d(batch, vertical, [1, 1, 1, 1], "SAME")
    batch = tf.nn.depthwise_conv2d(batch, horizontal, [1, 1, 1, 1], "SAME")
    return batch[0]


def solarize(image, threshold=0.5):
    """x → 1 − x where x ≥ threshold.

    Written without tf.where (a slow select on CPU): at the paper's threshold 0.5 it is
    min(x, 1 − x); otherwise x + [x ≥ t]·(1 − 2x).
    """
    if isinstance(threshold, (int, float)) and threshold == 0.5:
        return tf.minimum(image, 1.0 - image)
    flipped = tf.cast(image >= threshold, image.dtype)
    return image + flipped * (1.0 - 2.0 * image)


def apply_view(image, params, size, config, compiled=False):
    """One view of one (H, W, 3) uint8 or float image with pre-sampled `params`.

    compiled: run the jitter ops XLA-compiled (see `color_jitter`).
    """
    view = crop_and_resize(
        image, params["top"], params["left"], params["crop_height"], params["crop_width"], size
    )
    return finish_view(view, params, size, config, compiled)


def finish_view(view, params, size, config, compiled=False):
    """Everything after the crop: flip, colour jitter, grayscale, blur, solarize, clip.

    compiled: run the jitter ops XLA-compiled (see `color_jitter`).
    """
    view = tf.cond(params["flip"], lambda: tf.image.flip_left_right(view), lambda: view)
    if config.jitter_p > 0:
        order = tf.where(params["jitter"], params["order"], _NO_JITTER)
        jitter_params = {name: params[name] for name in _JITTER_PARAMS}
        view = color_jitter(
            view, {**jitter_params, "order": order}, config.brightness_mode, compiled
        )
    if config.grayscale_p > 0:
        view = tf.cond(params["grayscale"], lambda: to_grayscale(view), lambda: view)
    radius = blur_radius(size, config.blur_kernel_fraction)
    if config.blur_p > 0 and radius >= 1:
        view = tf.cond(
            params["blur"], lambda: gaussian_blur(view, params["sigma"], radius), lambda: view
        )
    if config.solarize_p > 0:
        threshold = config.solarize_threshold
        view = tf.cond(params["solarize"], lambda: solarize(view, threshold), lambda: view)
    view = tf.clip_by_value(view, 0.0, 1.0)
    view.set_shape((size, size, 3))
    return view


def two_views(image, seed, size, view1=BYOL_VIEW1, view2=BYOL_VIEW2, compiled=False):
    """{"view1", "view2"}: two independent views, (size, size, 3) float32 in [0, 1].

    Args:
        image: (H, W, C) uint8 or float image, C ∈ {1, 3, 4}, H, W ≥ 2.
        seed: int32/int64 tensor of shape (2,); equal seeds give equal views.
        compiled: XLA-compile each view's colour stage (see `finish_view`).
    """
    image = to_rgb(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    views = {}
    for name, config, view_seed in (("view1", view1, seed1), ("view2", view2, seed2)):
        params = sample_view_params(config, view_seed, height, width)
        views[name] = apply_view(image, params, size, config, compiled)
    return views

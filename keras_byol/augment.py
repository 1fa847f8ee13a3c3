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
from keras_byol.view_kernels import (  # noqa: F401 (the ops' kernels, public here too)
    COMPILED_MIN_SIZE,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    flip,
    gaussian_blur,
    jitter_op,
    jitter_order,
    scale_brightness,
    solarize,
    to_grayscale,
)
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


def one_view(image, seed, size, config=LINEAR_EVAL_VIEW):
    """One random view (size, size, 3) float32 in [0, 1] of an (H, W, C) image; seed (2,)."""
    image = to_rgb(image)
    params = sample_view_params(
        config, tf.cast(seed, tf.int64), tf.shape(image)[0], tf.shape(image)[1]
    )
    return apply_view(image, params, size, config)


# ---------------------------------------------------------------------------- sampling
_CROP_ATTEMPTS = 10
_CROP_UNIFORMS = 2 * _CROP_ATTEMPTS + 2


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


def sample_view_params(config, seed, height, width):
    """Every random decision of one view of one image, from one uniform draw.

    One `stateless_uniform` holds, in this order, the crop box's 2·10 + 2 uniforms, each
    op's keys (`views.VIEW_OPS`: the jitter's 4 order keys), one uniform per op for its
    decision (u < p) and one per scalar range of each op (low + (high − low)·u): 36 values
    for BYOL's ops. (A draw per decision would cost a seed split and an RNG op each, which
    dominates the views' time at small image sizes.)

    Returns:
        dict of scalar tensors: the crop box (top, left, crop_height, crop_width), each
        op's decision (flip, jitter, grayscale, blur, solarize), its ranges (brightness,
        contrast, saturation, hue, sigma) and key parameters (order: (4,) int32
        permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue).
    """
    ops = views.VIEW_OPS
    ranges = [name for op in ops for name in op.ranges]
    sizes = [_CROP_UNIFORMS] + [op.keys for op in ops] + [len(ops), len(ranges)]
    u = tf.random.stateless_uniform((sum(sizes),), seed=tf.cast(seed, tf.int64))
    crop, *keys, coins, scalars = tf.split(u, sizes)
    top, left, crop_h, crop_w = _crop_box_from_uniforms(
        crop, height, width, config.crop_area, config.crop_ratio, _CROP_ATTEMPTS
    )
    params = {"top": top, "left": left, "crop_height": crop_h, "crop_width": crop_w}
    for op, op_keys in zip(ops, keys):
        if op.keys:
            params.update(op.tf_keys(op_keys, config))
    probabilities = tf.constant([getattr(config, op.probability) for op in ops], tf.float32)
    params.update(zip((op.name for op in ops), tf.unstack(coins < probabilities)))
    if ranges:
        bounds = [bound for op in ops for bound in op.bounds(config)]
        low, high = (tf.constant(b, tf.float32) for b in zip(*bounds))
        params.update(zip(ranges, tf.unstack(low + (high - low) * scalars)))
    return params


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


def apply_view(image, params, size, config, compiled=False):
    """One view of one (H, W, 3) uint8 or float image with pre-sampled `params`.

    compiled: run the jitter ops XLA-compiled (see `color_jitter`).
    """
    view = crop_and_resize(
        image, params["top"], params["left"], params["crop_height"], params["crop_width"], size
    )
    return finish_view(view, params, size, config, compiled)


def finish_view(view, params, size, config, compiled=False):
    """Everything after the crop: the ops of `views.VIEW_OPS` in order (flip, colour jitter,
    grayscale, blur, solarize), each where its decision says, then the clip to [0, 1].

    compiled: run the jitter ops XLA-compiled (see `color_jitter`).
    """
    for op in views.active_ops(config, size):
        view = tf.cond(
            params[op.name],
            lambda op=op, view=view: op.tf_apply(view, params, config, size, compiled),
            lambda view=view: view,
        )
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

"""BYOL's views against the spec, op by op, plus per-image randomness and seeding."""

import colorsys
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from keras_byol import augment
from tests import view_statistics

N = view_statistics.N


def _seeds(count, start=0):
    return tf.stack(
        [
            tf.range(start, start + count, dtype=tf.int64),
            tf.fill([count], tf.constant(7, tf.int64)),
        ],
        1,
    )


def _sample_many(config, count=N, height=view_statistics.SIDE, width=view_statistics.SIDE):
    fn = tf.function(lambda s: augment.sample_view_params(config, s, height, width))
    return {
        k: np.asarray(v)
        for k, v in tf.map_fn(
            fn,
            _seeds(count),
            fn_output_signature={
                k: tf.TensorSpec(v.shape, v.dtype)
                for k, v in fn(tf.constant([0, 0], tf.int64)).items()
            },
        ).items()
    }


@pytest.fixture(scope="module")
def view1_samples():
    return _sample_many(augment.BYOL_VIEW1)


@pytest.fixture(scope="module")
def view2_samples():
    return _sample_many(augment.BYOL_VIEW2)


# ------------------------------------------------------------------ presets and config
def test_presets_are_the_papers_values():
    v1, v2 = augment.BYOL_VIEW1, augment.BYOL_VIEW2
    assert (v1.crop_area, v1.crop_ratio, v1.flip_p) == ((0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    assert (v1.jitter_p, v1.brightness, v1.contrast, v1.saturation, v1.hue) == (
        0.8,
        0.4,
        0.4,
        0.2,
        0.1,
    )
    assert (v1.grayscale_p, v1.blur_p, v1.blur_sigma, v1.solarize_p) == (0.2, 1.0, (0.1, 2.0), 0.0)
    assert (v2.blur_p, v2.solarize_p) == (0.1, 0.2)
    # The small-image preset: the paper's views with multiplicative brightness (measured).
    assert augment.SMALL_IMAGE_VIEW1 == dataclasses.replace(v1, brightness_mode="multiplicative")
    assert augment.SMALL_IMAGE_VIEW2 == dataclasses.replace(v2, brightness_mode="multiplicative")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v1.flip_p = 0.1


@pytest.mark.parametrize(
    "field,value",
    [
        ("flip_p", 1.5),
        ("crop_area", (0.5, 0.1)),
        ("hue", 0.7),
        ("blur_sigma", (0, 1)),
        ("brightness_mode", "relative"),
    ],
)
def test_view_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        augment.ViewConfig(**{field: value})


# ------------------------------------------------------------- the draws' distributions
def test_crop_area_and_log_ratio_distributions(view1_samples):
    view_statistics.check_crop_area_and_log_ratio(view1_samples)


def test_crop_fallback_on_extreme_aspect_ratio():
    box = augment.sample_crop_box(tf.constant([1, 2], tf.int64), 2, 400, area=(0.9, 1.0))
    top, left, h, w = (int(v) for v in box)
    assert (h, w) == (2, 3) and top == 0 and left == (400 - 3) // 2


@pytest.mark.parametrize("key,view,expected", view_statistics.DECISION_RATES)
def test_decision_rates(view1_samples, view2_samples, key, view, expected):
    samples = view1_samples if view == 1 else view2_samples
    view_statistics.check_decision_rate(samples, key, expected)


def test_jitter_parameter_ranges_are_uniform(view1_samples):
    view_statistics.check_jitter_ranges(view1_samples)


def test_jitter_order_varies_over_all_permutations(view1_samples):
    view_statistics.check_jitter_orders(view1_samples)
    fixed = _sample_many(dataclasses.replace(augment.BYOL_VIEW1, random_order=False), count=50)
    assert all(tuple(o) == (0, 1, 2, 3) for o in fixed["order"])


# --------------------------------------------------------------------- the ops themselves
def _rng_image(seed=0, shape=(8, 8, 3)):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_brightness_is_additive_and_clipped():
    x = _rng_image()
    np.testing.assert_allclose(augment.adjust_brightness(x, 0.3), np.clip(x + 0.3, 0, 1), atol=1e-6)


def test_multiplicative_brightness_keeps_black_black():
    x = _rng_image()
    x[0, 0] = 0.0
    out = np.asarray(augment.scale_brightness(x, 0.3))
    np.testing.assert_allclose(out, np.clip(x * 1.3, 0, 1), atol=1e-6)
    assert (out[0, 0] == 0).all() and (
        np.asarray(augment.adjust_brightness(x, 0.3))[0, 0] > 0.29
    ).all()
    params = {"brightness": tf.constant(0.3), "contrast": tf.constant(1.0)}
    params.update(saturation=tf.constant(1.0), hue=tf.constant(0.0), order=tf.range(4))
    jittered = augment.color_jitter(x, params, brightness_mode="multiplicative")
    np.testing.assert_allclose(jittered, out, atol=1e-5)


def test_contrast_scales_around_the_per_channel_mean():
    x = 0.25 + 0.5 * _rng_image(1)
    mean = x.mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(
        augment.adjust_contrast(x, 1.3), np.clip((x - mean) * 1.3 + mean, 0, 1), atol=1e-6
    )


@pytest.mark.parametrize("factor,delta", [(1.2, 0.0), (0.8, 0.0), (1.0, 0.1), (1.0, -0.07)])
def test_saturation_and_hue_match_colorsys(factor, delta):
    x = _rng_image(2, (4, 4, 3))
    expected = np.empty_like(x)
    for i in np.ndindex(4, 4):
        h, s, v = colorsys.rgb_to_hsv(*x[i])
        expected[i] = colorsys.hsv_to_rgb((h + delta) % 1.0, min(s * factor, 1.0), v)
    out = augment.adjust_hue(augment.adjust_saturation(x, factor), delta)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_grayscale_uses_luma_weights():
    x = _rng_image(3)
    luma = x @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    out = np.asarray(augment.to_grayscale(x))
    np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), atol=1e-6)


def test_blur_kernel_size_rule_and_separable_gaussian():
    assert 2 * augment.blur_radius(224) + 1 == 23
    assert augment.blur_radius(32) == 1 and augment.blur_radius(16) == 0
    x = _rng_image(4, (16, 16, 3))
    radius, sigma = 3, 1.3
    k = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    padded = np.pad(x, ((radius, radius), (radius, radius), (0, 0)))
    rows = sum(k[i] * padded[i : i + 16] for i in range(2 * radius + 1))
    expected = sum(k[j] * rows[:, j : j + 16] for j in range(2 * radius + 1))
    np.testing.assert_allclose(augment.gaussian_blur(x, sigma, radius), expected, atol=1e-5)


def test_solarize_threshold():
    x = np.array([[[0.1, 0.49, 0.5], [0.51, 0.9, 1.0]]], np.float32)
    expected = np.array([[[0.1, 0.49, 0.5], [0.49, 0.1, 0.0]]], np.float32)
    np.testing.assert_allclose(augment.solarize(x, 0.5), expected, atol=1e-6)
    # Another threshold takes the general formula: 1 − x from the threshold on.
    y = _rng_image(6)
    np.testing.assert_allclose(augment.solarize(y, 0.3), np.where(y < 0.3, y, 1 - y), atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["ops", "xla"])
def test_color_jitter_follows_the_sampled_order(compiled):
    x = _rng_image(5)
    params = {
        "brightness": tf.constant(0.2),
        "contrast": tf.constant(1.4),
        "saturation": tf.constant(0.8),
        "hue": tf.constant(0.05),
    }
    ops = [
        lambda v: augment.adjust_brightness(v, 0.2),
        lambda v: augment.adjust_contrast(v, 1.4),
        lambda v: augment.adjust_saturation(v, 0.8),
        lambda v: augment.adjust_hue(v, 0.05),
    ]
    results = []
    ops.append(lambda v: v)  # op 4: no jitter in that slot
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [4, 4, 4, 4], [2, 4, 0, 4]):
        expected = x
        for i in order:
            expected = ops[i](expected)
        out = augment.color_jitter(x, {**params, "order": tf.constant(order)}, compiled=compiled)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        results.append(np.asarray(out))
    assert not np.allclose(results[0], results[1], atol=1e-3)  # the order matters
    np.testing.assert_array_equal(results[3], x)


def test_compiled_views_equal_the_op_by_op_views():
    """tf.data's XLA-compiled jitter (views ≥ COMPILED_MIN_SIZE) gives the same views."""
    size = augment.COMPILED_MIN_SIZE
    image = tf.constant(
        np.random.default_rng(3).integers(0, 256, (size + 20, size + 9, 3), dtype=np.uint8)
    )
    jittered = 0
    for start in range(6):
        seed = tf.constant([start, 11], tf.int64)
        plain = augment.two_views(image, seed, size)
        compiled = augment.two_views(image, seed, size, compiled=True)
        for name in ("view1", "view2"):
            np.testing.assert_allclose(compiled[name], plain[name], atol=2e-5)
        view_seed = tf.random.experimental.stateless_split(seed, 2)[0]  # as two_views
        jittered += int(augment.sample_view_params(augment.BYOL_VIEW1, view_seed, 1, 1)["jitter"])
    assert jittered >= 2  # the comparison covered jittered views


def test_the_layer_augmenter_is_named_where_it_runs():
    """augment (tf.data) no longer hands out the Keras-layer augmenter without a warning."""
    from keras_byol import views

    with pytest.warns(DeprecationWarning, match="keras_byol.views.TwoViewAugmenter"):
        assert augment.TwoViewAugmenter is views.TwoViewAugmenter
    with pytest.raises(AttributeError):
        augment.NoSuchThing  # noqa: B018

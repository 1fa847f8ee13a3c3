"""BYOL's views against the spec, op by op, plus per-image randomness and seeding."""

import colorsys
import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from keras_byol import augment

N = 4000  # draws per statistical test: the std of a rate is ≤ 0.008, an error of 0.05 is > 6σ


def _seeds(count, start=0):
    return tf.stack(
        [
            tf.range(start, start + count, dtype=tf.int64),
            tf.fill([count], tf.constant(7, tf.int64)),
        ],
        1,
    )


def _sample_many(config, count=N, height=1000, width=1000):
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
    small = augment.SMALL_IMAGE_VIEW1
    assert small.blur_p == 0 and (
        small.brightness,
        small.contrast,
        small.saturation,
        small.hue,
    ) == (0.2, 0.2, 0.1, 0.05)
    assert augment.SMALL_IMAGE_VIEW2.solarize_p == 0.2
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


# ------------------------------------------------------------------------- the crop
def test_crop_area_and_log_ratio_distributions(view1_samples):
    s = view1_samples
    area = s["crop_height"] * s["crop_width"] / 1e6
    log_ratio = np.log(s["crop_width"] / s["crop_height"])
    assert area.min() >= 0.08 - 0.002 and area.max() <= 1.0
    assert np.all(np.abs(log_ratio) <= math.log(4 / 3) + 0.01)
    assert np.all(s["top"] + s["crop_height"] <= 1000) and np.all(
        s["left"] + s["crop_width"] <= 1000
    )
    # Candidates with area ≤ 0.56 always fit a square image (√(0.56·4/3) < 1): there the
    # accepted area is U[0.08, 0.56] and log-ratio U[log 3/4, log 4/3].
    small = area <= 0.5
    hist, _ = np.histogram(area[small], bins=6, range=(0.08, 0.5))
    np.testing.assert_allclose(hist / hist.sum(), 1 / 6, atol=0.03)
    hist, _ = np.histogram(log_ratio[small], bins=6, range=(math.log(3 / 4), math.log(4 / 3)))
    np.testing.assert_allclose(hist / hist.sum(), 1 / 6, atol=0.03)
    # Mass above 0.5 (minus the few rejected big candidates): (1 − 0.5)/0.92 ≈ 0.54.
    assert 0.45 < np.mean(area > 0.5) < 0.56


def test_crop_fallback_on_extreme_aspect_ratio():
    box = augment.sample_crop_box(tf.constant([1, 2], tf.int64), 2, 400, area=(0.9, 1.0))
    top, left, h, w = (int(v) for v in box)
    assert (h, w) == (2, 3) and top == 0 and left == (400 - 3) // 2


# --------------------------------------------------------------- rates of each decision
@pytest.mark.parametrize(
    "key,view,expected",
    [
        ("flip", 1, 0.5),
        ("jitter", 1, 0.8),
        ("grayscale", 1, 0.2),
        ("blur", 1, 1.0),
        ("solarize", 1, 0.0),
        ("blur", 2, 0.1),
        ("solarize", 2, 0.2),
        ("flip", 2, 0.5),
    ],
)
def test_decision_rates(view1_samples, view2_samples, key, view, expected):
    samples = view1_samples if view == 1 else view2_samples
    assert np.mean(samples[key]) == pytest.approx(expected, abs=0.025)


def test_jitter_parameter_ranges_are_uniform(view1_samples):
    s = view1_samples
    for key, low, high in [
        ("brightness", -0.4, 0.4),
        ("contrast", 0.6, 1.4),
        ("saturation", 0.8, 1.2),
        ("hue", -0.1, 0.1),
    ]:
        values = s[key]
        assert values.min() >= low and values.max() <= high, key
        assert values.mean() == pytest.approx((low + high) / 2, abs=0.02 * (high - low)), key
        assert values.std() == pytest.approx((high - low) / math.sqrt(12), rel=0.05), key
    sigma = s["sigma"]
    assert (
        sigma.min() >= 0.1 and sigma.max() <= 2.0 and sigma.mean() == pytest.approx(1.05, abs=0.03)
    )


def test_jitter_order_varies_over_all_permutations(view1_samples):
    orders = [tuple(o) for o in view1_samples["order"]]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    counts = {o: orders.count(o) for o in set(orders)}
    assert len(counts) == 24
    assert max(counts.values()) / N < 1 / 24 + 0.02 and min(counts.values()) / N > 1 / 24 - 0.02
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


# ---------------------------------------------------------- the augmenter end to end
def test_augmenter_output_contract_for_uint8_and_float_inputs():
    rng = np.random.default_rng(6)
    uint8 = rng.integers(0, 256, (6, 40, 30, 3), dtype=np.uint8)
    augmenter = augment.TwoViewAugmenter(image_size=24, seed=1)
    for images in (uint8, uint8.astype(np.float32) / 255):
        views = augmenter(images)
        assert set(views) == {"view1", "view2"}
        for v in views.values():
            v = np.asarray(v)
            assert (
                v.shape == (6, 24, 24, 3)
                and v.dtype == np.float32
                and v.min() >= 0
                and v.max() <= 1
            )


def test_grayscale_rgba_and_tiny_images_are_accepted():
    rng = np.random.default_rng(7)
    augmenter = augment.TwoViewAugmenter(image_size=8, seed=0)
    for images in (
        rng.integers(0, 256, (2, 10, 10, 1), dtype=np.uint8),
        rng.integers(0, 256, (2, 10, 10, 4), dtype=np.uint8),
        rng.integers(0, 256, (2, 2, 2, 3), dtype=np.uint8),
    ):
        assert augmenter(images)["view1"].shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="channels"):
        augmenter(np.zeros((2, 10, 10, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        augmenter(np.zeros((2, 10, 10, 3), np.int32))


def test_every_decision_is_per_image_and_seeded():
    image = np.random.default_rng(8).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    batch = np.repeat(image, 16, axis=0)  # the same image 16 times
    views = augment.TwoViewAugmenter(image_size=16, seed=3)(batch)
    v1 = np.asarray(views["view1"]).reshape(16, -1)
    assert len({row.tobytes() for row in v1}) == 16  # 16 different views of one image
    assert not np.allclose(views["view1"], views["view2"])
    again = augment.TwoViewAugmenter(image_size=16, seed=3)(batch)
    np.testing.assert_array_equal(views["view1"], again["view1"])
    other = augment.TwoViewAugmenter(image_size=16, seed=4)(batch)
    assert not np.allclose(views["view1"], other["view1"])


def test_augmenter_config_roundtrip():
    augmenter = augment.TwoViewAugmenter(
        augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2, image_size=32, seed=5
    )
    restored = augment.TwoViewAugmenter.from_config(augmenter.get_config())
    assert (
        restored.view1 == augment.SMALL_IMAGE_VIEW1 and restored.view2 == augment.SMALL_IMAGE_VIEW2
    )
    assert (restored.image_size, restored.seed) == (32, 5)

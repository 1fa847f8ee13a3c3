"""The Keras-layer views (keras_byol.views) on the current backend: the tf.data views'
maths for the same decisions, their distributions, per image and seeded, and inside BYOL's
compiled train step. Also runs on the JAX backend (tests/test_jax_backend.py)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_byol
from keras_byol import augment, views
from tests import view_statistics

from conftest import tiny_encoder

BOX_KEYS = ("top", "left", "crop_height", "crop_width")


def _samples(config):
    pipeline = views.view_pipeline(config, 32, seed=0)
    side = view_statistics.SIDE
    return views.sample_view_params(pipeline, view_statistics.N, side, side)


@pytest.fixture(scope="module")
def view1_samples():
    return _samples(views.BYOL_VIEW1)


@pytest.fixture(scope="module")
def view2_samples():
    return _samples(views.BYOL_VIEW2)


# ------------------------------------------------------------- the draws' distributions
def test_crop_area_and_log_ratio_distributions(view1_samples):
    view_statistics.check_crop_area_and_log_ratio(view1_samples)


def test_crop_fallback_on_extreme_aspect_ratio():
    boxes = views.RandomResizedCrop(3, area=(0.9, 1.0), seed=1).sample_boxes(4, 2, 400)
    top, left, h, w = (np.asarray(boxes[key]) for key in BOX_KEYS)
    assert np.all(h == 2) and np.all(w == 3) and np.all(top == 0)
    assert np.all(left == (400 - 3) // 2)


@pytest.mark.parametrize("key,view,expected", view_statistics.DECISION_RATES)
def test_decision_rates(view1_samples, view2_samples, key, view, expected):
    samples = view1_samples if view == 1 else view2_samples
    view_statistics.check_decision_rate(samples, key, expected)


def test_jitter_parameter_ranges_and_orders(view1_samples):
    view_statistics.check_jitter_ranges(view1_samples)
    view_statistics.check_jitter_orders(view1_samples)
    view_statistics.check_independent_decisions(view1_samples)
    fixed = views.view_pipeline(dataclasses.replace(views.BYOL_VIEW1, random_order=False), 32)
    orders = views.sample_view_params(fixed, 50, 64, 64)["order"]
    assert np.all(orders == [0, 1, 2, 3])


# ------------------------------------------------ the tf.data views' maths, exactly
def _tfdata_view(image, params, size, config):
    params = {key: tf.constant(value) for key, value in params.items()}
    params.update({key: tf.cast(params[key], tf.int32) for key in BOX_KEYS})
    return augment.apply_view(tf.constant(image), params, size, config).numpy()


OTHER_VIEW = dataclasses.replace(
    views.BYOL_VIEW2,
    brightness_mode="multiplicative",
    random_order=False,
    solarize_p=0.5,
    solarize_threshold=0.3,
    blur_p=0.5,
)


@pytest.mark.parametrize("size", [24, 40])
@pytest.mark.parametrize("config", [views.BYOL_VIEW1, views.BYOL_VIEW2, OTHER_VIEW])
def test_views_equal_the_tfdata_views_for_the_same_decisions(config, size):
    """Every op (crop + bicubic resize up and down, flip, jitter in each order, grayscale,
    blur, solarize) as `augment.apply_view`: 16 images, each with its own decisions."""
    images = np.random.default_rng(size).integers(0, 256, (16, 37, 29, 3), dtype=np.uint8)
    pipeline = views.view_pipeline(config, size, seed=size)
    params = views.sample_view_params(pipeline, 16, 37, 29)
    device = np.asarray(views.apply_view_params(pipeline, images, params))
    one = {key: value[0] for key, value in params.items()}
    assert device.shape == (16, size, size, 3)
    for i in range(16):
        one = {key: value[i] for key, value in params.items()}
        np.testing.assert_allclose(device[i], _tfdata_view(images[i], one, size, config), atol=1e-5)
    # The decisions varied: every op ran on some images and not on others.
    for key in ("flip", "jitter", "grayscale", "solarize"):
        assert 0 < np.mean(params[key]) < 1 or getattr(config, f"{key}_p") in (0, 1), key


# ------------------------------------------------ a new view op, added in one place
FadeConfig = dataclasses.make_dataclass(
    "FadeConfig", [("fade_p", float, 0.0)], bases=(views.ViewConfig,), frozen=True
)
FADE = views.ViewOp(
    "fade",
    "fade_p",
    ranges=("strength",),
    bounds=lambda config: ((0.2, 0.6),),
    tf_apply=lambda view, params, config, size, compiled: view * params["strength"],
    keras_apply=lambda backend, images, params, config: (
        images * backend.numpy.reshape(params["strength"], (-1, 1, 1, 1))
    ),
)


def _fade_factors(faded, plain):
    """Per image, faded / plain where plain is bright enough: one factor per image."""
    ratios = []
    for f, p in zip(np.asarray(faded), np.asarray(plain)):
        bright = p > 0.05
        assert bright.any()
        r = f[bright] / p[bright]
        np.testing.assert_allclose(r, r.mean(), rtol=1e-4)
        ratios.append(r.mean())
    return np.array(ratios)


def test_a_view_op_added_to_the_registry_runs_in_both_executors(monkeypatch):
    """One `ViewOp` entry (its config field on a ViewConfig, its ranges, a TensorFlow and a
    Keras-ops kernel) and nothing else: the tf.data views and the views in the step both
    apply it where its decision says, with a strength drawn per image in its bounds."""
    monkeypatch.setattr(views, "VIEW_OPS", [*views.VIEW_OPS, FADE])
    off = FadeConfig(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    on = dataclasses.replace(off, fade_p=1.0)
    images = np.random.default_rng(4).integers(30, 256, (6, 30, 26, 3), dtype=np.uint8)

    # tf.data: the same seed gives the same crop; the op scales each view by its strength.
    def tfdata(config):
        return np.stack(
            [
                augment.two_views(tf.constant(image), tf.constant([i, 1]), 16, config, config)[
                    "view1"
                ].numpy()
                for i, image in enumerate(images)
            ]
        )

    factors = _fade_factors(tfdata(on), tfdata(off))
    assert np.all((factors >= 0.2) & (factors <= 0.6)) and np.ptp(factors) > 0.05
    params = augment.sample_view_params(on, tf.constant([0, 1]), 30, 26)
    assert bool(params["fade"]) and 0.2 <= float(params["strength"]) <= 0.6

    # The Keras layers: the same crop seeds; the op's layer draws per image.
    def device(config):
        return views.TwoViewAugmenter(config, config, image_size=16, seed=7)(images)["view1"]

    factors = _fade_factors(device(on), device(off))
    assert np.all((factors >= 0.2) & (factors <= 0.6)) and np.ptp(factors) > 0.05
    pipeline = views.view_pipeline(dataclasses.replace(on, fade_p=0.5), 16, seed=2)
    drawn = views.sample_view_params(pipeline, 200, 30, 26)
    assert 0.35 < drawn["fade"].mean() < 0.65 and drawn["strength"].shape == (200,)
    first = {key: value[:6] for key, value in drawn.items()}
    faded = first["fade"]
    assert faded.any() and not faded.all()
    decided = views.apply_view_params(pipeline, images, first)
    plain = views.apply_view_params(pipeline, images, {**first, "fade": np.zeros(6, bool)})
    factors = _fade_factors(decided, plain)
    np.testing.assert_allclose(factors[faded], first["strength"][faded], rtol=1e-4)
    np.testing.assert_allclose(factors[~faded], 1.0, rtol=1e-6)


# ------------------------------------------------ the views' distribution, two-sample
def _colourful_image(height=48, width=40):
    """A deterministic RGB image with gradients, edges and saturated colours."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = np.stack([x, y, 0.5 + 0.5 * np.sin(8 * x * y)], axis=-1)
    image[height // 3 : height // 2, width // 4 :] = (0.9, 0.1, 0.2)
    return np.round(255 * image).astype(np.uint8)


def _view_statistics(batch):
    """Per view: channel means, contrast, edge strength, bright fraction, colourfulness."""
    batch = np.asarray(batch, np.float64)
    return {
        "red": batch[..., 0].mean(axis=(1, 2)),
        "green": batch[..., 1].mean(axis=(1, 2)),
        "std": batch.std(axis=(1, 2, 3)),
        "edges": np.abs(np.diff(batch, axis=2)).mean(axis=(1, 2, 3)),
        "bright": (batch > 0.5).mean(axis=(1, 2, 3)),
        "colour": batch.std(axis=3).mean(axis=(1, 2)),
    }


def _ks_statistic(a, b):
    """The two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|."""
    grid = np.concatenate([a, b])
    return np.max(
        np.abs(
            np.searchsorted(np.sort(a), grid, side="right") / len(a)
            - np.searchsorted(np.sort(b), grid, side="right") / len(b)
        )
    )


VIEWS_PER_SAMPLE = 800
# Critical KS distance at α = 1e-4 per statistic (12 comparisons: family-wise < 0.2%).
KS_CRITICAL = np.sqrt(-0.5 * np.log(1e-4 / 2)) * np.sqrt(2 / VIEWS_PER_SAMPLE)


def _tfdata_views(image, config, size, count=VIEWS_PER_SAMPLE):
    seeds = tf.stack(
        [tf.range(count, dtype=tf.int64), tf.fill([count], tf.constant(3, tf.int64))], 1
    )
    image = tf.constant(image)

    @tf.function
    def one(seed):
        params = augment.sample_view_params(config, seed, image.shape[0], image.shape[1])
        return augment.apply_view(image, params, size, config)

    return tf.map_fn(one, seeds, fn_output_signature=tf.float32).numpy()


def _layer_views(image, config, size, count=VIEWS_PER_SAMPLE):
    pipeline = views.view_pipeline(config, size, seed=5)
    return np.asarray(pipeline(np.repeat(image[None], count, axis=0)))


@pytest.mark.parametrize("config", [views.BYOL_VIEW1, views.BYOL_VIEW2], ids=["view1", "view2"])
def test_views_are_distributed_as_the_tfdata_views(config):
    """A two-sample KS test per view statistic: the layers' views against tf.data's, of one
    image; a config changed by the size of a real mistake is told apart (the test's power)."""
    image = _colourful_image()
    reference = _view_statistics(_tfdata_views(image, config, 32))
    same = _view_statistics(_layer_views(image, config, 32))
    distances = {key: _ks_statistic(same[key], reference[key]) for key in reference}
    assert max(distances.values()) < KS_CRITICAL, (distances, KS_CRITICAL)
    # Each mistake is told apart (measured KS distances 0.13–0.25 against 0.11).
    for mistake in (
        dataclasses.replace(config, grayscale_p=0.4),
        dataclasses.replace(config, crop_area=(0.35, 1.0)),
        dataclasses.replace(config, brightness=0.2, contrast=0.2, saturation=0.1, hue=0.05),
        dataclasses.replace(config, blur_p=0.5),
        dataclasses.replace(config, brightness_mode="multiplicative"),
    ):
        wrong = _view_statistics(_layer_views(image, mistake, 32))
        distances = {key: _ks_statistic(wrong[key], reference[key]) for key in reference}
        assert max(distances.values()) > KS_CRITICAL, (mistake, distances)


# ------------------------------------------------------------------ the layer itself
def test_augmenter_output_contract_for_uint8_and_float_inputs():
    rng = np.random.default_rng(6)
    uint8 = rng.integers(0, 256, (6, 40, 30, 3), dtype=np.uint8)
    augmenter = views.TwoViewAugmenter(image_size=24, seed=1)
    first = None
    for images in (uint8, uint8.astype(np.float32) / 255):
        result = augmenter(images)
        assert set(result) == {"view1", "view2"}
        for view in result.values():
            view = np.asarray(view)
            assert view.shape == (6, 24, 24, 3) and view.dtype == np.float32
            assert view.min() >= 0 and view.max() <= 1
        first = result if first is None else first
    keras.config.set_dtype_policy("mixed_bfloat16")  # views stay float32 under a mixed policy
    mixed = views.TwoViewAugmenter(image_size=24, seed=1)(uint8)
    assert keras.backend.standardize_dtype(mixed["view1"].dtype) == "float32"


def test_grayscale_rgba_and_tiny_images_are_accepted():
    rng = np.random.default_rng(7)
    augmenter = views.TwoViewAugmenter(image_size=8, seed=0)
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
    with pytest.raises(ValueError, match="flip_p"):
        views.view_pipeline(dataclasses.replace(views.BYOL_VIEW1, flip_p=0.3), 8)


def test_every_decision_is_per_image_and_seeded():
    image = np.random.default_rng(8).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    batch = np.repeat(image, 16, axis=0)  # the same image 16 times
    result = views.TwoViewAugmenter(image_size=16, seed=3)(batch)
    v1 = np.asarray(result["view1"]).reshape(16, -1)
    assert len({row.tobytes() for row in v1}) == 16  # 16 different views of one image
    assert not np.allclose(result["view1"], result["view2"])
    again = views.TwoViewAugmenter(image_size=16, seed=3)(batch)
    np.testing.assert_array_equal(result["view1"], again["view1"])
    other = views.TwoViewAugmenter(image_size=16, seed=4)(batch)
    assert not np.allclose(result["view1"], other["view1"])


def _compiled(augmenter):
    """The augmenter as a compiled step runs it: tf.function, or jax.jit with its seed
    states threaded statelessly (keras_byol's JAX step)."""
    if keras.backend.backend() == "tensorflow":
        return tf.function(augmenter)
    import jax

    from keras_byol.backends.jax import _run_stateless

    variables = augmenter.non_trainable_variables
    values = [v.value for v in variables]
    return jax.jit(lambda images: _run_stateless(variables, values, lambda: augmenter(images))[0])


def test_compiled_views_equal_the_eager_views():
    """Inside a compiled step uint8 images are scaled as eagerly (Keras' data layers cast
    uint8 to float without scaling inside a TF graph: every view came out near white)."""
    images = np.random.default_rng(11).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    eager = views.TwoViewAugmenter(views.BYOL_VIEW1, views.BYOL_VIEW2, 16, seed=2)(images)
    compiled = views.TwoViewAugmenter(views.BYOL_VIEW1, views.BYOL_VIEW2, 16, seed=2)
    compiled = _compiled(compiled)(images)
    for name in ("view1", "view2"):
        np.testing.assert_allclose(np.asarray(compiled[name]), np.asarray(eager[name]), atol=1e-5)
    assert 0.2 < float(np.mean(np.asarray(compiled["view1"]))) < 0.8


def _custom_view(size):
    return keras.layers.Pipeline(
        [views.RandomResizedCrop(size, area=(0.5, 1.0), seed=0), keras.layers.RandomFlip(seed=1)]
    )


def test_any_keras_layer_is_a_view_and_the_config_roundtrips():
    augmenter = views.TwoViewAugmenter(_custom_view(16), views.SMALL_IMAGE_VIEW2, 16, seed=5)
    images = np.random.default_rng(9).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    assert augmenter(images)["view1"].shape == (4, 16, 16, 3)
    restored = views.TwoViewAugmenter.from_config(augmenter.get_config())
    assert restored.view2 == views.SMALL_IMAGE_VIEW2 and (restored.image_size, restored.seed) == (
        16,
        5,
    )
    crop = restored.view1.layers[0]
    assert isinstance(crop, views.RandomResizedCrop) and crop.area == (0.5, 1.0)
    assert restored(images)["view1"].shape == (4, 16, 16, 3)


def test_byol_trains_with_the_views_in_its_step_and_saves(tmp_path):
    """uint8 batches in; the views drawn inside the compiled step change every step (the
    seed state advances in the step on every backend); the model round-trips .keras."""
    images = np.random.default_rng(10).integers(0, 256, (16, 20, 20, 3), dtype=np.uint8)
    augmenter = views.TwoViewAugmenter(views.SMALL_IMAGE_VIEW1, _custom_view(16), 16, seed=0)
    model = keras_byol.BYOL(
        tiny_encoder(16),
        projection_dim=8,
        hidden_dim=16,
        augmenter=augmenter,
        target_decay=keras_byol.schedules.CosineTargetDecay(0.996, 6),
    )
    model.compile(optimizer="sgd")
    crop = augmenter.pipeline1.layers[0]
    before = np.asarray(crop.generator.state.value)
    history = model.fit({"images": images}, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = np.asarray(crop.generator.state.value)
    assert after[1] == before[1] + 4  # one draw per step: 2 epochs × 2 batches
    model.save(tmp_path / "byol.keras")
    restored = keras.models.load_model(tmp_path / "byol.keras")
    assert restored.augmenter.view1 == views.SMALL_IMAGE_VIEW1
    np.testing.assert_array_equal(restored.augmenter.pipeline1.layers[0].generator.state, after)
    restored.fit({"images": images}, batch_size=8, epochs=1, verbose=0)


# ------------------------------------------------------ raw-image batches, no TensorFlow
def test_image_batches_of_an_array_and_of_a_folder(tmp_path):
    from PIL import Image

    from keras_byol.image_batches import ImageBatches

    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    batches = ImageBatches(images, batch_size=4, image_size=8, labels=np.arange(10), seed=1)
    assert len(batches) == 2  # the partial batch is dropped: one batch shape for the step
    seen = [batches[i]["label"] for i in range(2)]
    np.testing.assert_array_equal([b["images"][:, 0, 0, 0] for b in (batches[0], batches[1])], seen)
    batches.on_epoch_end()
    assert not np.array_equal(np.concatenate(seen), [batches[i]["label"] for i in range(2)])
    with pytest.raises(ValueError, match="fewer than one batch"):
        ImageBatches(images, batch_size=11, image_size=8)
    for name, size in (("a", (30, 20)), ("b", (12, 40))):  # portrait and landscape
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", size, (200 * i, 50, 100)).save(tmp_path / name / f"{i}.png")
    folder = ImageBatches(tmp_path, batch_size=4, image_size=14, seed=None)
    batch = folder[0]
    assert folder.class_names == ["a", "b"] and batch["images"].shape == (4, 16, 16, 3)
    assert batch["images"].dtype == np.uint8 and list(batch["label"]) == [0, 0, 1, 1]
    np.testing.assert_array_equal(batch["images"][1, 8, 8], (200, 50, 100))

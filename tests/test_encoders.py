"""ResNet encoders: parameter counts of the standard architectures, stems, norms, WS conv."""

import keras
import numpy as np
import pytest

from keras_byol import encoders
from keras_byol.heads import MLPHead


def _trainable_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    "name,params",
    # torchvision's parameter counts without the final fc (a reference outside this code).
    [("resnet18", 11_689_512 - 513_000), ("resnet50", 25_557_032 - 2_049_000)],
)
def test_imagenet_resnets_have_the_standard_parameter_count(name, params):
    encoder = encoders.resnet(name, input_shape=(224, 224, 3))
    assert _trainable_params(encoder) == params
    assert encoder.output.shape[-1] == (512 if name == "resnet18" else 2048)


def test_small_image_stem_is_3x3_stride_1_without_pool():
    encoder = encoders.resnet("resnet18", input_shape=(32, 32, 3), small_images=True)
    # 7×7×3×64 stem replaced by 3×3×3×64.
    assert _trainable_params(encoder) == 11_689_512 - 513_000 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in encoder.layers)
    stem = encoder.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    # Spatial size stays 32 through the first stage (stride 1 stem, no pool).
    assert encoder.get_layer("stage1_block1_out").output.shape[1:3] == (32, 32)


@pytest.mark.parametrize(
    "name,feature_dim",
    [("resnet34", 512), ("resnet101", 2048), ("resnet152", 2048), ("resnet200", 2048)],
)
def test_deeper_resnets_build_and_pool(name, feature_dim):
    encoder = encoders.resnet(name, input_shape=(32, 32, 3), small_images=True)
    assert encoder.output.shape[-1] == feature_dim
    out = encoder(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))
    assert out.shape == (2, feature_dim) and np.all(np.isfinite(np.asarray(out)))


def test_width_multiplier_scales_channels():
    encoder = encoders.resnet("resnet50", input_shape=(64, 64, 3), width=2)
    assert encoder.output.shape[-1] == 4096
    assert encoder.get_layer("stem_conv").filters == 128
    quarter = encoders.resnet("resnet18", input_shape=(32, 32, 3), small_images=True, width=0.25)
    assert quarter.output.shape[-1] == 128 and quarter.get_layer("stem_conv").filters == 16
    with pytest.raises(ValueError, match="width"):
        encoders.resnet("resnet18", (32, 32, 3), width=0.3)


def test_input_normalization_is_part_of_the_network():
    encoder = encoders.resnet("resnet18", input_shape=(32, 32, 3), small_images=True)
    norm = encoder.get_layer("imagenet_normalization")
    mean_image = np.broadcast_to(np.array(encoders.IMAGENET_MEAN, "float32"), (1, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(norm(mean_image)), 0.0, atol=1e-6)
    one = np.ones((1, 1, 1, 3), "float32")
    expected = (1 - np.array(encoders.IMAGENET_MEAN)) / np.array(encoders.IMAGENET_STD)
    np.testing.assert_allclose(np.asarray(norm(one))[0, 0, 0], expected, rtol=1e-5)


def test_residual_branches_end_with_zero_gamma():
    encoder = encoders.resnet("resnet18", input_shape=(32, 32, 3), small_images=True)
    assert np.all(np.asarray(encoder.get_layer("stage1_block1_b_norm").gamma) == 0)
    assert np.all(np.asarray(encoder.get_layer("stage1_block1_a_norm").gamma) == 1)
    plain = encoders.resnet("resnet18", (32, 32, 3), small_images=True, zero_init_residual=False)
    assert np.all(np.asarray(plain.get_layer("stage1_block1_b_norm").gamma) == 1)


def test_batchnorm_follows_the_recipe():
    encoder = encoders.resnet("resnet18", input_shape=(32, 32, 3), small_images=True)
    bns = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)


def test_group_norm_weight_standardization_variant():
    encoder = encoders.resnet(
        "resnet18", input_shape=(32, 32, 3), small_images=True, norm="group_ws"
    )
    kinds = {type(layer).__name__ for layer in encoder.layers}
    assert "BatchNormalization" not in kinds and "FusedBatchNormalization" not in kinds
    assert {"GroupNormalization", "WSConv2D"} <= kinds
    # Without batch statistics, one image's features do not depend on the rest of the batch.
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    together = np.asarray(encoder(images, training=True))
    alone = np.asarray(encoder(images[:1], training=True))
    np.testing.assert_allclose(together[:1], alone, rtol=1e-4, atol=1e-5)


def test_ws_conv_standardizes_each_filter():
    layer = encoders.WSConv2D(4, 3, padding="same", use_bias=False)
    images = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    out = np.asarray(layer(images))
    kernel = np.asarray(layer.kernel).astype("float64")
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    std = np.sqrt(kernel.var(axis=(0, 1, 2), keepdims=True) + 1e-5)
    expected = keras.ops.conv(images, ((kernel - mean) / std).astype("float32"), 1, "same")
    np.testing.assert_allclose(out, np.asarray(expected), rtol=1e-4, atol=1e-5)
    restored = encoders.WSConv2D.from_config(layer.get_config())
    assert restored.ws_epsilon == 1e-5


def test_bad_encoder_arguments():
    with pytest.raises(ValueError, match="Unknown encoder"):
        encoders.resnet("resnet19", (32, 32, 3))
    with pytest.raises(ValueError, match="norm"):
        encoders.resnet("resnet18", (32, 32, 3), norm="layer")
    with pytest.raises(ValueError, match="3 channels"):
        encoders.resnet("resnet18", (32, 32, 1))


def test_mlp_head_shape_and_roundtrip(tmp_path):
    head = MLPHead(32, 8, name="projector")
    x = np.random.default_rng(2).random((4, 16), dtype=np.float32)
    out = head(x, training=True)
    assert out.shape == (4, 8)
    assert [type(layer).__name__ for layer in (head.hidden, head.norm, head.out)] == [
        "Dense",
        "FusedBatchNormalization",
        "Dense",
    ]
    inputs = keras.Input((16,))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "head.keras")
    restored = keras.models.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), rtol=1e-6)

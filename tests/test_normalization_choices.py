"""Normalization per network part (encoder: batch | group_ws | none; heads: batch | layer |
group | none): each choice builds, trains and round-trips; batch-free models compute every
example alone; concatenated views stay exact without BatchNorm."""

import keras
import numpy as np
import pytest

import keras_byol
from keras_byol import encoders
from keras_byol.ablation import VARIANTS
from keras_byol.normalization import layers_reading_batch_statistics
from tests.conftest import view_batches

IMAGE = 8


def _byol(encoder_norm, head_norm, concat_views=False):
    encoder = encoders.resnet(
        "resnet18", (IMAGE, IMAGE, 3), small_images=True, width=0.125, norm=encoder_norm
    )
    return keras_byol.BYOL(
        encoder, projection_dim=8, hidden_dim=64, head_norm=head_norm, concat_views=concat_views
    )


def online_and_target_outputs(model, view1, view2):
    """Every per-example output of one training-mode forward pass, as NumPy arrays."""
    online, target = model.forward_both_views(view1, view2)
    return [np.asarray(x) for x in (*online, *target)]


def assert_each_example_computed_alone(model, view1, view2):
    """The batch and its examples one at a time give the same outputs (training mode:
    BatchNorm would normalize each example with its batch's statistics)."""
    together = online_and_target_outputs(model, view1, view2)
    alone = [
        online_and_target_outputs(model, view1[i : i + 1], view2[i : i + 1])
        for i in range(len(view1))
    ]
    for index, batch_output in enumerate(together):
        one_by_one = np.concatenate([outputs[index] for outputs in alone])
        assert_same_up_to_rounding(one_by_one, batch_output)


def assert_same_up_to_rounding(got, want):
    """Float rounding only: convolution kernels differ with the batch size (up to 3e-5 on a
    ResNet-50 at 32 px; 1.2e-4 on JAX at 8 px); a batch statistic changes outputs by ~0.1."""
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4)


def test_an_encoder_without_normalization_has_biases_and_no_norm_layer():
    encoder = encoders.resnet("resnet18", (IMAGE, IMAGE, 3), small_images=True, norm="none")
    kinds = {type(layer).__name__ for layer in encoder.layers}
    assert not kinds & {"BatchNormalization", "FusedBatchNormalization", "GroupNormalization"}
    convolutions = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(conv.use_bias for conv in convolutions)
    with pytest.raises(ValueError, match="zero_init_residual=False"):
        encoders.resnet("resnet18", (IMAGE, IMAGE, 3), norm="none", zero_init_residual=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        encoders.resnet("resnet18", (IMAGE, IMAGE, 3), norm="layer")


# Every encoder normalization and every head normalization but "layer" (whose head is
# trained on both backends in test_accumulation.py); the two mixed variants combine the
# same layers (they were trained end to end by the ablation run, not here: CI time).
COVERING = [v for v in VARIANTS if v.name in ("bn_everywhere", "no_norm", "gn_ws")]


@pytest.mark.slow
@pytest.mark.parametrize("variant", COVERING, ids=[v.name for v in COVERING])
def test_each_normalization_trains_and_round_trips(variant, tmp_path):
    keras.utils.set_random_seed(0)
    model = _byol(variant.encoder_norm, variant.head_norm)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    view1, view2 = view_batches(8, image_size=IMAGE)
    before = [np.array(v) for v in model.encoder.weights]
    history = model.fit({"view1": view1, "view2": view2}, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.encoder.weights))
    reads_batch = layers_reading_batch_statistics(model.encoder, model.projector, model.predictor)
    assert bool(reads_batch) == ("batch" in (variant.encoder_norm, variant.head_norm))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.projector.norm_kind == loaded.predictor.norm_kind == variant.head_norm
    for got, want in zip(
        online_and_target_outputs(loaded, view1, view2),
        online_and_target_outputs(model, view1, view2),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_batch_statistics_each_example_is_computed_alone():
    keras.utils.set_random_seed(0)
    view1, view2 = view_batches(4, image_size=IMAGE)
    for encoder_norm, head_norm in (("group_ws", "group"), ("group_ws", "layer"), ("none", "none")):
        model = _byol(encoder_norm, head_norm)
        assert (
            layers_reading_batch_statistics(
                model.encoder, model.projector, model.predictor, model.target_encoder
            )
            == []
        )
        assert_each_example_computed_alone(model, view1, view2)
    with pytest.raises(AssertionError):  # the check sees BatchNorm reading the batch
        assert_each_example_computed_alone(_byol("batch", "none"), view1, view2)


def test_concatenated_views_equal_a_pass_per_view_without_batchnorm():
    view1, view2 = view_batches(8, image_size=IMAGE)
    outputs = []
    for concat_views in (False, True):
        keras.utils.set_random_seed(0)
        model = _byol("group_ws", "group", concat_views)
        outputs.append(online_and_target_outputs(model, view1, view2))
    for got, want in zip(*outputs):
        assert_same_up_to_rounding(got, want)


def test_group_normalization_of_one_value_per_group_is_refused():
    """GroupNorm over a group holding one value outputs a constant: nothing would learn."""
    with pytest.raises(ValueError, match="normalizes every value to a constant"):
        encoders.resnet("resnet18", (8, 8, 3), small_images=True, width=0.0625, norm="group_ws")

"""The heads' initializations: Haiku's (the official code's) measured against Haiku itself."""

import haiku as hk
import jax
import keras
import numpy as np
import pytest

import keras_byol
from keras_byol.heads import HEAD_INITS, MLPHead

FAN_IN, HIDDEN = 512, 2048


def dense_statistics(init):
    keras.utils.set_random_seed(0)
    head = MLPHead(HIDDEN, 256, init=init)
    head.build((None, FAN_IN))
    kernel, bias = (np.asarray(w) for w in head.hidden.weights)
    return kernel, bias


def haiku_linear_kernel():
    linear = hk.transform(lambda x: hk.Linear(HIDDEN)(x))
    params = linear.init(jax.random.PRNGKey(0), np.zeros((1, FAN_IN), np.float32))
    return np.asarray(params["linear"]["w"])


def test_haiku_init_draws_as_haiku_linear():
    kernel, bias = dense_statistics("haiku")
    reference = haiku_linear_kernel()
    # 1M draws each: the standard deviations agree to well under 1%.
    assert abs(kernel.std() / reference.std() - 1) < 0.01, (kernel.std(), reference.std())
    assert np.abs(kernel).max() <= np.abs(reference).max() * 1.001  # both cut at ±2 stddev
    np.testing.assert_array_equal(bias, 0)


@pytest.mark.parametrize(
    "init, std, bias_bound",
    [("truncated_normal", 1.0, 0.0), ("pytorch", 3**-0.5, 1.0)],
)
def test_other_inits_have_their_spread(init, std, bias_bound):
    kernel, bias = dense_statistics(init)
    assert abs(kernel.std() * FAN_IN**0.5 / std - 1) < 0.01
    assert np.abs(bias).max() <= bias_bound / FAN_IN**0.5
    if bias_bound:  # uniform in ±1/√fan_in: standard deviation bound/√3
        assert abs(bias.std() * FAN_IN**0.5 * 3**0.5 - 1) < 0.1
    # The output layer's fan-in is the hidden width.
    keras.utils.set_random_seed(0)
    head = MLPHead(HIDDEN, 256, init=init)
    head.build((None, FAN_IN))
    assert abs(np.asarray(head.out.kernel).std() * HIDDEN**0.5 / std - 1) < 0.02


def test_head_init_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="head init must be one of"):
        MLPHead(8, 4, init="xavier")
    assert set(HEAD_INITS) == {"truncated_normal", "haiku", "pytorch"}
    custom = MLPHead(8, 4, kernel_initializer="zeros", bias_initializer="ones")
    custom.build((None, 6))
    np.testing.assert_array_equal(custom.out.kernel, 0)
    np.testing.assert_array_equal(custom.hidden.bias, 1)
    again = MLPHead.from_config(custom.get_config())
    again.build((None, 6))
    np.testing.assert_array_equal(again.hidden.bias, 1)
    encoder = keras_byol.encoders.resnet("resnet18", (16, 16, 3), small_images=True, width=0.25)
    model = keras_byol.BYOL(encoder, projection_dim=4, hidden_dim=8, head_init="pytorch")
    model.save(tmp_path / "byol.keras")
    loaded = keras.saving.load_model(tmp_path / "byol.keras")
    assert loaded.head_init == "pytorch" and loaded.projector.init == "pytorch"
    for saved, restored in zip(model.projector.weights, loaded.projector.weights):
        np.testing.assert_array_equal(saved, restored)


def test_the_job_builds_the_heads_it_is_told():
    from keras_byol import experiment
    from keras_byol.config import PretrainConfig

    config = PretrainConfig(head_init="pytorch", image_size=16, hidden_dim=8, projection_dim=4)
    model = experiment.build_model(config, steps_per_epoch=2)
    assert model.head_init == "pytorch" and model.predictor.init == "pytorch"
    assert np.any(np.asarray(model.projector.out.bias) != 0)  # PyTorch's bias is not zero
    with pytest.raises(ValueError, match="head_init must be one of"):
        PretrainConfig(head_init="xavier")

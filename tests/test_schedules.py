"""τ schedule, warm-up cosine and the batch/256 rule against NumPy references."""

import math

import keras
import numpy as np
import pytest

from keras_byol import schedules


def _np_tau(k, base, total):
    k = min(k, total)
    return 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2


@pytest.mark.parametrize("base,total", [(0.996, 1000), (0.99, 37), (0.97, 1)])
def test_target_decay_matches_reference(base, total):
    for k in [0, 1, total // 3, total // 2, total - 1, total, total + 5]:
        got = float(schedules.target_decay(k, base, total))
        assert got == pytest.approx(_np_tau(k, base, total), abs=1e-6), k


def test_target_decay_endpoints_and_monotone():
    assert float(schedules.target_decay(0, 0.996, 100)) == pytest.approx(0.996, abs=1e-7)
    assert float(schedules.target_decay(100, 0.996, 100)) == pytest.approx(1.0, abs=1e-7)
    taus = [float(schedules.target_decay(k, 0.9, 50)) for k in range(51)]
    assert all(b >= a for a, b in zip(taus, taus[1:]))


def _np_warmup_cosine(step, peak, warmup, total):
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def test_warmup_cosine_matches_reference():
    schedule = schedules.WarmupCosine(3.2, warmup_steps=10, total_steps=100)
    for step in [0, 1, 5, 9, 10, 11, 50, 99, 100, 120]:
        assert float(schedule(step)) == pytest.approx(
            _np_warmup_cosine(step, 3.2, 10, 100), abs=1e-6
        ), step


def test_warmup_cosine_without_warmup_and_roundtrip():
    schedule = schedules.WarmupCosine(1.0, warmup_steps=0, total_steps=10)
    assert float(schedule(0)) == pytest.approx(1.0)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, schedules.WarmupCosine)
    np.testing.assert_allclose(float(restored(4)), float(schedule(4)))


def test_warmup_cosine_rejects_bad_steps():
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.WarmupCosine(1.0, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        schedules.WarmupCosine(1.0, warmup_steps=0, total_steps=0)


def test_scale_learning_rate():
    assert schedules.scale_learning_rate(0.2, 4096) == pytest.approx(3.2)
    assert schedules.scale_learning_rate(2.0, 256) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        schedules.scale_learning_rate(0.2, 0)

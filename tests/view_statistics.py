"""The statistical checks that BYOL's views pass, shared by the tf.data views
(test_augment.py) and the Keras-layer views (test_views.py) on every backend.

Each takes the decisions of N views of a 1000×1000 image as numpy arrays keyed as
`augment.sample_view_params` / `views.sample_view_params`. N = 4000: the std of a rate is
≤ 0.008, so an error of 0.05 is > 6σ.
"""

import math

import numpy as np
import pytest

N = 4000
SIDE = 1000  # the source image's height and width


def check_crop_area_and_log_ratio(s):
    area = s["crop_height"] * s["crop_width"] / SIDE**2
    log_ratio = np.log(s["crop_width"] / s["crop_height"])
    assert area.min() >= 0.08 - 0.002 and area.max() <= 1.0
    assert np.all(np.abs(log_ratio) <= math.log(4 / 3) + 0.01)
    assert np.all(s["top"] >= 0) and np.all(s["left"] >= 0)
    assert np.all(s["top"] + s["crop_height"] <= SIDE)
    assert np.all(s["left"] + s["crop_width"] <= SIDE)
    # Candidates with area ≤ 0.56 always fit a square image (√(0.56·4/3) < 1): there the
    # accepted area is U[0.08, 0.56] and log-ratio U[log 3/4, log 4/3].
    small = area <= 0.5
    hist, _ = np.histogram(area[small], bins=6, range=(0.08, 0.5))
    np.testing.assert_allclose(hist / hist.sum(), 1 / 6, atol=0.03)
    hist, _ = np.histogram(log_ratio[small], bins=6, range=(math.log(3 / 4), math.log(4 / 3)))
    np.testing.assert_allclose(hist / hist.sum(), 1 / 6, atol=0.03)
    # Mass above 0.5 (minus the few rejected big candidates): (1 − 0.5)/0.92 ≈ 0.54.
    assert 0.45 < np.mean(area > 0.5) < 0.56
    # The position is uniform over the free range: top/(H − h + 1) ~ U[0, 1).
    position = s["top"] / (SIDE - s["crop_height"] + 1)
    assert position.mean() == pytest.approx(0.5, abs=0.02)


# (key, view, expected rate) of the paper's two views.
DECISION_RATES = [
    ("flip", 1, 0.5),
    ("jitter", 1, 0.8),
    ("grayscale", 1, 0.2),
    ("blur", 1, 1.0),
    ("solarize", 1, 0.0),
    ("blur", 2, 0.1),
    ("solarize", 2, 0.2),
    ("flip", 2, 0.5),
]


def check_decision_rate(samples, key, expected):
    assert np.mean(samples[key]) == pytest.approx(expected, abs=0.025), key


def check_jitter_ranges(s):
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
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert sigma.mean() == pytest.approx(1.05, abs=0.03)


def check_jitter_orders(s):
    orders = [tuple(o) for o in s["order"]]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    counts = {o: orders.count(o) for o in set(orders)}
    assert len(counts) == 24
    assert max(counts.values()) / N < 1 / 24 + 0.02 and min(counts.values()) / N > 1 / 24 - 0.02


def check_independent_decisions(s):
    """Decisions of one view are drawn independently of each other (no shared uniform)."""
    for a, b in [("flip", "grayscale"), ("jitter", "grayscale"), ("flip", "jitter")]:
        joint = np.mean(s[a] & s[b])
        assert joint == pytest.approx(np.mean(s[a]) * np.mean(s[b]), abs=0.025), (a, b)

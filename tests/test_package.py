"""Importing keras_byol has no side effects and exposes the fixed public names."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import keras
policy, seed_gen = keras.config.dtype_policy().name, keras.config.floatx()
import keras_byol
assert keras.config.dtype_policy().name == policy == "float32", keras.config.dtype_policy()
assert keras.config.floatx() == seed_gen
import sys
assert "keras_byol.backends.tensorflow" not in sys.modules  # loaded by the first train step
assert "keras_byol.data" not in sys.modules and "keras_byol.export" not in sys.modules
assert "keras_byol.plots" not in sys.modules
assert keras_byol.augment.TwoViewAugmenter and keras_byol.data.pretrain_dataset  # lazy, on use
assert keras_byol.distribute.make_strategy and keras_byol.plots.plot_history
for name in ("BYOL", "losses", "schedules", "optimizers", "encoders", "heads", "callbacks",
             "monitors", "evaluation"):
    assert hasattr(keras_byol, name), name
assert callable(keras_byol.losses.regression_loss) and callable(keras_byol.losses.byol_loss)
assert callable(keras_byol.schedules.target_decay) and keras_byol.schedules.WarmupCosine
assert keras_byol.optimizers.LARS and keras_byol.heads.MLPHead and keras_byol.callbacks.TargetUpdate
print("ok")
"""


def test_import_has_no_side_effects_and_public_names():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")

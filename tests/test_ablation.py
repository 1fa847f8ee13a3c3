"""The normalization ablation (`keras_byol.ablation`): real runs of the job, one table, one
figure; finished runs are read back, a diverged run is a row, not a crash."""

import json
import os

import numpy as np
import pytest

from keras_byol import ablation
from keras_byol.config import PretrainConfig

TINY = PretrainConfig(
    image_size=16, width=0.125, projection_dim=16, hidden_dim=64, epochs=1, warmup_epochs=0,
    steps_per_epoch=2, batch_size=16, eval_epochs=1,
)  # fmt: skip
BY_NAME = {variant.name: variant for variant in ablation.VARIANTS}


@pytest.mark.slow
def test_a_variant_gives_a_table_a_figure_and_resumes(tmp_path):
    """One variant end to end (the job's training, export and evaluation); the rest of the
    table's logic is covered by the test below without training."""
    variants = [BY_NAME["gn_ws"]]
    report = ablation.run(str(tmp_path), TINY, seeds=(0,), variants=variants)
    (row,) = report["rows"]
    assert row["status"] == "ok" and len(row["projection_std"]) == TINY.epochs
    assert 0.0 <= row["linear"] <= 1.0 and 0.0 <= row["random_knn20"] <= 1.0
    saved = json.loads((tmp_path / "gn_ws_seed0" / "config.json").read_text())
    assert (saved["encoder_norm"], saved["head_norm"], saved["seed"]) == ("group_ws", "group", 0)
    table = (tmp_path / "ablation.md").read_text()
    assert f"| GN+WS, no batch statistics | group_ws | group | {row['linear']:.3f} |" in table
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    # A second call reads the finished run back instead of training it again.
    row_file = tmp_path / "gn_ws_seed0" / ablation.ROW_FILE
    written = os.stat(row_file).st_mtime_ns
    again = ablation.run(str(tmp_path), TINY, seeds=(0,), variants=variants)
    assert again["rows"] == report["rows"] and os.stat(row_file).st_mtime_ns == written


def test_a_diverged_run_is_a_row_and_the_table_says_so(tmp_path):
    exploding = PretrainConfig(**{**TINY.to_dict(), "optimizer": "sgd", "learning_rate": 1e9})
    row = ablation.run_variant(exploding, BY_NAME["no_norm"], 0, str(tmp_path / "run"))
    assert row["status"] == "diverged" and "step" in row["message"]
    healthy = {
        "variant": "bn_everywhere", "seed": 0, "status": "ok", "linear": 0.6, "knn20": 0.5,
        "random_linear": 0.3, "random_knn20": 0.4, "projection_std": [0.1, 0.09],
    }  # fmt: skip
    summary = ablation.summarize([row, healthy, {**healthy, "seed": 1, "linear": 0.7}], 16)
    by_name = {entry["name"]: entry for entry in summary}
    assert by_name["no_norm"]["diverged"] == 1 and by_name["no_norm"]["linear"] is None
    assert by_name["bn_everywhere"]["linear"] == pytest.approx(
        {"mean": 0.65, "min": 0.6, "max": 0.7}
    )
    np.testing.assert_allclose(by_name["bn_everywhere"]["projection_std_curve"], [0.1, 0.09])
    table = ablation.markdown_table(summary)
    assert "| no normalization | none | none | — | — |" in table and "1 of 1" in table
    assert "0.650 (0.600–0.700)" in table

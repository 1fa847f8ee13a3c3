"""The BatchNorm ablation of BYOL (arXiv 2010.10241), replayed on one recipe: a table, a figure.

Five normalization variants of the same run — same config, seed and budget; only
`encoder_norm` and `head_norm` change — each pretrained with `experiment.pretrain` and
scored with the job's own evaluation (linear protocol and 20-NN, beside the same
architecture with random weights), plus the collapse monitor's final `projection_std`.

    python -m keras_byol.ablation --workdir=/tmp/byol_ablation            # bundled digits
    python -m keras_byol.ablation --workdir=/tmp/byol_ablation --seeds=0,1
    python -m keras_byol.ablation --flagfile=configs/smoke.cfg --workdir=/tmp/a  # seconds

The base recipe takes the training job's flags (`python -m keras_byol.train --helpfull`).

Each variant runs in WORKDIR/<variant>_seed<S> (a killed ablation resumes: finished runs
are read back from their row.json, an interrupted one resumes from its checkpoint).
Writes WORKDIR/ablation.json (every run, every summary), ablation.md (the table) and
ablation.png (the figure).
"""

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from keras_byol import plots
from keras_byol.config import PretrainConfig


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the ablation: what normalizes the encoder and the MLP heads."""

    name: str
    encoder_norm: str
    head_norm: str
    label: str
    paper_top1: str  # ResNet-50, ImageNet linear top-1 in arXiv 2010.10241


VARIANTS = (
    Variant("bn_everywhere", "batch", "batch", "BN everywhere (BYOL)", "72.5 (300 ep.)"),
    Variant("no_norm", "none", "none", "no normalization", "0.1 (300 ep.)"),
    Variant("bn_encoder_only", "batch", "none", "BN in the encoder only", "72.1 (300 ep.)"),
    Variant("bn_heads_only", "none", "batch", "BN in the heads only", "not in our table"),
    Variant("gn_ws", "group_ws", "group", "GN+WS, no batch statistics", "73.9 (1000 ep.)"),
)
ROW_FILE = "row.json"


def variant_config(base, variant, seed):
    """`base` with the variant's normalizations and `seed`; nothing else changes."""
    return dataclasses.replace(
        base, encoder_norm=variant.encoder_norm, head_norm=variant.head_norm, seed=seed
    )


def run_variant(base, variant, seed, workdir):
    """Pretrains and evaluates one variant in `workdir`; returns its row (also row.json).

    A run whose loss became non-finite is a result, not an error: its row says
    "diverged" with the message, and has no accuracies.
    """
    from keras_byol import experiment  # TensorFlow and the data pipelines load here

    row_path = os.path.join(workdir, ROW_FILE)
    if os.path.exists(row_path):
        with open(row_path) as f:
            return json.load(f)
    row = {"variant": variant.name, "seed": seed, **dataclasses.asdict(variant)}
    config = variant_config(base, variant, seed)
    start = time.time()
    try:
        result = experiment.pretrain(config, workdir)
    except experiment.TrainingDiverged as error:
        row.update(status="diverged", message=str(error).splitlines()[0])
    else:
        history, scores = result["history"], result["eval"] or {}
        row.update(
            status="ok",
            projection_std=[float(v) for v in history.get("projection_std", [])],
            loss=[float(v) for v in history.get("loss", [])],
            linear=scores.get("byol_linear_center_crop"),
            knn20=scores.get("byol_knn20"),
            random_linear=scores.get("random_linear_center_crop"),
            random_knn20=scores.get("random_knn20"),
        )
    row["seconds"] = round(time.time() - start, 1)
    os.makedirs(workdir, exist_ok=True)
    with open(row_path, "w") as f:
        json.dump(row, f, indent=2)
    return row


def summarize(rows, projection_dim):
    """Per variant: mean, min and max over seeds of each score; the last epoch's
    projection_std (healthy ≈ 1/√projection_dim, collapsed → 0); diverged runs counted."""
    summary = []
    for variant in VARIANTS:
        runs = [r for r in rows if r["variant"] == variant.name]
        if not runs:
            continue
        done = [r for r in runs if r["status"] == "ok"]
        entry = {
            **dataclasses.asdict(variant),
            "seeds": [r["seed"] for r in runs],
            "diverged": len(runs) - len(done),
            "healthy_projection_std": 1.0 / math.sqrt(projection_dim),
        }
        for key in ("linear", "knn20", "random_linear", "random_knn20"):
            values = [r[key] for r in done if r.get(key) is not None]
            entry[key] = _spread(values)
        entry["projection_std"] = _spread([r["projection_std"][-1] for r in done])
        curves = [r["projection_std"] for r in done]
        entry["projection_std_curve"] = np.mean(curves, axis=0).tolist() if curves else []
        summary.append(entry)
    return summary


def _spread(values):
    if not values:
        return None
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def _cell(spread, digits=3):
    if spread is None:
        return "—"
    text = f"{spread['mean']:.{digits}f}"
    if spread["max"] > spread["min"]:
        text += f" ({spread['min']:.{digits}f}–{spread['max']:.{digits}f})"
    return text


def markdown_table(summary):
    """The ablation as a Markdown table (mean over seeds, min–max in brackets)."""
    lines = [
        "| variant | encoder | heads | linear | 20-NN | random linear | random 20-NN | "
        "final projection_std | diverged | paper (ImageNet top-1) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        lines.append(
            f"| {entry['label']} | {entry['encoder_norm']} | {entry['head_norm']} | "
            f"{_cell(entry['linear'])} | {_cell(entry['knn20'])} | "
            f"{_cell(entry['random_linear'])} | {_cell(entry['random_knn20'])} | "
            f"{_cell(entry['projection_std'], 4)} | "
            f"{entry['diverged']} of {len(entry['seeds'])} | {entry['paper_top1']} |"
        )
    return "\n".join(lines) + "\n"


def run(workdir, base=None, seeds=(0,), variants=VARIANTS):
    """Runs every variant for every seed (skipping finished ones); writes and returns
    {"rows": [...], "summary": [...], "table": markdown}."""
    base = base or PretrainConfig()
    rows = [
        run_variant(base, variant, seed, os.path.join(workdir, f"{variant.name}_seed{seed}"))
        for seed in seeds
        for variant in variants
    ]
    summary = summarize(rows, base.projection_dim)
    table = markdown_table(summary)
    report = {"base_config": base.to_dict(), "rows": rows, "summary": summary, "table": table}
    with open(os.path.join(workdir, "ablation.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(workdir, "ablation.md"), "w") as f:
        f.write(table)

    figure = plots.normalization_ablation(summary)
    figure.savefig(os.path.join(workdir, "ablation.png"), dpi=120, bbox_inches="tight")
    return report


FLAGS = flags.FLAGS


def _define_flags():
    """The entry point's flags: the training job's (the base recipe: --flagfile, --epochs,
    --warmup_epochs, … as `python -m keras_byol.train` takes them; each variant sets its
    own --encoder_norm/--head_norm and --seed) plus the ablation's own. Defined only when
    run as a program."""
    from keras_byol import train  # defines the job's flags

    del train
    FLAGS.set_default("workdir", "byol_ablation")
    flags.DEFINE_list("seeds", ["0"], "Seeds; each variant runs once per seed.")
    flags.DEFINE_list(
        "variants",
        [v.name for v in VARIANTS],
        "Variants to run: " + ", ".join(v.name for v in VARIANTS),
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from keras_byol import train  # its flags, defined by _define_flags

    by_name = {v.name: v for v in VARIANTS}
    unknown = sorted(set(FLAGS.variants) - set(by_name))
    if unknown:
        raise app.UsageError(f"Unknown variants {unknown}; choose from {sorted(by_name)}.")
    absl_logging.set_verbosity(absl_logging.WARNING)  # TF's export logs at INFO otherwise
    try:
        seeds = [int(s) for s in FLAGS.seeds]
        base = train.config_from_flags()
        os.makedirs(FLAGS.workdir, exist_ok=True)
        report = run(
            FLAGS.workdir, base, seeds=seeds, variants=[by_name[name] for name in FLAGS.variants]
        )
    except (ValueError, TypeError) as error:
        print(f"keras_byol.ablation: {error}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(report["table"])
    print(f"Table, figure and runs in {FLAGS.workdir}.")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _define_flags()
    app.run(main)

"""python -m keras_byol.evaluate: evaluate a pretrained (online) encoder, print and save it.

python -m keras_byol.evaluate --encoder=byol_workdir/encoder                 # linear, digits
python -m keras_byol.evaluate --encoder=byol_workdir/encoder --protocol=knn
python -m keras_byol.evaluate --encoder=byol_workdir/byol.keras --protocol=finetune \
    --dataset=cifar10 --label_fraction=0.1

Results are printed and merged into WORKDIR/eval.json under the protocol's name (with the
label fraction when it is below 1), WORKDIR being the run folder of the encoder. Each entry
records the encoder and its optimizer step; entries of another step move under
"earlier_steps" (`workdir.merge_evaluation`).
"""

import json
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from keras_byol import evaluation, sources
from keras_byol.workdir import merge_evaluation

FLAGS = flags.FLAGS
PROTOCOLS = ("linear", "knn", "finetune")

flags.DEFINE_string(
    "encoder", None, "WORKDIR/encoder (SavedModel export) or a .keras file (BYOL or encoder)."
)
flags.DEFINE_string(
    "dataset",
    "bundled:mnist",
    "Labelled data: 'bundled:mnist' (no download), a prepared tensorflow-datasets name "
    "(train and test splits), or an image folder with one subfolder per class.",
)
flags.DEFINE_string(
    "test_dataset", "", "Test data when --dataset is a folder (another folder); '' otherwise."
)
flags.DEFINE_enum("protocol", "linear", list(PROTOCOLS), "linear | knn | finetune.")
flags.DEFINE_float(
    "label_fraction", 1.0, "Train on this fixed, balanced fraction of the labels (0.01, 0.1)."
)
flags.register_validator(
    "label_fraction", lambda f: 0 < f <= 1, "--label_fraction must be in (0, 1]."
)
flags.DEFINE_integer(
    "epochs", None, "Classifier epochs (default: linear 90, finetune 30).", lower_bound=1
)
flags.DEFINE_integer("batch_size", 256, "Batch size of the classifier training.", lower_bound=1)
flags.DEFINE_float(
    "learning_rate", None, "Base LR × batch/256 (default: linear 0.2, finetune 0.02)."
)
flags.register_validator(
    "learning_rate", lambda r: r is None or r > 0, "--learning_rate must be positive."
)
flags.DEFINE_bool(
    "augment", True, "linear: train on random resized crops + flips (the spec's protocol)."
)
flags.DEFINE_integer("image_size", 0, "Image side; 0 = the encoder's input size.", lower_bound=0)
flags.DEFINE_integer("k", 200, "knn: neighbours (weighted vote, temperature 0.1).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seeds the classifier and the crops (not the label subset).")
flags.DEFINE_string(
    "workdir", "", "Where eval.json goes ('' = the run folder that holds the encoder)."
)


def _sources(dataset, test_dataset, image_size):
    """(train source, test source, train split, test split) for the evaluation."""
    _, (train, test), (train_split, test_split) = sources.job_sources(
        dataset, image_size, test_dataset=test_dataset, evaluating=True
    )
    return train, test, train_split, test_split


def _default_workdir(encoder_path):
    path = os.path.abspath(encoder_path.rstrip("/"))
    return os.path.dirname(path)


def run(args):
    """Evaluates as `args` (the parsed flags) say; returns the results dict."""
    if not args.encoder:
        raise ValueError("--encoder is required: WORKDIR/encoder or WORKDIR/byol.keras.")
    encoder = evaluation.load_encoder(args.encoder)
    encoder_size = encoder.inputs[0].shape[1]
    image_size = args.image_size or int(encoder_size)
    if encoder_size is not None and image_size != encoder_size:
        raise ValueError(
            f"--image_size={image_size}, but the encoder takes {encoder_size}×{encoder_size} "
            f"images: omit --image_size (or pass --image_size={encoder_size})."
        )
    train, test, train_split, test_split = _sources(args.dataset, args.test_dataset, image_size)
    splits = {"train_split": train_split, "test_split": test_split}
    fraction = None if args.label_fraction == 1.0 else args.label_fraction
    common = dict(image_size=image_size, label_fraction=fraction, seed=args.seed, **splits)
    if args.protocol == "knn":
        results = evaluation.knn_eval(encoder, train, test, k=args.k, **common)
    elif args.protocol == "linear":
        results = evaluation.linear_eval(
            encoder, train, test, epochs=args.epochs or 90, batch_size=args.batch_size,
            base_learning_rate=args.learning_rate or 0.2, augment=args.augment, **common,
        )  # fmt: skip
    else:
        results = evaluation.fine_tune(
            encoder, train, test, epochs=args.epochs or 30, batch_size=args.batch_size,
            base_learning_rate=args.learning_rate or 0.02, **common,
        )  # fmt: skip
        results.pop("encoder")
    results = {
        "protocol": args.protocol,
        "encoder": args.encoder,
        "dataset": args.dataset,
        "label_fraction": args.label_fraction,
        **results,
    }
    workdir = args.workdir or _default_workdir(args.encoder)
    key = args.protocol + ("" if fraction is None else f"_{fraction:g}")
    merge_evaluation(
        os.path.join(workdir, "eval.json"), {key: results}, encoder.byol_step, args.encoder
    )
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        results = run(FLAGS)
    except (ValueError, TypeError) as error:
        print(f"keras_byol.evaluate: {error}", file=sys.stderr)
        sys.exit(1)
    summary = f"{results['protocol']}: top-1 {results['top1']:.4f}"
    if "top5" in results:
        summary += f", top-5 {results['top5']:.4f}"
    print(json.dumps(results))
    print(f"{summary} ({results['train_examples']} training examples)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

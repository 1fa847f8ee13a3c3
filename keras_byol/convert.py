"""python -m keras_byol.convert: an official BYOL checkpoint → what the training job exports.

python -m keras_byol.convert --official=pretrain_res50x1.pkl --output=byol_res50x1
python -m keras_byol.evaluate --encoder=byol_res50x1/encoder --protocol=knn

Writes OUTPUT/byol.keras (the whole BYOL: online and target networks, heads, online probe)
and OUTPUT/encoder (the online encoder as a SavedModel with `serve` and `serve_uint8`),
as `python -m keras_byol.train` does at the end of a run.
"""

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from keras_byol import pretrained
from keras_byol.workdir import write_atomically

FLAGS = flags.FLAGS
flags.DEFINE_string("official", None, "The official checkpoint file (e.g. pretrain_res50x1.pkl).")
flags.DEFINE_string("output", None, "Folder for byol.keras and encoder/ (created).")
flags.DEFINE_integer(
    "image_size", 224, "The encoders' input side (the weights run at any size).", lower_bound=1
)


def convert(official, output, image_size=224):
    """Writes OUTPUT/byol.keras and OUTPUT/encoder from an official checkpoint; returns
    the loaded `keras_byol.BYOL` and the paths written."""
    from keras_byol import export  # TensorFlow loads here

    model = pretrained.load_official(official, image_size=image_size)
    os.makedirs(output, exist_ok=True)
    model_path = os.path.join(output, "byol.keras")
    encoder_path = os.path.join(output, "encoder")
    write_atomically(model_path, model.save, ".keras")
    write_atomically(encoder_path, lambda path: export.export_encoder(model, path))
    return model, model_path, encoder_path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    if not FLAGS.official or not FLAGS.output:
        raise app.UsageError("--official=FILE and --output=DIR are required.")
    try:
        model, model_path, encoder_path = convert(FLAGS.official, FLAGS.output, FLAGS.image_size)
    except pretrained.OfficialCheckpointError as error:
        print(f"keras_byol.convert: {error}", file=sys.stderr)
        sys.exit(1)
    width = model.encoder.outputs[0].shape[-1] // 2048
    print(
        f"Converted {FLAGS.official} ({model.encoder.name} ×{width}, {model.count_params():,} "
        f"parameters): {model_path}, {encoder_path}."
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

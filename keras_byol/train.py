"""python -m keras_byol.train: absl flags → PretrainConfig → experiment.pretrain (one call).

python -m keras_byol.train                                   # bundled MNIST, ~5 min on 2 CPUs
python -m keras_byol.train --flagfile=configs/cifar10_resnet18.cfg --workdir=/tmp/byol
"""

import dataclasses
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from keras_byol.config import OPTIMIZERS, PRECISIONS, STRATEGIES, VIEW_PRESETS, PretrainConfig

_DEFAULTS = PretrainConfig()
FLAGS = flags.FLAGS

flags.DEFINE_string(
    "workdir", "byol_workdir", "Run folder: checkpoint, logs, exports. Rerun to resume."
)
flags.DEFINE_string(
    "dataset",
    _DEFAULTS.dataset,
    "'bundled:mnist' (no download), a tensorflow-datasets name, or an image folder.",
)
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Side of the square views, in pixels.")
flags.DEFINE_enum(
    "encoder",
    _DEFAULTS.encoder,
    ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200"],
    "ResNet v1 depth.",
)
flags.DEFINE_float(
    "width", _DEFAULTS.width, "Channel multiplier (1, 2, 4 in the paper; 64·width whole)."
)
flags.DEFINE_bool(
    "small_images",
    _DEFAULTS.small_images,
    "3×3 stride-1 stem without max-pool (CIFAR-size images).",
)
flags.DEFINE_enum(
    "norm",
    _DEFAULTS.norm,
    ["batch", "group_ws"],
    "BatchNorm, or GroupNorm + Weight Standardization.",
)
flags.DEFINE_integer(
    "projection_dim",
    _DEFAULTS.projection_dim,
    "Output width of projector and predictor (paper 256).",
)
flags.DEFINE_integer(
    "hidden_dim", _DEFAULTS.hidden_dim, "Hidden width of the projector (paper 4096)."
)
flags.DEFINE_integer(
    "predictor_hidden_dim", None, "Hidden width of the predictor (default: hidden_dim)."
)
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Pretraining epochs.")
flags.DEFINE_integer(
    "steps_per_epoch", _DEFAULTS.steps_per_epoch, "Steps per epoch; 0 = one pass over the data."
)
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size.")
flags.DEFINE_enum(
    "optimizer",
    _DEFAULTS.optimizer,
    list(OPTIMIZERS),
    "lars (the paper), sgd or adamw; each has a safe default learning rate.",
)
flags.DEFINE_float(
    "learning_rate",
    None,
    "Base learning rate; LARS/SGD rates are multiplied by batch_size/256. Default per optimizer: "
    "lars 0.2, sgd 0.05, adamw 1e-3.",
)
flags.DEFINE_float(
    "warmup_epochs", _DEFAULTS.warmup_epochs, "Linear warm-up epochs before the cosine decay."
)
flags.DEFINE_float(
    "weight_decay", None, "Weight decay. Default per optimizer: lars 1.5e-6, sgd 1e-4, adamw 1e-4."
)
flags.DEFINE_float(
    "lars_eta",
    _DEFAULTS.lars_eta,
    "LARS trust coefficient η: 0.02 for small data sets (solo-learn's CIFAR value); the "
    "ImageNet presets set the paper's 1e-3.",
)
flags.DEFINE_float(
    "base_tau", _DEFAULTS.base_tau, "τ_base of the cosine target-decay schedule (paper 0.996)."
)
flags.DEFINE_enum("precision", _DEFAULTS.precision, list(PRECISIONS), "Keras dtype policy.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seeds weights, shuffling and views.")
flags.DEFINE_enum(
    "views",
    _DEFAULTS.views,
    list(VIEW_PRESETS),
    "byol: the paper's views; small: blur off, jitter strength 0.5 (CIFAR-size images).",
)
flags.DEFINE_enum(
    "augment_on",
    _DEFAULTS.augment_on,
    ["cpu", "device"],
    "Make the views in tf.data (cpu) or inside the train step (device).",
)
flags.DEFINE_enum(
    "strategy",
    _DEFAULTS.strategy,
    list(STRATEGIES),
    "default: one device; mirrored: MirroredStrategy over the local GPUs (or logical CPUs); "
    "multi_worker: MultiWorkerMirroredStrategy, one process per worker, cluster from TF_CONFIG, "
    "the same shared --workdir on every worker; tpu: TPUStrategy on --tpu.",
)
flags.DEFINE_string(
    "tpu",
    _DEFAULTS.tpu,
    "With --strategy=tpu: TPU name or grpc://IP:8470; empty on a Cloud TPU VM or Colab TPU.",
)
flags.DEFINE_bool(
    "sync_batchnorm",
    _DEFAULTS.sync_batchnorm,
    "With several replicas, synchronize BatchNorm statistics across them (the paper's setting).",
)
flags.DEFINE_integer(
    "logical_cpus",
    0,
    "Split the CPU into this many logical devices (to try --strategy=mirrored without GPUs).",
)
flags.DEFINE_integer(
    "steps_per_execution", _DEFAULTS.steps_per_execution, "Train steps per compiled call."
)
flags.DEFINE_bool(
    "jit_compile", _DEFAULTS.jit_compile, "XLA-compile the train step (helps on GPU/TPU)."
)
flags.DEFINE_bool(
    "concat_views",
    _DEFAULTS.concat_views,
    "One pass per network over both views, BatchNorm statistics per view (slower on CPUs).",
)
flags.DEFINE_integer(
    "checkpoint_every_epochs", _DEFAULTS.checkpoint_every_epochs, "Epochs between checkpoints."
)
flags.DEFINE_string(
    "export_dir", _DEFAULTS.export_dir, "Encoder SavedModel folder ('' = WORKDIR/encoder)."
)
flags.DEFINE_bool(
    "evaluate", _DEFAULTS.evaluate, "Linear probe and 20-NN vs random weights after pretraining."
)
flags.DEFINE_integer("eval_epochs", _DEFAULTS.eval_epochs, "Epochs of the linear probe.")
flags.DEFINE_integer(
    "shuffle_buffer", _DEFAULTS.shuffle_buffer, "tf.data shuffle buffer (examples)."
)


def config_from_flags():
    """The PretrainConfig that the parsed flags describe."""
    names = [f.name for f in dataclasses.fields(PretrainConfig)]
    return PretrainConfig(**{name: FLAGS[name].value for name in names})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("keras_byol").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)  # TF's export logs at INFO otherwise
    if FLAGS.logical_cpus > 1:
        import tensorflow as tf  # configured before anything else initializes TensorFlow

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus
        )
    from keras_byol import experiment  # TensorFlow loads here, after the flags parsed

    try:
        config = config_from_flags()
        result = experiment.pretrain(config, FLAGS.workdir)
    except (ValueError, TypeError, experiment.TrainingDiverged) as error:
        print(f"keras_byol.train: {error}", file=sys.stderr)
        sys.exit(1)
    if result["export_dir"] is None:
        print(f"Done: {result['steps_done']} steps (a worker: the chief writes the workdir).")
    else:
        print(f"Done: {result['steps_done']} steps; encoder exported to {result['export_dir']}.")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

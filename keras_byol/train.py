"""python -m keras_byol.train: absl flags → PretrainConfig → experiment.pretrain (one call).

python -m keras_byol.train                                   # bundled MNIST, ~5 min on 2 CPUs
python -m keras_byol.train --flagfile=configs/cifar10_resnet18.cfg --workdir=/tmp/byol
"""

import dataclasses
import logging
import os
import sys
import typing

from absl import app, flags
from absl import logging as absl_logging

from keras_byol.config import RESUME_RULES, PretrainConfig

FLAGS = flags.FLAGS


def _define_flag(field):
    """An absl flag for a `PretrainConfig` field: its default, help and choices."""
    kind = next(t for t in typing.get_args(field.type) or (field.type,) if t is not type(None))
    choices = field.metadata["choices"]
    rule = field.metadata["resume"]
    help_text = f"{field.metadata['help']} [on resume: {rule}, {RESUME_RULES[rule]}]"
    if choices is not None:
        flags.DEFINE_enum(field.name, field.default, list(choices), help_text)
        return
    define = {
        str: flags.DEFINE_string,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        bool: flags.DEFINE_bool,
    }[kind]
    define(field.name, field.default, help_text)


for _field in dataclasses.fields(PretrainConfig):
    _define_flag(_field)
flags.DEFINE_alias("norm", "encoder_norm")  # its name before head_norm existed
flags.DEFINE_string(
    "workdir", "byol_workdir", "Run folder: checkpoint, logs, exports. Rerun to resume."
)
flags.DEFINE_integer(
    "logical_cpus",
    0,
    "Split the CPU into this many logical devices (to try --strategy=mirrored without GPUs).",
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
    except KeyboardInterrupt as error:
        message = str(error) or (
            "Interrupted outside the training loop: rerun the same command to resume from "
            f"{os.path.join(FLAGS.workdir, experiment.CHECKPOINT)!r} where it exists."
        )
        print(f"keras_byol.train: {message}", file=sys.stderr)
        sys.exit(130)
    if result["export_dir"] is None:
        print(f"Done: {result['steps_done']} steps (a worker: the chief writes the workdir).")
    else:
        print(f"Done: {result['steps_done']} steps; encoder exported to {result['export_dir']}.")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)

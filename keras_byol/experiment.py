"""pretrain(config, workdir): data → model → fit with checkpoints/resume → export → evaluation."""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np

from keras_byol import augment, data, distribute, encoders, evaluation, export, sources, views
from keras_byol import workdir as workdir_files
from keras_byol.callbacks import AtomicCheckpoint, DivergenceGuard, EpochLog
from keras_byol.callbacks import applied_steps as steps_done
from keras_byol.config import FIXED, REPLAN, PretrainConfig
from keras_byol.model import BYOL
from keras_byol.monitors import CollapseMonitor
from keras_byol.optimizers import LARS, excluded_by_default
from keras_byol.schedules import AppliedSteps, CosineTargetDecay, WarmupCosine
from keras_byol.sources import BUNDLED_MNIST, bundled_mnist  # noqa: F401 (public here too)

CHECKPOINT = os.path.join("checkpoint", "byol.keras")
CONFIG_FILE = "config.json"
SKIPPED_FILES = "skipped_files.txt"


class TrainingDiverged(RuntimeError):
    """Raised when the loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; its message says where the run can resume from."""


# --------------------------------------------------------------------------------- data
def _sources(config):
    """(pretraining source, evaluation (train, test) sources or None): `sources.job_sources`."""
    source, eval_sources, _ = sources.job_sources(config.dataset, config.image_size, config.seed)
    return source, eval_sources


def _num_classes(config, source):
    """Classes of the pretraining source's labels (for the online probe), or None."""
    classes = source.num_classes()
    if classes is not None and classes < 2:
        names = source.class_names
        print(
            f"Warning: {config.dataset!r} has {classes} class{'es' * (classes != 1)}"
            + (f" ({', '.join(map(repr, names))})" if names else "")
            + ": the online probe is off (one class scores 1.0 and measures nothing). A "
            "folder gives one class per first-level subfolder of images.",
            flush=True,
        )
        return None
    return classes


def _view_configs(config):
    if config.views == "small":
        return augment.SMALL_IMAGE_VIEW1, augment.SMALL_IMAGE_VIEW2
    return augment.BYOL_VIEW1, augment.BYOL_VIEW2


def _pretrain_data(config, source, strategy, start_batch=0, bad_files=None):
    """(distributed stream of global batches from batch `start_batch` on (optimizer steps ×
    accumulation_steps), batches per epoch).

    Each input pipeline (one per worker) reads its own shard with per-replica batches and
    its own seed; `strategy.distribute_datasets_from_function` deals its batches to the
    worker's replicas. The stream (`data.pretrain_stream`) is a function of its position,
    so a run resumed at step s reads what an uninterrupted run reads from step s on.
    """
    import tensorflow as tf

    view1, view2 = _view_configs(config)
    batches_per_epoch = []

    def dataset_fn(input_context):
        replicas_per_pipeline = (
            input_context.num_replicas_in_sync // input_context.num_input_pipelines
        )
        dataset, batches_per_pass = data.pretrain_stream(
            source,
            batch_size=input_context.get_per_replica_batch_size(config.batch_size),
            image_size=config.image_size,
            shuffle_buffer=config.shuffle_buffer,
            seed=config.seed + input_context.input_pipeline_id,
            augment_on=config.augment_on,
            view1=view1,
            view2=view2,
            input_context=input_context,
            start_batch=start_batch * replicas_per_pipeline,
            bad_files=bad_files,
        )
        batches_per_epoch.append((batches_per_pass or -1) // replicas_per_pipeline)
        return dataset

    dataset = strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=True)
    )
    # Workers' shards may differ by an example: every worker takes the shortest epoch.
    local = batches_per_epoch[0] if batches_per_epoch else -1
    steps = int(distribute.gather_from_workers(strategy, [local]).min())
    # Whole compiled chunks (Keras would otherwise overshoot each epoch) and whole
    # accumulation windows (an epoch ends on an applied optimizer step).
    chunk = math.lcm(config.steps_per_execution, config.accumulation_steps)
    if config.steps_per_epoch:
        steps = config.steps_per_epoch
        if steps % chunk:
            raise ValueError(
                f"steps_per_epoch={steps} is not a multiple of steps_per_execution="
                f"{config.steps_per_execution}"
                + (
                    f" and accumulation_steps={config.accumulation_steps} ({chunk})"
                    if config.accumulation_steps > 1
                    else ""
                )
                + " (Keras would run whole chunks and overshoot every epoch); make it one."
            )
    elif steps <= 0:
        raise ValueError(
            f"The length of dataset {config.dataset!r} is unknown; set steps_per_epoch."
        )
    elif steps < chunk:
        raise ValueError(
            f"An epoch of {config.dataset!r} has {steps} batches, fewer than "
            f"steps_per_execution × accumulation_steps ({chunk}); lower them or batch_size."
        )
    else:
        steps -= steps % chunk
    return dataset, steps


# -------------------------------------------------------------------------------- model
def build_encoder(config, synchronized_batchnorm=True):
    return encoders.resnet(
        config.encoder,
        input_shape=(config.image_size, config.image_size, 3),
        small_images=config.small_images,
        width=config.width,
        norm=config.encoder_norm,
        synchronized_batchnorm=synchronized_batchnorm,
    )


def build_optimizer(config, model, steps_per_epoch):
    """The configured optimizer with its warm-up cosine LR. Biases and normalization
    parameters (rank ≤ 1) get no weight decay with any optimizer, as in the recipe's LARS.
    With accumulation_steps N > 1 the optimizer accumulates N batches per applied step."""
    schedule = learning_rate_schedule(config, steps_per_epoch)
    common = {"weight_decay": config.effective_weight_decay}
    if config.accumulation_steps > 1:
        common["gradient_accumulation_steps"] = config.accumulation_steps
    if config.optimizer == "lars":
        return LARS(schedule, eta=config.lars_eta, **common)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, **common)
    else:
        optimizer = keras.optimizers.AdamW(schedule, **common)
    # Keras' exclusion list is not saved with the optimizer: the job sets it on every build.
    # The same rule as LARS's (biases, norms and the online probe get no decay).
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if excluded_by_default(v)]
    )
    return optimizer


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warm-up to the batch-scaled peak, cosine decay to 0 at the run's last
    optimizer step (steps_per_epoch: batches per epoch; None: a placeholder until
    `plan_schedules` knows the data's length). Counted in applied optimizer steps:
    `AppliedSteps` when accumulation_steps > 1 (Keras calls it with the batch count)."""
    if steps_per_epoch is None:
        schedule = WarmupCosine(config.peak_learning_rate, 0, 1)
    else:
        per_epoch = steps_per_epoch // config.accumulation_steps
        warmup_steps = int(round(config.warmup_epochs * per_epoch))
        schedule = WarmupCosine(config.peak_learning_rate, warmup_steps, config.epochs * per_epoch)
    if config.accumulation_steps > 1:
        return AppliedSteps(schedule, config.accumulation_steps)
    return schedule


def optimizer_steps(config, steps_per_epoch):
    """Optimizer steps of the whole run (batches ÷ accumulation_steps)."""
    return config.epochs * (steps_per_epoch // config.accumulation_steps)


def plan_schedules(model, config, steps_per_epoch):
    """Sets the learning-rate and τ schedules of `model` to end at the run's last step."""
    model.optimizer.learning_rate = learning_rate_schedule(config, steps_per_epoch)
    model.set_target_decay(
        CosineTargetDecay(config.base_tau, optimizer_steps(config, steps_per_epoch))
    )


def build_model(config, steps_per_epoch, num_classes=None, synchronized_batchnorm=True):
    """A compiled BYOL model with the configured optimizer, learning-rate and τ schedules
    (steps_per_epoch None: planned later by `plan_schedules`); with `num_classes`, an
    online linear probe reports `probe_accuracy` during pretraining."""
    keras.utils.set_random_seed(config.seed)
    augmenter = None
    if config.augment_on == "device":
        view1, view2 = _view_configs(config)
        augmenter = views.TwoViewAugmenter(view1, view2, config.image_size, seed=config.seed)
    model = BYOL(
        build_encoder(config, synchronized_batchnorm),
        projection_dim=config.projection_dim,
        hidden_dim=config.hidden_dim,
        predictor_hidden_dim=config.predictor_hidden_dim,
        target_decay=CosineTargetDecay(
            config.base_tau, steps_per_epoch and optimizer_steps(config, steps_per_epoch)
        ),
        augmenter=augmenter,
        num_classes=num_classes,
        synchronized_batchnorm=synchronized_batchnorm,
        concat_views=config.concat_views,
        head_norm=config.head_norm,
        head_init=config.head_init,
        remat=config.remat,
    )
    model.compile(
        optimizer=build_optimizer(config, model, steps_per_epoch),
        steps_per_execution=config.steps_per_execution,
        jit_compile=config.jit_compile,
    )
    return model


# ------------------------------------------------------------------------------ workdir
def _saved_run(workdir):
    """The run record in WORKDIR/config.json (config fields, the data's steps per epoch,
    the resume history), or None."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _resume_changes(config, run, workdir):
    """{field: (new, saved)} of the schedule changes a resumed run re-plans; raises
    ValueError naming every change it cannot honour (nothing is written)."""
    differences = config.resume_differences(PretrainConfig.from_dict(run))
    if differences[FIXED]:
        listing = "; ".join(
            f"{name}: {new!r} here vs {old!r} saved"
            for name, (new, old) in differences[FIXED].items()
        )
        raise ValueError(
            f"The workdir {workdir!r} holds a checkpoint of a run that this command cannot "
            f"continue ({listing}). Use a new --workdir, or the saved values to resume "
            "(--epochs and --learning_rate may change). Nothing in the workdir was changed."
        )
    return differences[REPLAN]


def _resume_state(config, workdir):
    """(saved run record or None, whether a checkpoint exists, re-planned changes); raises
    ValueError for a change a resume cannot honour."""
    run = _saved_run(workdir)
    resuming = os.path.exists(os.path.join(workdir, CHECKPOINT))
    return run, resuming, _resume_changes(config, run, workdir) if resuming and run else {}


def _check_data_length(run, steps_per_epoch, workdir):
    saved = (run or {}).get("data_steps_per_epoch")
    if saved is not None and saved != steps_per_epoch:
        raise ValueError(
            f"The data now gives {steps_per_epoch} steps per epoch; the run in {workdir!r} "
            f"had {saved} (the source changed). Epochs and schedules would shift: use a new "
            "--workdir, or restore the data. Nothing in the workdir was changed."
        )


def _run_record(config, run, steps_per_epoch, step, changes):
    """config.json's content: the config, the data's steps per epoch, every field of the
    two views and the history of re-planned changes (step, field, old and new value)."""
    history = list((run or {}).get("resume_history", []))
    if changes:
        history.append(
            {"at_step": step, "changes": {k: [old, new] for k, (new, old) in changes.items()}}
        )
    record = {**config.to_dict(), "data_steps_per_epoch": steps_per_epoch}
    record["view_configs"] = _view_record(config)
    return json.dumps({**record, "resume_history": history}, indent=2, sort_keys=True)


def _view_record(config):
    """{"view1": {field: value}, "view2": ...} of the views the --views preset names in this
    version of keras_byol, as JSON stores them (tuples as lists)."""
    views = zip(("view1", "view2"), _view_configs(config))
    return json.loads(json.dumps({name: dataclasses.asdict(view) for name, view in views}))


def _views_changed_message(config, run):
    """A warning when the run's record holds other views than its --views preset gives
    now (the preset changed between keras_byol versions), else None."""
    saved = run.get("view_configs")
    if saved is None and config.views != "small":
        return None  # the paper's views have not changed
    if saved is None:
        return (
            f"Warning: this run's record does not list its views (it was written before "
            f"keras_byol recorded them); it continues with today's --views={config.views} "
            "(the 'small' preset changed on 2026-12-03: multiplicative brightness, full "
            "jitter strength, the paper's blur)."
        )
    now = _view_record(config)
    changed = [
        f"{name}.{field} {saved[name].get(field)!r} → {value!r}"
        for name, view in now.items()
        for field, value in view.items()
        if saved[name].get(field) != value
    ]
    if not changed:
        return None
    fields = f"{len(changed)} field{'s' * (len(changed) > 1)}: {', '.join(changed)}"
    return (
        f"Warning: --views={config.views} now differs from the views this run started with "
        f"({fields}): the preset changed in this version of keras_byol. The run continues "
        "with the views after each arrow; to keep the others, resume with the keras_byol "
        "version that started it."
    )


def _divergence_message(config, model, guard, checkpoint):
    """What diverged, where, with the learning rate actually used and a rerun that works."""
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    default = PretrainConfig(optimizer=config.optimizer).base_learning_rate
    lower = f"--learning_rate={min(config.base_learning_rate / 10, default):g}"
    if os.path.exists(checkpoint.path):
        kept = (
            f"The last checkpoint with finite values, {checkpoint.path!r} (step "
            f"{checkpoint.saved_step}), is kept: rerun with a lower --learning_rate (e.g. "
            f"{lower}) to resume from it; the learning-rate schedule is re-planned from there. "
            "If that diverges again, the high rate had already damaged it: start over in a "
            "new --workdir."
        )
    else:
        kept = f"No checkpoint had been written: rerun with a lower --learning_rate (e.g. {lower})."
    return (
        f"Training diverged at optimizer step {guard.diverged_at_step}: {guard.reason} (last "
        f"finite loss {guard.last_finite_loss}). The learning rate there was {rate:.4g} "
        f"(base {config.base_learning_rate:g} × batch {config.batch_size}/256 = peak "
        f"{config.peak_learning_rate:.4g}, optimizer={config.optimizer}); a rate too high for "
        f"it, or mixed_float16 overflow, is the likely cause. {kept}"
    )


# ------------------------------------------------------------------------------- public
def pretrain(config, workdir, strategy=None):
    """Pretrains BYOL as `config` says, resuming from `workdir` if it holds a checkpoint.

    Writes WORKDIR/config.json (the config, the data's steps per epoch and the history of
    re-planned changes), WORKDIR/checkpoint/byol.keras (every `checkpoint_every_epochs`,
    every `checkpoint_every_steps` and at the end), TensorBoard logs in WORKDIR/logs, the
    full model WORKDIR/byol.keras, the online encoder SavedModel (`export_dir` or
    WORKDIR/encoder) and, when `config.evaluate`, WORKDIR/eval.json.

    A workdir with a checkpoint is resumed: the model is built from `config` and takes the
    checkpoint's state (weights, target, optimizer, step). A change of a FIXED field (see
    `config.RESUME_RULES`) is refused before anything is written; a changed `epochs` or
    `learning_rate` re-plans the learning-rate and τ schedules from the current step.

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
    strategy = strategy or distribute.make_strategy(config.strategy, config.tpu, config.tpu_timeout)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"The global batch_size={config.batch_size} does not split evenly over {replicas} "
            f"replicas; use a multiple of {replicas}."
        )
    chief = distribute.is_chief(strategy)
    _resume_state(config, workdir)  # refused before the lock rewrites anything
    # One writer per run folder: the chief (other workers of a cluster only read it).
    written = (CONFIG_FILE, CHECKPOINT, "byol.keras", "encoder", "eval.json")
    lock = workdir_files.lock_workdir(workdir, written) if chief else None
    previous_policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(config.precision)
        # Read again under the lock: another run may have ended in between.
        return _pretrain(config, workdir, strategy, chief, *_resume_state(config, workdir))
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if lock is not None:
            lock.release()


def _pretrain(config, workdir, strategy, chief, run, resuming, changes):
    checkpoint_path = os.path.join(workdir, CHECKPOINT)
    source, eval_sources = _sources(config)
    distribute.check_workers_see_the_same_checkpoint(strategy, checkpoint_path)
    with strategy.scope():
        # The schedules are planned once the data's length is known (below).
        model = build_model(config, None, _num_classes(config, source), config.sync_batchnorm)
        if resuming:
            model.optimizer.build(model.trainable_variables)
            _load_checkpoint(model, checkpoint_path)
    step = steps_done(model)
    # Batches read so far: the input position (checkpoints hold whole accumulation windows).
    batches = step * config.accumulation_steps
    # Files a folder source cannot decode: skipped, warned about once per pass, and listed
    # once each in WORKDIR/skipped_files.txt (by the chief).
    bad_files = data.BadFiles(os.path.join(workdir, SKIPPED_FILES) if chief else None)
    dataset, steps_per_epoch = _pretrain_data(config, source, strategy, batches, bad_files)
    _check_data_length(run if resuming else None, steps_per_epoch, workdir)
    plan_schedules(model, config, steps_per_epoch)
    total_steps = optimizer_steps(config, steps_per_epoch)
    if resuming and step > total_steps:
        raise ValueError(
            f"The run in {workdir!r} is at optimizer step {step}, past the {total_steps} "
            f"steps of --epochs={config.epochs}: a run cannot be shortened. Rerun with "
            f"--epochs={math.ceil(step / (steps_per_epoch // config.accumulation_steps))} or "
            "more to continue it, or use a new --workdir. Nothing in the workdir was changed."
        )
    if resuming:
        print(f"Resuming from {checkpoint_path} at step {step}.", flush=True)
        views_changed = _views_changed_message(config, run) if run else None
        if views_changed:
            print(views_changed, flush=True)
    if changes:
        listing = ", ".join(f"{k} {old} → {new}" for k, (new, old) in changes.items())
        print(
            f"Re-planned ({listing}): the learning-rate and τ schedules now end at step "
            f"{total_steps}; continuing from step {step}.",
            flush=True,
        )
    if chief:
        record = _run_record(config, run, steps_per_epoch, step, changes)
        workdir_files.write_text(os.path.join(workdir, CONFIG_FILE), record)

    guard = DivergenceGuard()
    checkpoint = AtomicCheckpoint(
        checkpoint_path, config.checkpoint_every_epochs, config.checkpoint_every_steps, guard
    )
    callbacks = [guard, EpochLog(), CollapseMonitor()]
    if chief:  # one writer per cluster; the other workers read the chief's checkpoint
        callbacks += [keras.callbacks.TensorBoard(os.path.join(workdir, "logs")), checkpoint]
    start = time.time()
    history = {}
    while step < total_steps and guard.diverged_at_step is None:
        # An epoch cut by a step checkpoint is finished first, then whole epochs follow.
        epoch, into_epoch = divmod(batches, steps_per_epoch)
        if dataset is None:
            dataset, _ = _pretrain_data(config, source, strategy, batches, bad_files)
        if into_epoch:
            print(
                f"Finishing epoch {epoch + 1}/{config.epochs} from its batch {into_epoch} of "
                f"{steps_per_epoch}.",
                flush=True,
            )
        with (
            _input_errors_explained(config, model, checkpoint_path),
            _interrupt_explained(model, checkpoint),
        ):
            fitted = model.fit(
                dataset,
                epochs=epoch + 1 if into_epoch else config.epochs,
                initial_epoch=epoch,
                steps_per_epoch=steps_per_epoch - into_epoch,
                callbacks=callbacks,
                # A progress bar on a terminal; none for the rest of a cut epoch, which
                # Keras would call "Epoch e/e" (the line above says where it is).
                verbose=0 if into_epoch else 1 if sys.stdout.isatty() else 2,
            ).history
        for name, values in fitted.items():
            history.setdefault(name, []).extend(values)
        if steps_done(model) == step:
            break  # stopped without a step (a callback asked to stop)
        step, dataset = steps_done(model), None
        batches = step * config.accumulation_steps
    if chief and guard.diverged_at_step is None:
        checkpoint.set_model(model)
        checkpoint.save()  # refused (and recorded by the guard) if a variable is not finite
    if guard.diverged_at_step is not None:
        raise TrainingDiverged(_divergence_message(config, model, guard, checkpoint))
    train_seconds = time.time() - start
    result = {
        "history": history,
        "epochs_done": batches // steps_per_epoch,
        "steps_done": step,
        "export_dir": None,
        "eval": None,
        "model": model,
    }
    if not chief:
        return result

    workdir_files.write_atomically(os.path.join(workdir, "byol.keras"), model.save, ".keras")
    # A one-device copy of the online encoder: exported and evaluated outside the
    # strategy, so no collective op waits for the other workers.
    encoder = single_device_encoder(config, model.encoder)
    export_dir = config.export_dir or os.path.join(workdir, "encoder")
    workdir_files.write_atomically(
        export_dir, lambda path: export.export_encoder(encoder, path, step=step)
    )
    result["export_dir"] = export_dir

    results = {}
    if config.evaluate and eval_sources is not None:
        results = evaluate_against_random(config, encoder, eval_sources)
        results["pretrain_seconds_this_call"] = round(train_seconds, 1)
        result["eval"] = results
    elif config.evaluate:
        print(_no_evaluation_reason(config, source, export_dir), flush=True)
    # Merged: the entries `python -m keras_byol.evaluate` added for this step stay; those
    # of an earlier step move under "earlier_steps".
    workdir_files.merge_evaluation(os.path.join(workdir, "eval.json"), results, step, export_dir)
    return result


def _no_evaluation_reason(config, source, export_dir):
    """One line: why a folder run was not evaluated, and the command that evaluates it."""
    labelled = (source.num_classes() or 0) >= 2
    why = (
        "its images have class labels but no held-out split"
        if labelled
        else "its images have no class labels (one subfolder per class gives them)"
    )
    return (
        f"No evaluation: --dataset={config.dataset} is a folder, and {why}. Evaluate the "
        f"encoder with: python -m keras_byol.evaluate --encoder={export_dir} "
        f"--dataset=LABELLED_FOLDER --test_dataset=HELD_OUT_FOLDER (or --noevaluate to "
        "silence this line)."
    )


def _load_checkpoint(model, path):
    try:
        model.load_weights(path)
    except Exception as error:  # Keras raises several types for a damaged archive
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"The checkpoint {path!r} cannot be read ({type(error).__name__}: {first_line}). "
            "It was damaged after it was written: restore it from a backup, or move it away "
            "to start the run again."
        ) from None


@contextlib.contextmanager
def _interrupt_explained(model, checkpoint):
    """Turns Ctrl-C during training into `Interrupted`, saying where the run resumes."""
    try:
        yield
    except KeyboardInterrupt:
        step = steps_done(model)
        if os.path.exists(checkpoint.path):
            where = (
                f"rerun the same command to resume from {checkpoint.path!r} (step "
                f"{checkpoint.saved_step}; steps after it are trained again)"
            )
        else:
            where = "no checkpoint was written yet: a rerun starts the run again"
        raise Interrupted(f"Interrupted at optimizer step {step}: {where}.") from None


@contextlib.contextmanager
def _input_errors_explained(config, model, checkpoint_path):
    """Turns an input file that vanished or broke during training into one message."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if data.NO_READABLE_IMAGE not in str(error.message):
            raise
        raise ValueError(
            f"{config.dataset!r}: {data.NO_READABLE_IMAGE} (batch size {config.batch_size}); "
            "each file skipped is named in the warnings above. Replace or remove them."
        ) from None
    except (
        tf.errors.NotFoundError,
        tf.errors.PermissionDeniedError,
        tf.errors.DataLossError,
    ) as error:
        first_line = str(error.message).strip().splitlines()[0]
        kept = (
            f"the checkpoint {checkpoint_path!r} is intact"
            if os.path.exists(checkpoint_path)
            else "no checkpoint was written yet"
        )
        raise ValueError(
            f"Reading the input {config.dataset!r} failed at optimizer step "
            f"{steps_done(model)}: {first_line}. A file was moved, deleted or made unreadable "
            f"during training; {kept}. Restore the file and rerun to resume (a folder with "
            "fewer files is another data set: use a new --workdir)."
        ) from None


def single_device_encoder(config, encoder):
    """A copy of `encoder` built in the default strategy (one device), same weights."""
    copy = build_encoder(config)
    copy.set_weights(encoder.get_weights())
    return copy


def evaluate_against_random(config, encoder, eval_sources):
    """The linear protocol on precomputed center-crop features (`linear_eval(augment=False)`)
    and the 20-NN majority vote (`knn_eval`) of `encoder` and of the same encoder with random
    weights; keys name the protocol ("byol_linear_center_crop", "byol_knn20", "random_…")."""
    train_source, test_source = eval_sources
    if train_source.kind == "arrays":  # the bundled digits: uint8 arrays
        train_source, test_source = (
            sources.ArraySource(s.images.astype(np.float32) / 255.0, s.labels)
            for s in (train_source, test_source)
        )
    keras.utils.set_random_seed(config.seed)
    results = {}
    for name, net in (("byol", encoder), ("random", build_encoder(config))):
        scores = evaluation.linear_and_knn(
            net, train_source, test_source, image_size=config.image_size,
            epochs=config.eval_epochs, seed=config.seed,
        )  # fmt: skip
        results[f"{name}_linear_center_crop"] = round(scores["linear"], 4)
        results[f"{name}_knn20"] = round(scores["knn20"], 4)
    print(
        "Linear protocol (center-crop features) / 20-NN accuracy on held-out images: "
        f"BYOL {results['byol_linear_center_crop']:.4f} / {results['byol_knn20']:.4f}, "
        f"same encoder with random weights {results['random_linear_center_crop']:.4f} / "
        f"{results['random_knn20']:.4f}",
        flush=True,
    )
    return results

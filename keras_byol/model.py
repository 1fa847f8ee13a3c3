"""BYOL(keras.Model): online encoder + projector + predictor, a target copy, and the train step."""

import warnings

import keras
from keras import ops

from keras_byol.batches import (
    INPUT_PROBLEMS,
    batch_labels,
    check_batch_size,
    encoder_input_shape,
    input_problem_flags,
    pooled_feature_dim,
    refused_before_the_step,
    unpack_views,
)
from keras_byol.heads import MLPHead
from keras_byol.losses import byol_loss
from keras_byol.normalization import layers_without_per_view_statistics, per_view_statistics
from keras_byol.optimizers import PROBE_LAYER
from keras_byol.schedules import AppliedSteps, CosineTargetDecay, target_decay
from keras_byol.workarounds import TrainerWorkarounds, bind_fit_arguments


def optimizer_of(optimizer):
    """The optimizer that steps (a `LossScaleOptimizer`'s inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def batch_counter(optimizer):
    """The optimizer's count of the batches it was given (Keras' `iterations` is this
    count ÷ N under gradient accumulation)."""
    return optimizer_of(optimizer)._iterations


def accumulation_steps(optimizer):
    """N of an optimizer built with `gradient_accumulation_steps=N`, else 1."""
    return int(getattr(optimizer_of(optimizer), "gradient_accumulation_steps", None) or 1)


def rematerialized_call(network, inputs):
    """`network(inputs, training=True)` whose activations are recomputed in the backward
    pass instead of kept (`keras.remat`: jax.checkpoint, tf.recompute_grad).

    The network runs as a pure function of its variables' values (`stateless_call`), so
    the recomputation repeats no side effect: BatchNorm's moving statistics are assigned
    once, from the forward pass. (`keras.RematScope` around the ResNets fails on both
    backends: it hands the `training` flag to the checkpointed call as a traced value.)
    """
    trainable = [ops.convert_to_tensor(v) for v in network.trainable_variables]
    non_trainable = [ops.convert_to_tensor(v) for v in network.non_trainable_variables]

    def pure(trainable, non_trainable, inputs):
        return network.stateless_call(trainable, non_trainable, inputs, training=True)

    outputs, updated = keras.remat(pure)(trainable, non_trainable, inputs)
    for variable, value in zip(network.non_trainable_variables, updated):
        variable.assign(value)
    return outputs


def standardize_features(features, epsilon=1e-6):
    """Each row of (B, D) features to zero mean and unit variance over its D values (the
    online probe's input: a LayerNorm without parameters)."""
    mean = ops.mean(features, axis=-1, keepdims=True)
    variance = ops.var(features, axis=-1, keepdims=True)
    return (features - mean) * ops.rsqrt(variance + epsilon)


def synchronize_batchnorms(network, synchronized):
    """Sets `synchronized` on every BatchNormalization layer of `network` (TensorFlow only).

    Under a `tf.distribute` strategy with several replicas, synchronized layers normalize
    with the statistics of the global batch, as the recipe does; on one device
    `FusedBatchNormalization` then still runs its fused kernel. Other backends compute
    statistics over the whole (sharded) batch anyway, and Keras refuses the flag there.
    """
    if keras.backend.backend() != "tensorflow":
        return
    for layer in network._flatten_layers(include_self=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)


@keras.saving.register_keras_serializable(package="keras_byol")
class BYOL(TrainerWorkarounds, keras.Model):
    """Bootstrap Your Own Latent (Grill et al., 2020).

    Online network: `encoder` f → `projector` g → `predictor` q (trained). Target
    network: `target_encoder` f_ξ → `target_projector` g_ξ, an exact copy at the start,
    then a Polyak average of the online weights after every optimizer step
    (ξ ← τ·ξ + (1−τ)·θ, τ from `schedules.target_decay`). The target runs in training
    mode: its BatchNorm uses batch statistics and keeps its own moving averages, which
    are not averaged from the online ones.

    `fit` takes a dataset of dicts `{"view1": (B, H, W, 3) float in [0, 1], "view2": …}`
    (an extra `"label"` is ignored) and logs `loss`, `projection_std` and `tau` (the τ of
    the last update). τ follows `target_decay`, a `schedules.CosineTargetDecay` the model
    owns and saves: `fit`, `train_on_batch`, custom loops and repeated `fit` calls all
    follow it, counting applied optimizer steps. Calling the model returns the online
    encoder's features.

    Args:
        encoder: a functional `keras.Model` from (B, H, W, 3) images to (B, D) features,
            e.g. `keras_byol.encoders.resnet("resnet50", (224, 224, 3))`.
        projection_dim: output width of projector and predictor (256 in the paper).
        hidden_dim: hidden width of the projector (4096 in the paper).
        predictor_hidden_dim: hidden width of the predictor; defaults to `hidden_dim`.
        target_decay: the τ schedule, a `schedules.CosineTargetDecay`. Default
            `CosineTargetDecay(0.996)` without total_steps: the first `fit` sets K from
            its epochs × steps per epoch and says so; `train_on_batch` and custom loops
            need it set. When τ reaches 1 while training goes on, a warning says so.
        synchronized_batchnorm: every BatchNorm of encoder, projector, predictor and
            target normalizes with the statistics of the global batch whenever several
            `tf.distribute` replicas train (the recipe's setting; one device keeps the
            fused kernel). False: each replica normalizes its own slice.
        augmenter: optional `views.TwoViewAugmenter` (any backend): batches may then be
            {"images": (B, H, W, C) uint8 or float} and the views are made inside the
            compiled train step, on the accelerator (README "Views").
        concat_views: run the online and the target network once over both views
            concatenated (2B images) instead of once per view. BatchNorm statistics stay
            per view (`normalization.per_view_statistics`), so the loss, gradients and
            moving averages equal the per-view passes up to float rounding (tested). Needs
            every BatchNorm of encoder and heads to be `normalization.FusedBatchNormalization`
            (the keras_byol ResNets' and heads' are). Off by default: on CPUs it was
            slower on both backends (benchmarks/RESULTS.md); on GPUs measure it with
            benchmarks/jax_step.py --concat-views.
        num_classes: adds an online linear probe: a Dense(num_classes) on the
            stop-gradient online features of view 1, trained with its own cross-entropy in
            the same step on batches with a "label" (−1 = unlabelled, skipped). It reports
            `probe_accuracy` and does not change the BYOL gradients of the network.
            `LARS` trains it without weight decay or trust ratio (plain momentum SGD at
            the run's learning rate): through the trust ratio it learned too slowly to
            say anything about the features (README "Watching a run").
        probe_standardize: the probe reads each example's features standardized to zero
            mean and unit variance over the D features (no parameters; the features'
            overall scale then does not set the probe's pace). False: the raw features, as
            the official code's classifier (`pretrained.load_official` uses False).
        head_norm: the projector's and predictor's hidden normalization, "batch" (the
            paper's) or, reading no batch statistics, "layer", "group" or "none"
            (`heads.MLPHead`).
        head_output_bias: whether the projector's and predictor's output Dense has a bias
            (the official code's has none; True keeps keras_byol's earlier heads).
        head_init: the heads' Dense initialization, one of `heads.HEAD_INITS`
            ("truncated_normal", "haiku" — the official code's —, "pytorch"). The
            default is kept for compatibility; the job's small-image recipe uses "pytorch"
            (the best measured on real digits, 2.6–3.5 points of 20-NN over the default)
            and its ImageNet presets "haiku".
        remat: recompute each view's online encoder pass in the backward pass
            (`rematerialized_call`) instead of keeping its activations: the two views'
            encoder activations are no longer held at once, for one more encoder forward
            per view. The same step up to float rounding (tested). Not with concat_views.

    Gradient accumulation: compile with an optimizer built with
    `gradient_accumulation_steps=N` (Keras' own): each batch adds its gradients, every N-th
    applies their mean; the Polyak update runs and τ advances only on applied steps, and
    `optimizer.iterations` counts applied steps. Keras calls a learning-rate schedule with
    the batch count: wrap it in `schedules.AppliedSteps(schedule, N)` (BYOL warns
    otherwise). Loss and metrics are per batch; BatchNorm normalizes each batch with its
    own statistics (what accumulation means for BN: use head_norm and a "group_ws"
    encoder for steps equal to one batch N× larger).

    Example:
        >>> encoder = keras_byol.encoders.resnet("resnet18", (32, 32, 3), small_images=True)
        >>> model = keras_byol.BYOL(
        ...     encoder, target_decay=keras_byol.schedules.CosineTargetDecay(0.996, 10 * steps))
        >>> model.compile(optimizer=keras_byol.optimizers.LARS(0.2, weight_decay=1.5e-6))
        >>> model.fit(views, epochs=10)  # views: a dataset of `steps` batches
        >>> features = model.encoder(images)  # (B, D), the online encoder

    Reference:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv 2006.07733.
    """

    def __init__(
        self,
        encoder,
        projection_dim=256,
        hidden_dim=4096,
        predictor_hidden_dim=None,
        target_decay=None,
        synchronized_batchnorm=True,
        augmenter=None,
        concat_views=False,
        num_classes=None,
        head_norm="batch",
        remat=False,
        head_output_bias=True,
        head_init="truncated_normal",
        probe_standardize=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.augmenter = augmenter
        self.image_shape = encoder_input_shape(encoder)
        feature_dim = pooled_feature_dim(encoder)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        self.predictor_hidden_dim = int(predictor_hidden_dim or hidden_dim)
        self.synchronized_batchnorm = bool(synchronized_batchnorm)

        synchronize_batchnorms(encoder, self.synchronized_batchnorm)
        self.encoder = encoder
        self.head_norm = head_norm
        self.head_output_bias = bool(head_output_bias)
        self.head_init = head_init
        head = dict(norm=head_norm, output_bias=self.head_output_bias, init=head_init)
        self.projector = MLPHead(
            self.hidden_dim, self.projection_dim, synchronized_batchnorm, name="projector", **head
        )
        self.predictor = MLPHead(
            self.predictor_hidden_dim, self.projection_dim, synchronized_batchnorm,
            name="predictor", **head,
        )  # fmt: skip
        self.projector.build((None, feature_dim))
        self.predictor.build((None, self.projection_dim))

        # The target is built here, not lazily in fit, so that it starts as an exact copy.
        self.target_encoder = keras.models.clone_model(encoder)
        self.target_projector = MLPHead.from_config(
            {**self.projector.get_config(), "name": "target_projector"}
        )
        self.target_projector.build((None, feature_dim))
        self._averaged_pairs = self._pair_target_with_online()
        # An exact copy of every weight (BN moving statistics too; they diverge later). The
        # explicit copy gives the target its own buffer (JAX donates state buffers).
        for target_net, online_net in self._target_and_online_networks():
            for target, online in zip(target_net.weights, online_net.weights):
                target.assign(ops.copy(online.value))
        self._freeze_target_variables()
        self.concat_views = bool(concat_views)
        if self.concat_views:
            self._check_per_view_statistics()
        self.remat = bool(remat)
        if self.remat and self.concat_views:
            raise ValueError(
                "remat=True recomputes each view's online encoder pass so that the two "
                "passes' activations are not held at once; with concat_views=True there is "
                "one pass over both views and nothing to save. Use one of them."
            )

        # The τ schedule, mirrored in two variables that the compiled step reads (so a
        # re-planned K needs no retrace) and that checkpoints save; 0 steps = not set yet.
        self.base_tau = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="base_tau", dtype="float32"
        )
        self.tau_total_steps = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="tau_total_steps", dtype="int32"
        )
        self.set_target_decay(target_decay or CosineTargetDecay())
        self.num_classes = None if num_classes is None else int(num_classes)
        self.probe_standardize = bool(probe_standardize)
        self.probe = None
        if self.num_classes is not None:
            self.probe = keras.layers.Dense(self.num_classes, name=PROBE_LAYER)
            self.probe.build((None, feature_dim))
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.projection_std_tracker = keras.metrics.Mean(name="projection_std")
        # Batches with bad input, counted in the step; `callbacks.InputCheck` reads them.
        self.input_problem_trackers = [keras.metrics.Sum(name=name) for name in INPUT_PROBLEMS]
        self.built = True

    # ----------------------------------------------------------------------------- state
    def _check_per_view_statistics(self):
        """Raises unless every BatchNorm can keep per-view statistics (`concat_views`)."""
        unsupported = layers_without_per_view_statistics(
            self.encoder, self.projector, self.predictor
        )
        if unsupported:
            raise ValueError(
                "BYOL(concat_views=True) keeps BatchNorm statistics per view only in "
                "keras_byol.normalization.FusedBatchNormalization layers; these would mix "
                f"the two views: {unsupported}. Build the encoder with that layer or pass "
                "concat_views=False."
            )

    def _target_and_online_networks(self):
        """The networks that have a target copy: (f_ξ, f) and (g_ξ, g); q has none."""
        return ((self.target_encoder, self.encoder), (self.target_projector, self.projector))

    def _pair_target_with_online(self):
        """(target, online) parameter pairs for the Polyak average, matched by position.

        Every variable that is trainable in the online encoder/projector is averaged
        (conv/dense kernels and biases, BatchNorm γ and β); BatchNorm moving statistics
        and other non-trainable state are not.
        """
        pairs = []
        for target_net, online_net in self._target_and_online_networks():
            if len(target_net.weights) != len(online_net.weights):
                raise ValueError(
                    f"Could not copy {online_net.name}: the clone has "
                    f"{len(target_net.weights)} weights, the original {len(online_net.weights)}."
                )
            for target, online in zip(target_net.weights, online_net.weights):
                if tuple(target.shape) != tuple(online.shape):
                    raise ValueError(
                        f"Target/online weight mismatch: {target.path} {target.shape} vs "
                        f"{online.path} {online.shape}."
                    )
                if online.trainable:
                    pairs.append((target, online))
        return pairs

    @property
    def target_weights(self):
        """Target parameters that follow the online ones (same order as `online_ema_weights`)."""
        return [target for target, _ in self._averaged_pairs]

    @property
    def online_ema_weights(self):
        """The online encoder and projector parameters the target averages."""
        return [online for _, online in self._averaged_pairs]

    def _freeze_target_variables(self):
        # The target layers stay `trainable` so that BatchNorm runs in training mode
        # (batch statistics); only their variables are excluded from gradients.
        for variable in self.target_encoder.weights + self.target_projector.weights:
            variable.trainable = False

    @property
    def trainable(self):
        return keras.Model.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.Model.trainable.fset(self, value)
        if hasattr(self, "target_projector"):
            self._freeze_target_variables()

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.projection_std_tracker]
        if self.probe is not None:
            metrics += [self.probe_loss_tracker, self.probe_accuracy]
        return metrics + self.input_problem_trackers

    def set_target_decay(self, schedule):
        """Makes `schedule` (a `schedules.CosineTargetDecay`) the model's τ schedule.

        It takes effect from the next step: τ_k is evaluated on the applied-step counter k,
        so changing K mid-run continues the cosine of the new K from the current step.
        """
        if not isinstance(schedule, CosineTargetDecay):
            raise TypeError(
                "target_decay must be a keras_byol.schedules.CosineTargetDecay; got "
                f"{type(schedule).__name__}."
            )
        self.target_decay = CosineTargetDecay(**schedule.get_config())
        self.base_tau.assign(self.target_decay.base_tau)
        self.tau_total_steps.assign(self.target_decay.total_steps or 0)
        self._warned_frozen_target = False

    def load_own_variables(self, store):
        # The τ variables are the saved truth: a file written before `target_decay` was
        # in the config (or by `load_weights`) still gives the schedule it trained with.
        super().load_own_variables(store)
        total = int(ops.convert_to_numpy(self.tau_total_steps))
        if total != (self.target_decay.total_steps or 0):
            base = round(float(ops.convert_to_numpy(self.base_tau)), 6)  # a float32 variable
            self.target_decay = CosineTargetDecay(base, total or None)

    def read_batch(self, data):
        """(view1, view2, labels or None) of a batch, after the batch checks and the τ
        schedule's (both backends' steps call it, at trace time)."""
        view1, view2 = unpack_views(data, self.image_shape, self.augmenter)
        check_batch_size(view1, self._replicas_per_step())
        self.check_target_decay()
        return view1, view2, batch_labels(data)

    def _replicas_per_step(self):
        """Replicas that each see the step's batch slice (1 off TensorFlow: JAX steps see
        the global batch)."""
        strategy = getattr(self, "distribute_strategy", None)
        return 1 if strategy is None else strategy.num_replicas_in_sync

    def check_target_decay(self):
        """Raises unless the τ schedule is planned."""
        if self.target_decay.total_steps is None:
            raise ValueError(
                "The τ schedule has no total_steps, so the target update is undefined. "
                "Build BYOL(..., target_decay=keras_byol.schedules.CosineTargetDecay(base_tau, "
                "total_steps=K)) with K the optimizer steps of the whole run, or call "
                "model.set_target_decay(...); model.fit sets it from its epochs when unset."
            )

    def current_tau(self, step):
        """τ for the update after applied optimizer step `step` (0-based)."""
        return target_decay(step, self.base_tau, ops.maximum(self.tau_total_steps, 1))

    def warn_if_target_frozen(self, last_step):
        """Warns once when training reaches `last_step` past the step where τ becomes 1."""
        total = self.target_decay.total_steps
        if total is None or last_step <= total or self._warned_frozen_target:
            return
        self._warned_frozen_target = True
        warnings.warn(
            f"The target network stops moving: τ reaches 1 at step {total} "
            f"({self.target_decay}), and training goes on to step {last_step}. Plan the "
            "whole run: BYOL(target_decay=keras_byol.schedules.CosineTargetDecay("
            f"{self.target_decay.base_tau}, total_steps={last_step})) or "
            "model.set_target_decay(...).",
            stacklevel=3,
        )

    # --------------------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """Online encoder features (B, D) of images, or of the dict's "view1" (of the
        augmenter's view 1 of a dict's raw "images" when the model has an augmenter)."""
        if isinstance(inputs, dict):
            if "view1" not in inputs and self.augmenter is not None:
                inputs = self.augmenter(inputs["images"])
            inputs = inputs["view1"] if "view1" in inputs else inputs["images"]
        return self.encoder(inputs, training=training)

    def online_forward(self, view, training=True):
        """(features y, projection z, prediction p): (B, D), (B, d), (B, d) online."""
        if self.remat and training:
            features = rematerialized_call(self.encoder, view)
        else:
            features = self.encoder(view, training=training)
        projection = self.projector(features, training=training)
        return features, projection, self.predictor(projection, training=training)

    def target_forward(self, view):
        """Target projection z′ (B, projection_dim), in training mode as the paper does."""
        return self.target_projector(self.target_encoder(view, training=True), training=True)

    def forward_both_views(self, view1, view2):
        """Online (features y1, projection z1, predictions p1, p2), target (z′1, z′2).

        One pass per network over both views concatenated (with per-view BatchNorm
        statistics) when `concat_views` is on, else a pass per view.
        """
        if not self.concat_views:
            features1, z1, p1 = self.online_forward(view1)
            _, _, p2 = self.online_forward(view2)
            return (features1, z1, p1, p2), (self.target_forward(view1), self.target_forward(view2))
        with per_view_statistics(2):
            both = ops.concatenate([view1, view2], axis=0)
            features, projections, predictions = self.online_forward(both)
            target_projections = self.target_forward(both)
        features1, _ = ops.split(features, 2, axis=0)
        z1, _ = ops.split(projections, 2, axis=0)
        p1, p2 = ops.split(predictions, 2, axis=0)
        return (features1, z1, p1, p2), tuple(ops.split(target_projections, 2, axis=0))

    def compute_losses(self, view1, view2, labels=None):
        """(total loss, outputs) for one batch (see `forward_both_views` for the passes).

        outputs: "byol_loss" (scalar), "projection" (online z of view 1), "input_problems"
        (`batches.input_problem_flags`) and, with a probe and labels, "probe_loss",
        "probe_logits", "labels", "label_mask".
        """
        (features1, z1, p1, p2), (target_z1, target_z2) = self.forward_both_views(view1, view2)
        loss = byol_loss(p1, p2, target_z1, target_z2)
        flags = input_problem_flags(view1, view2, self._replicas_per_step())
        outputs = {"byol_loss": loss, "projection": z1, "input_problems": flags}
        if self.probe is None or labels is None:
            return loss, outputs
        # The probe reads the online features through a stop-gradient: it learns from
        # BYOL's representation without changing it.
        features = ops.cast(ops.stop_gradient(features1), "float32")
        if self.probe_standardize:
            features = standardize_features(features)
        logits = ops.cast(self.probe(features), "float32")
        mask = ops.cast(labels >= 0, "float32")
        safe_labels = ops.where(labels >= 0, labels, ops.zeros_like(labels))
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            safe_labels, logits, from_logits=True
        )
        probe_loss = ops.sum(cross_entropy * mask) / ops.maximum(ops.sum(mask), 1.0)
        outputs.update(
            probe_loss=probe_loss, probe_logits=logits, labels=safe_labels, label_mask=mask
        )
        return loss + probe_loss, outputs

    def polyak_update(self, tau):
        """ξ ← τ·ξ + (1 − τ)·θ for every averaged parameter (runs inside the compiled step)."""
        one_minus_tau = 1.0 - tau
        for target, online in self._averaged_pairs:
            target.assign_sub(one_minus_tau * (target - online))

    def update_target(self, step, applied=True):
        """The Polyak update after optimizer step `step` (0-based), if that step was applied.

        A step a loss-scaling optimizer skipped (non-finite gradients) leaves the target
        as it is (τ = 1 exactly); the τ index does not advance either, since it counts
        applied steps. Returns τ_step.
        """
        tau = self.current_tau(step)
        self.polyak_update(ops.where(applied, tau, ops.ones_like(tau)))
        return tau

    def update_metrics(self, outputs):
        """Updates loss, collapse monitor (std of normalized projections) and probe metrics."""
        projection = ops.cast(outputs["projection"], "float32")
        normalized = projection / ops.maximum(ops.norm(projection, axis=-1, keepdims=True), 1e-12)
        self.loss_tracker.update_state(outputs["byol_loss"])
        self.projection_std_tracker.update_state(ops.mean(ops.std(normalized, axis=0)))
        for tracker in self.input_problem_trackers:
            tracker.update_state(outputs["input_problems"][tracker.name])
        if "probe_logits" in outputs:
            self.probe_loss_tracker.update_state(outputs["probe_loss"])
            self.probe_accuracy.update_state(
                outputs["labels"], outputs["probe_logits"], sample_weight=outputs["label_mask"]
            )
        return {m.name: m.result() for m in self.metrics}

    # -------------------------------------------------------------------------- training
    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            from keras_byol.backends import tensorflow as backend_step
        elif backend == "jax":
            from keras_byol.backends import jax as backend_step
        else:
            raise NotImplementedError(
                f"keras_byol trains on the TensorFlow and JAX backends; got {backend!r}."
            )
        return backend_step.train_step(self, *args)

    def _check_compiled_for_byol(self):
        # compile() itself is not overridden: Keras then skips compile_from_config on
        # load and the optimizer state (and with it the τ position) would be lost.
        if getattr(self, "optimizer", None) is None:
            raise ValueError("Call model.compile(optimizer=...) before fit.")
        every = accumulation_steps(self.optimizer)
        if every > 1 and keras.backend.backend() == "tensorflow":
            from keras_byol.backends.tensorflow import check_accumulation

            check_accumulation(self)
        rate = getattr(optimizer_of(self.optimizer), "_learning_rate", None)
        if every > 1 and isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            counted = rate.accumulation_steps if isinstance(rate, AppliedSteps) else 1
            if counted != every:
                warnings.warn(
                    f"The optimizer accumulates gradients over {every} batches and its "
                    f"learning-rate schedule {type(rate).__name__} counts a step every "
                    f"{counted} batch(es) (Keras calls it with the batch count), so it runs "
                    f"{every / counted:g}× as fast as the applied steps that τ counts. Wrap "
                    f"the schedule: keras_byol.schedules.AppliedSteps(schedule, {every}).",
                    stacklevel=3,
                )
        if getattr(self, "loss", None) is not None:
            raise ValueError("BYOL computes its own loss; do not pass loss= to compile.")

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with the τ schedule planned (`callbacks.TargetDecayPlan`) and
        the input checked (`callbacks.InputCheck`: NaN/inf, [0, 255] floats, one-image
        batches stop `fit` with a ValueError) and a warning when the learning rate is 0
        for the whole call (`callbacks.LearningRateCheck`)."""
        from keras_byol.callbacks import InputCheck, LearningRateCheck, TargetDecayPlan

        self._check_compiled_for_byol()
        arguments = bind_fit_arguments(args, kwargs)
        callbacks = list(arguments.get("callbacks") or [])
        if not any(isinstance(callback, TargetDecayPlan) for callback in callbacks):
            callbacks.append(TargetDecayPlan())
        arguments["callbacks"] = [InputCheck(), LearningRateCheck()] + callbacks
        try:
            return super().fit(**arguments)
        except Exception as error:
            # A step that failed while tracing (a batch check) may have created variables:
            # the next fit traces a new function instead of reusing this one.
            self.train_function = None
            self._raise_if_refused_before_the_step(error)
            raise

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """`keras.Model.train_on_batch`, with the input checks of `fit`."""
        from keras_byol.callbacks import raise_on_input_problems

        self._check_compiled_for_byol()
        try:
            logs = super().train_on_batch(x, y, sample_weight, class_weight, return_dict=True)
        except Exception as error:
            self.train_function = None  # as in `fit`
            self._raise_if_refused_before_the_step(error)
            raise
        step = int(ops.convert_to_numpy(self.optimizer.iterations))
        raise_on_input_problems(logs, step)
        self.warn_if_target_frozen(step)
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def _raise_if_refused_before_the_step(self, error):
        def step():
            return int(ops.convert_to_numpy(self.optimizer.iterations))

        refused = refused_before_the_step(error, step)
        if refused is not None:
            raise refused from None

    # --------------------------------------------------------------------- serialization
    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "projection_dim": self.projection_dim,
            "hidden_dim": self.hidden_dim,
            "predictor_hidden_dim": self.predictor_hidden_dim,
            "target_decay": keras.saving.serialize_keras_object(self.target_decay),
            "synchronized_batchnorm": self.synchronized_batchnorm,
            "concat_views": self.concat_views,
            "num_classes": self.num_classes,
            "head_norm": self.head_norm,
            "head_output_bias": self.head_output_bias,
            "head_init": self.head_init,
            "probe_standardize": self.probe_standardize,
            "remat": self.remat,
            "augmenter": (
                None
                if self.augmenter is None
                else keras.saving.serialize_keras_object(self.augmenter)
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("encoder", "augmenter", "target_decay"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)

"""BYOL(keras.Model): online encoder + projector + predictor, a target copy, and the train step."""

import keras
from keras import ops

from keras_byol import backends
from keras_byol.batches import (
    INPUT_PROBLEMS,
    batch_labels,
    check_batch_size,
    encoder_input_shape,
    input_problem_flags,
    pooled_feature_dim,
    replicas_per_step,
    unpack_views,
)
from keras_byol.callbacks import CheckedFit
from keras_byol.heads import DEFAULT_HEAD_INIT, MLPHead
from keras_byol.losses import byol_loss, projection_std
from keras_byol.normalization import (
    layers_without_per_view_statistics,
    per_view_statistics,
    synchronize_batchnorms,
)
from keras_byol.probe import OnlineProbe
from keras_byol.schedules import CosineTargetDecay, PlannedTargetDecay
from keras_byol.workarounds import TrainerWorkarounds


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


# BYOL's config: arguments kept as they are, and Keras objects serialized.
_PLAIN_CONFIG = (
    "projection_dim", "hidden_dim", "predictor_hidden_dim", "synchronized_batchnorm",
    "concat_views", "num_classes", "head_norm", "head_output_bias", "head_init",
    "probe_standardize", "remat",
)  # fmt: skip
_OBJECT_CONFIG = ("encoder", "augmenter", "target_decay")


@keras.saving.register_keras_serializable(package="keras_byol")
class BYOL(CheckedFit, TrainerWorkarounds, keras.Model):
    """Bootstrap Your Own Latent (Grill et al., 2020).

    Online network: `encoder` f → `projector` g → `predictor` q (trained). Target network:
    `target_encoder` f_ξ → `target_projector` g_ξ, an exact copy at the start, then after
    every applied optimizer step a Polyak average ξ ← τ·ξ + (1−τ)·θ of the online weights,
    τ from the model's `target_decay`. The target runs in training mode: its BatchNorm uses
    batch statistics and keeps its own moving averages. `fit` takes dicts
    `{"view1": (B, H, W, 3) float in [0, 1], "view2": …}` (a `"label"` feeds the probe) and
    logs `loss`, `projection_std` and `tau`; calling the model gives the online features.

    Args:
        encoder: a functional `keras.Model` from (B, H, W, 3) images to (B, D) features,
            e.g. `keras_byol.encoders.resnet("resnet50", (224, 224, 3))`.
        projection_dim, hidden_dim, predictor_hidden_dim: the heads' widths (256, 4096 and
            hidden_dim in the paper).
        target_decay: a `schedules.CosineTargetDecay`, saved with the model; without
            total_steps the first `fit` plans it over its epochs and says so.
        synchronized_batchnorm: BatchNorm uses the global batch's statistics whenever
            several `tf.distribute` replicas train (the recipe's setting).
        augmenter: a `views.TwoViewAugmenter`: batches may then be {"images": ...} and the
            views are made inside the compiled step.
        concat_views: one pass per network over both views, with per-view BatchNorm
            statistics (needs `normalization.FusedBatchNormalization` throughout).
        num_classes: adds an `probe.OnlineProbe` on the stop-gradient features of view 1.
        head_norm, head_output_bias, head_init: the heads' options (`heads.MLPHead`);
            head_init by default the best measured, the official heads have no output bias.
        remat: recompute each view's online encoder pass in the backward pass.
        probe_standardize: the probe reads each example's features standardized over D.

    Example:
        >>> encoder = keras_byol.encoders.resnet("resnet18", (32, 32, 3), small_images=True)
        >>> model = keras_byol.BYOL(encoder)  # τ planned by the first fit
        >>> model.compile(optimizer=keras_byol.optimizers.LARS(0.2, weight_decay=1.5e-6))
        >>> model.fit(views, epochs=10)  # views: a dataset of {"view1", "view2"} batches
        >>> features = model.encoder(images)  # (B, D), the online encoder

    Reference:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv 2006.07733.
    """

    def __init__(self, encoder, projection_dim=256, hidden_dim=4096, predictor_hidden_dim=None,
                 target_decay=None, synchronized_batchnorm=True, augmenter=None,
                 concat_views=False, num_classes=None, head_norm="batch", remat=False,
                 head_output_bias=True, head_init=DEFAULT_HEAD_INIT, probe_standardize=True,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.augmenter = augmenter
        self.image_shape = encoder_input_shape(encoder)
        feature_dim = pooled_feature_dim(encoder)
        self.projection_dim, self.hidden_dim = int(projection_dim), int(hidden_dim)
        self.predictor_hidden_dim = int(predictor_hidden_dim or hidden_dim)
        self.head_norm, self.head_init = head_norm, head_init
        self.synchronized_batchnorm, self.head_output_bias, self.concat_views, self.remat = map(
            bool, (synchronized_batchnorm, head_output_bias, concat_views, remat)
        )
        self.num_classes = None if num_classes is None else int(num_classes)
        self.probe_standardize = bool(probe_standardize)

        synchronize_batchnorms(encoder, self.synchronized_batchnorm)
        self.encoder = encoder
        self.projector, self.predictor = build_heads(
            feature_dim, self.hidden_dim, self.predictor_hidden_dim, self.projection_dim,
            synchronized_batchnorm, norm=head_norm, output_bias=self.head_output_bias,
            init=head_init,
        )  # fmt: skip
        # The target is built here, not lazily in fit, so that it starts as an exact copy.
        self.target_encoder = keras.models.clone_model(encoder)
        self.target_projector = MLPHead.from_config(
            {**self.projector.get_config(), "name": "target_projector"}
        )
        self.target_projector.build((None, feature_dim))
        self._averaged_pairs = target_online_pairs(self._target_and_online_networks())
        copy_weights(self._target_and_online_networks())
        self._freeze_target_variables()
        check_view_passes(
            self.remat, self.concat_views, self.encoder, self.projector, self.predictor
        )

        self._tau = PlannedTargetDecay.add_to(self)
        self.base_tau, self.tau_total_steps = self._tau.base_tau, self._tau.total_steps
        self.set_target_decay(target_decay or CosineTargetDecay())
        self.probe = None
        if self.num_classes is not None:
            self.probe = OnlineProbe(self.num_classes, standardize=self.probe_standardize)
            self.probe.build((None, feature_dim))
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.projection_std_tracker = keras.metrics.Mean(name="projection_std")
        # Batches with bad input, counted in the step; `callbacks.InputCheck` reads them.
        self.input_problem_trackers = [keras.metrics.Sum(name=name) for name in INPUT_PROBLEMS]
        self.built = True

    def _target_and_online_networks(self):
        """The networks that have a target copy: (f_ξ, f) and (g_ξ, g); q has none."""
        return ((self.target_encoder, self.encoder), (self.target_projector, self.projector))

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

    @property
    def target_decay(self):
        """The τ schedule the model follows (a `schedules.CosineTargetDecay`)."""
        return self._tau.schedule

    def set_target_decay(self, schedule):
        """Follows `schedule` (a `schedules.CosineTargetDecay`) from the next step on."""
        self._tau.set(schedule)

    def warn_if_target_frozen(self, last_step):
        """Warns once when training reaches `last_step` past the step where τ becomes 1."""
        self._tau.warn_if_frozen(last_step)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._tau.read_variables()  # the τ variables are the saved truth

    def read_batch(self, data):
        """(view1, view2, labels or None) of a batch, checked (by both backends' steps)."""
        view1, view2 = unpack_views(data, self.image_shape, self.augmenter)
        check_batch_size(view1, replicas_per_step(self))
        self._tau.check_planned()
        return view1, view2, batch_labels(data)

    def call(self, inputs, training=False):
        """Online features (B, D) of images, of a dict's "view1" or of its "images"."""
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
        """Online (y1, z1, p1, p2), target (z′1, z′2); a pass per view unless concat_views."""
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
        """(total loss, outputs): the symmetric loss ℓ(p1, z′2) + ℓ(p2, z′1) (`byol_loss`
        stops the target's gradient) plus the probe's; outputs for `update_metrics`."""
        (features1, z1, p1, p2), (target_z1, target_z2) = self.forward_both_views(view1, view2)
        loss = byol_loss(p1, p2, target_z1, target_z2)
        flags = input_problem_flags(view1, view2, replicas_per_step(self))
        outputs = {"byol_loss": loss, "projection": z1, "input_problems": flags}
        if self.probe is None or labels is None:
            return loss, outputs
        probe_loss, logits, labels, mask = self.probe.loss_and_logits(features1, labels)
        outputs.update(probe_loss=probe_loss, probe_logits=logits, labels=labels, label_mask=mask)
        return loss + probe_loss, outputs

    def update_target(self, step, applied=True):
        """The Polyak update after optimizer step `step` (0-based) if it was applied (a step
        a loss-scaling optimizer skipped leaves the target: τ = 1); returns τ_step."""
        tau = self._tau.tau(step)
        self.polyak_update(ops.where(applied, tau, ops.ones_like(tau)))
        return tau

    def polyak_update(self, tau):
        """ξ ← τ·ξ + (1 − τ)·θ for every averaged parameter."""
        one_minus_tau = 1.0 - tau
        for target, online in self._averaged_pairs:
            target.assign_sub(one_minus_tau * (target - online))

    def update_metrics(self, outputs):
        """Updates loss, collapse monitor (std of normalized projections) and probe metrics."""
        self.loss_tracker.update_state(outputs["byol_loss"])
        self.projection_std_tracker.update_state(projection_std(outputs["projection"]))
        for tracker in self.input_problem_trackers:
            tracker.update_state(outputs["input_problems"][tracker.name])
        if "probe_logits" in outputs:
            self.probe_loss_tracker.update_state(outputs["probe_loss"])
            self.probe_accuracy.update_state(
                outputs["labels"], outputs["probe_logits"], sample_weight=outputs["label_mask"]
            )
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *args):
        return backends.current().train_step(self, *args)

    def get_config(self):
        config = {key: getattr(self, key) for key in _PLAIN_CONFIG}
        for key in _OBJECT_CONFIG:
            value = getattr(self, key)
            config[key] = None if value is None else keras.saving.serialize_keras_object(value)
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in _OBJECT_CONFIG:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def target_online_pairs(networks):
    """(target, online) parameter pairs for the Polyak average, matched by position in each
    (target network, online network) of `networks`.

    Every variable that is trainable in the online network is averaged (conv/dense kernels
    and biases, BatchNorm γ and β); BatchNorm moving statistics and other non-trainable
    state are not.
    """
    pairs = []
    for target_net, online_net in networks:
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


def copy_weights(networks):
    """Makes each target network of (target, online) `networks` an exact copy, BatchNorm
    moving statistics too (they diverge later). The explicit copy gives the target its own
    buffer (JAX donates state buffers)."""
    for target_net, online_net in networks:
        for target, online in zip(target_net.weights, online_net.weights):
            target.assign(ops.copy(online.value))


def check_view_passes(remat, concat_views, *networks):
    """Raises for `BYOL`'s view-pass options that cannot hold together with `networks`."""
    if remat and concat_views:
        raise ValueError(
            "remat=True recomputes each view's online encoder pass so that the two "
            "passes' activations are not held at once; with concat_views=True there is "
            "one pass over both views and nothing to save. Use one of them."
        )
    unsupported = concat_views and layers_without_per_view_statistics(*networks)
    if unsupported:
        raise ValueError(
            "BYOL(concat_views=True) keeps BatchNorm statistics per view only in "
            "keras_byol.normalization.FusedBatchNormalization layers; these would mix "
            f"the two views: {unsupported}. Build the encoder with that layer or pass "
            "concat_views=False."
        )


def build_heads(feature_dim, hidden_dim, predictor_hidden_dim, projection_dim, synchronized,
                **head):  # fmt: skip
    """(projector g, predictor q), built: `heads.MLPHead`s with the options `head` (norm,
    output_bias, init)."""
    projector = MLPHead(hidden_dim, projection_dim, synchronized, name="projector", **head)
    predictor = MLPHead(
        predictor_hidden_dim, projection_dim, synchronized, name="predictor", **head
    )
    projector.build((None, feature_dim))
    predictor.build((None, projection_dim))
    return projector, predictor

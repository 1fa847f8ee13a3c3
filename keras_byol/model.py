"""BYOL(keras.Model): online encoder + projector + predictor, a target copy, and the train step."""

import inspect

import keras
from keras import ops

from keras_byol.heads import MLPHead
from keras_byol.losses import byol_loss
from keras_byol.normalization import layers_without_per_view_statistics, per_view_statistics
from keras_byol.schedules import target_decay

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _input_shape_of(encoder):
    """(H, W, C) of a functional/Sequential encoder, or a ValueError saying what to do."""
    inputs = getattr(encoder, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "BYOL needs an encoder with one defined image input, such as a functional "
            "keras.Model (e.g. keras_byol.encoders.resnet(...)); got "
            f"{type(encoder).__name__} with inputs={inputs!r}."
        )
    return tuple(inputs[0].shape[1:])


def _pooled_feature_dim(encoder):
    """D of an encoder whose output is (B, D), or a ValueError naming the fix."""
    outputs = getattr(encoder, "outputs", None)
    shape = tuple(outputs[0].shape) if outputs and len(outputs) == 1 else None
    if shape is None or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            "The BYOL encoder must return pooled features of shape (B, D); this one returns "
            f"{shape}. End it with keras.layers.GlobalAveragePooling2D() (the ResNets of "
            "keras_byol.encoders already do)."
        )
    return int(shape[-1])


def _bind_fit_arguments(args, kwargs):
    """keras.Model.fit's arguments by name, whether passed by position or keyword."""
    signature = inspect.signature(keras.Model.fit)
    bound = signature.bind(None, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    arguments.update(arguments.pop("kwargs", {}))
    return arguments


@keras.saving.register_keras_serializable(package="keras_byol")
class BYOL(keras.Model):
    """Bootstrap Your Own Latent (Grill et al., 2020).

    Online network: `encoder` f → `projector` g → `predictor` q (trained). Target
    network: `target_encoder` f_ξ → `target_projector` g_ξ, an exact copy at the start,
    then a Polyak average of the online weights after every optimizer step
    (ξ ← τ·ξ + (1−τ)·θ, τ from `schedules.target_decay`). The target runs in training
    mode: its BatchNorm uses batch statistics and keeps its own moving averages, which
    are not averaged from the online ones.

    `fit` takes a dataset of dicts `{"view1": (B, H, W, 3) float in [0, 1], "view2": …}`
    (an extra `"label"` is ignored). A `callbacks.TargetUpdate` sets τ_base and the
    number of steps K of the cosine τ schedule; `fit` adds `TargetUpdate(0.996)` when
    none is given. Calling the model returns the online encoder's features.

    Args:
        encoder: a functional `keras.Model` from (B, H, W, 3) images to (B, D) features,
            e.g. `keras_byol.encoders.resnet("resnet50", (224, 224, 3))`.
        projection_dim: output width of projector and predictor (256 in the paper).
        hidden_dim: hidden width of the projector (4096 in the paper).
        predictor_hidden_dim: hidden width of the predictor; defaults to `hidden_dim`.
        synchronized_batchnorm: synchronize the heads' BatchNorm across replicas.
        augmenter: optional `augment.TwoViewAugmenter` (TensorFlow backend): batches may
            then be {"images": (B, H, W, 3) uint8 or float} and the views are made inside
            the train step, on the accelerator.
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

    Example:
        >>> encoder = keras_byol.encoders.resnet("resnet18", (32, 32, 3), small_images=True)
        >>> model = keras_byol.BYOL(encoder, projection_dim=256, hidden_dim=4096)
        >>> model.compile(optimizer=keras_byol.optimizers.LARS(0.2, weight_decay=1.5e-6))
        >>> model.fit(views, epochs=10, callbacks=[keras_byol.callbacks.TargetUpdate(0.996)])
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
        synchronized_batchnorm=False,
        augmenter=None,
        concat_views=False,
        num_classes=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if augmenter is not None and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "BYOL(augmenter=...) runs TwoViewAugmenter, a TensorFlow-backend layer; on "
                f"the {keras.backend.backend()} backend make the views in tf.data instead "
                '(keras_byol.data.pretrain_dataset(..., augment_on="cpu")).'
            )
        self.augmenter = augmenter
        self.image_shape = _input_shape_of(encoder)
        feature_dim = _pooled_feature_dim(encoder)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        self.predictor_hidden_dim = int(predictor_hidden_dim or hidden_dim)
        self.synchronized_batchnorm = bool(synchronized_batchnorm)

        self.encoder = encoder
        self.projector = MLPHead(
            self.hidden_dim, self.projection_dim, synchronized_batchnorm, name="projector"
        )
        self.predictor = MLPHead(
            self.predictor_hidden_dim, self.projection_dim, synchronized_batchnorm, name="predictor"
        )
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

        # τ schedule state, set by callbacks.TargetUpdate; stored so it is saved and resumed.
        self.base_tau = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(0.996),
            trainable=False,
            name="base_tau",
            dtype="float32",
        )
        self.tau_total_steps = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(1),
            trainable=False,
            name="tau_total_steps",
            dtype="int32",
        )
        self.num_classes = None if num_classes is None else int(num_classes)
        self.probe = None
        if self.num_classes is not None:
            self.probe = keras.layers.Dense(self.num_classes, name="online_probe")
            self.probe.build((None, feature_dim))
            self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
            self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.projection_std_tracker = keras.metrics.Mean(name="projection_std")
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
        return metrics

    def set_target_schedule(self, base_tau, total_steps):
        """Sets τ_base and K of the cosine τ schedule (callbacks.TargetUpdate calls this)."""
        if not 0.0 <= base_tau <= 1.0:
            raise ValueError(f"base_tau must be in [0, 1], got {base_tau}.")
        if int(total_steps) < 1:
            raise ValueError(
                f"total_steps must be >= 1 for the τ schedule to be defined, got {total_steps}."
            )
        self.base_tau.assign(float(base_tau))
        self.tau_total_steps.assign(int(total_steps))

    def current_tau(self, step):
        """τ for the update after optimizer step `step` (0-based), from the stored schedule."""
        return target_decay(step, self.base_tau, self.tau_total_steps)

    # ---------------------------------------------------------------------------- inputs
    def unpack_views(self, data):
        """(view1, view2) from a batch, or an error saying what the dataset should yield."""
        if isinstance(data, (tuple, list)):
            # train_on_batch and array inputs arrive as (x,) or (x, None, None).
            if data and isinstance(data[0], dict) and all(d is None for d in data[1:]):
                data = data[0]
            else:
                raise TypeError(
                    "BYOL.fit expects batches that are dicts {'view1': images, 'view2': images} "
                    f"(float32, (B, H, W, 3), values in [0, 1]); got a {type(data).__name__} of "
                    f"{len(data)} elements. Map your dataset, e.g. "
                    "ds.map(lambda v1, v2: {'view1': v1, 'view2': v2})."
                )
        if isinstance(data, dict) and "images" in data and "view1" not in data:
            if self.augmenter is None:
                raise TypeError(
                    "This batch holds raw 'images' but the model has no augmenter: build "
                    "BYOL(..., augmenter=keras_byol.augment.TwoViewAugmenter(image_size=...)) "
                    'or make the views in tf.data (pretrain_dataset(..., augment_on="cpu")).'
                )
            data = self.augmenter(data["images"])
        if not isinstance(data, dict) or "view1" not in data or "view2" not in data:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise TypeError(
                "BYOL.fit expects batches that are dicts with keys 'view1' and 'view2'; got "
                f"{keys}."
            )
        view1, view2 = data["view1"], data["view2"]
        for name, view in (("view1", view1), ("view2", view2)):
            dtype = keras.backend.standardize_dtype(view.dtype)
            if dtype not in _FLOAT_DTYPES:
                raise TypeError(
                    f"BYOL {name} must be float images in [0, 1]; got dtype {dtype}. Convert "
                    "with tf.image.convert_image_dtype(images, tf.float32) or images / 255."
                )
            if len(view.shape) != 4:
                raise ValueError(
                    f"BYOL {name} must have shape (B, H, W, C); got {tuple(view.shape)}."
                )
        shape1, shape2 = tuple(view1.shape[1:]), tuple(view2.shape[1:])
        if any(a is not None and b is not None and a != b for a, b in zip(shape1, shape2)):
            raise ValueError(
                f"BYOL views must have the same shape; got view1 {shape1} and view2 {shape2}. "
                "Resize both views to one image_size."
            )
        expected = self.image_shape
        if any(e is not None and s is not None and e != s for e, s in zip(expected, shape1)):
            raise ValueError(
                f"BYOL views of shape {shape1} do not fit the encoder's input {expected}."
            )
        return view1, view2

    def batch_labels(self, data):
        """The batch's "label" (B,) when the model has a probe, else None."""
        if self.probe is None or not isinstance(data, dict):
            return None
        return data.get("label")

    # --------------------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """Online encoder features (B, D) of images, or of the dict's "view1"."""
        if isinstance(inputs, dict):
            inputs = inputs["view1"] if "view1" in inputs else inputs["images"]
        return self.encoder(inputs, training=training)

    def online_forward(self, view, training=True):
        """(features y, projection z, prediction p): (B, D), (B, d), (B, d) online."""
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

        outputs: "byol_loss" (scalar), "projection" (online z of view 1) and, with a probe
        and labels, "probe_loss", "probe_logits", "labels", "label_mask".
        """
        (features1, z1, p1, p2), (target_z1, target_z2) = self.forward_both_views(view1, view2)
        loss = byol_loss(p1, p2, target_z1, target_z2)
        outputs = {"byol_loss": loss, "projection": z1}
        if self.probe is None or labels is None:
            return loss, outputs
        # The probe reads the online features through a stop-gradient: it learns from
        # BYOL's representation without changing it.
        logits = ops.cast(self.probe(ops.stop_gradient(features1)), "float32")
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

    def update_metrics(self, outputs):
        """Updates loss, collapse monitor (std of normalized projections) and probe metrics."""
        projection = ops.cast(outputs["projection"], "float32")
        normalized = projection / ops.maximum(ops.norm(projection, axis=-1, keepdims=True), 1e-12)
        self.loss_tracker.update_state(outputs["byol_loss"])
        self.projection_std_tracker.update_state(ops.mean(ops.std(normalized, axis=0)))
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

    def make_train_function(self, force=False):
        if (
            keras.backend.backend() == "tensorflow"
            and self.steps_per_execution > 1
            and self.distribute_strategy.num_replicas_in_sync > 1
        ):
            from keras_byol.backends import tensorflow as backend_step

            if self.train_function is None or force:
                self.train_function = backend_step.make_distributed_multi_step_function(self)
            return self.train_function
        return super().make_train_function(force)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer (3.15) builds a model under a strategy by all-reducing a first
        # batch with strategy.reduce, which MultiWorkerMirroredStrategy cannot do on a dict
        # of per-replica views ("Attempt to convert a value ({'view1': PerReplica..."). BYOL
        # builds its networks in __init__, so only the optimizer is left to build and no
        # batch is needed.
        if iterator is not None and all(layer.built for layer in self._flatten_layers()):
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _check_compiled_for_byol(self):
        # compile() itself is not overridden: Keras then skips compile_from_config on
        # load and the optimizer state (and with it the τ position) would be lost.
        if getattr(self, "optimizer", None) is None:
            raise ValueError("Call model.compile(optimizer=...) before fit.")
        if getattr(self.optimizer, "gradient_accumulation_steps", None):
            raise ValueError(
                "BYOL does not support the optimizer's gradient_accumulation_steps: the target "
                "update and its τ schedule follow applied optimizer steps. Use a larger batch."
            )
        if getattr(self, "loss", None) is not None:
            raise ValueError("BYOL computes its own loss; do not pass loss= to compile.")

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, adding `callbacks.TargetUpdate()` when none is given."""
        from keras_byol.callbacks import TargetUpdate

        self._check_compiled_for_byol()
        arguments = _bind_fit_arguments(args, kwargs)
        callbacks = list(arguments.get("callbacks") or [])
        if not any(isinstance(callback, TargetUpdate) for callback in callbacks):
            callbacks.append(TargetUpdate())
        arguments["callbacks"] = callbacks
        if hasattr(arguments.get("x"), "element_spec"):
            # A tf.data input is shuffled by its pipeline; Keras would warn that shuffle=True
            # (its default) is ignored.
            arguments.setdefault("shuffle", False)
        return super().fit(**arguments)

    # --------------------------------------------------------------------- serialization
    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "projection_dim": self.projection_dim,
            "hidden_dim": self.hidden_dim,
            "predictor_hidden_dim": self.predictor_hidden_dim,
            "synchronized_batchnorm": self.synchronized_batchnorm,
            "concat_views": self.concat_views,
            "num_classes": self.num_classes,
            "augmenter": (
                None
                if self.augmenter is None
                else keras.saving.serialize_keras_object(self.augmenter)
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("encoder", "augmenter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)

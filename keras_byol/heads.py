"""The projector and predictor MLPs: Dense → normalization (BatchNorm) → ReLU → Dense."""

import keras
from keras import layers

from keras_byol.normalization import FusedBatchNormalization

# The hidden layer's normalization choices; all but "batch" read no batch statistics.
HEAD_NORMS = ("batch", "layer", "group", "none")
# The Dense layers' initializations, by name (`head_initializers`).
HEAD_INITS = ("truncated_normal", "haiku", "pytorch")
# The library's and the job's default: the best measured on small images (docs/quality.md);
# the presets that reproduce the official recipe set "haiku" explicitly.
DEFAULT_HEAD_INIT = "pytorch"
# The standard deviation of a unit normal truncated at ±2 (what Haiku's TruncatedNormal draws).
_TRUNCATED_STD = 0.87962566103423978


def head_initializers(name, fan_in):
    """(kernel, bias) initializers of a head's Dense layer with `fan_in` inputs.

    - "truncated_normal": a normal truncated at ±2σ,
      scaled so that its standard deviation is 1/√fan_in; bias 0.
    - "haiku" (the official code's `hk.Linear`): `TruncatedNormal(stddev=1/√fan_in)`, which
      Haiku does not rescale after truncation (standard deviation 0.88/√fan_in); bias 0.
    - "pytorch" (`torch.nn.Linear`'s, `DEFAULT_HEAD_INIT`): kernel and bias uniform in
      ±1/√fan_in, the best measured on small images.
    """
    if name not in HEAD_INITS:
        raise ValueError(f"head init must be one of {HEAD_INITS}; got {name!r}.")
    if name == "pytorch":
        bound = 1.0 / fan_in**0.5
        kernel = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")
        return kernel, keras.initializers.RandomUniform(-bound, bound)
    scale = 1.0 if name == "truncated_normal" else _TRUNCATED_STD**2
    kernel = keras.initializers.VarianceScaling(scale, "fan_in", "truncated_normal")
    return kernel, keras.initializers.Zeros()


@keras.saving.register_keras_serializable(package="keras_byol")
class MLPHead(keras.layers.Layer):
    """BYOL's projector g and predictor q: Dense(hidden) → BN → ReLU → Dense(output).

    The output is not batch-normalized (as in the paper). BatchNorm uses momentum 0.9 and
    ε 1e-5, like the encoder.

    Args:
        hidden_dim: width of the hidden layer (4096 in the paper).
        output_dim: output width (256 in the paper).
        synchronized_batchnorm: normalize with the global batch's statistics whenever
            several `tf.distribute` replicas train (the recipe's setting; one device keeps
            the fused kernel). False: each replica normalizes its own slice.
        norm: the hidden layer's normalization: "batch" (the paper's), or one that reads
            no batch statistics: "layer" (LayerNorm over the hidden units), "group"
            (GroupNorm, `GROUPS` groups of hidden units; hidden_dim a multiple of
            `GROUPS`, at least 2 × `GROUPS`), "none".
        output_bias: whether the output Dense has a bias. The official code's has none
            (`pretrained.load_official` builds its heads with False).
        init: the Dense layers' initialization, one of `HEAD_INITS` (`head_initializers`).
        kernel_initializer, bias_initializer: Keras initializers for both Dense layers,
            instead of `init`'s.

    Input shape (B, D_in) → output shape (B, output_dim).

    Example:
        >>> projector = MLPHead(4096, 256)
        >>> projector(np.zeros((2, 512), "float32")).shape
        (2, 256)
    """

    GROUPS = 32

    def __init__(
        self,
        hidden_dim,
        output_dim,
        synchronized_batchnorm=True,
        norm="batch",
        output_bias=True,
        init=DEFAULT_HEAD_INIT,
        kernel_initializer=None,
        bias_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_bias = bool(output_bias)
        self.init = init
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # One kernel initializer for both layers (it scales by each kernel's fan-in); the
        # PyTorch bias, which needs the fan-in, is made in `build`.
        kernel, bias = head_initializers(init, 1)
        dense = dict(
            kernel_initializer=self.kernel_initializer or kernel,
            bias_initializer=self.bias_initializer or bias,
        )
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.synchronized_batchnorm = bool(synchronized_batchnorm)
        if norm not in HEAD_NORMS:
            raise ValueError(f"MLPHead norm must be one of {HEAD_NORMS}; got {norm!r}.")
        self.norm_kind = norm
        self.hidden = layers.Dense(self.hidden_dim, name="hidden", **dense)
        if norm == "batch":
            self.norm = FusedBatchNormalization(
                momentum=0.9, epsilon=1e-5, synchronized=self.synchronized_batchnorm, name="norm"
            )
        elif norm == "layer":
            self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm")
        elif norm == "group":
            # A group of one unit is normalized to 0: the head's output would not depend
            # on its input, and nothing before it would learn.
            if self.hidden_dim % self.GROUPS or self.hidden_dim < 2 * self.GROUPS:
                raise ValueError(
                    f'MLPHead(norm="group") splits the {self.hidden_dim} hidden units into '
                    f"{self.GROUPS} groups of at least 2 (a group of one unit normalizes to a "
                    f"constant): make hidden_dim a multiple of {self.GROUPS}, at least "
                    f"{2 * self.GROUPS}."
                )
            self.norm = layers.GroupNormalization(self.GROUPS, epsilon=1e-5, name="norm")
        else:
            self.norm = None
        self.out = layers.Dense(self.output_dim, use_bias=self.output_bias, name="output", **dense)

    def build(self, input_shape):
        if self.init == "pytorch" and self.bias_initializer is None:
            for dense, fan_in in ((self.hidden, input_shape[-1]), (self.out, self.hidden_dim)):
                dense.bias_initializer = head_initializers("pytorch", fan_in)[1]
        self.hidden.build(input_shape)
        if self.norm is not None:
            self.norm.build((input_shape[0], self.hidden_dim))
        self.out.build((input_shape[0], self.hidden_dim))

    def call(self, inputs, training=None):
        x = self.hidden(inputs)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.out(keras.ops.relu(x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "output_dim": self.output_dim,
            "synchronized_batchnorm": self.synchronized_batchnorm,
            "norm": self.norm_kind,
            "output_bias": self.output_bias,
            "init": self.init,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }

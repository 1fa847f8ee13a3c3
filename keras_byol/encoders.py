"""ResNet v1 encoders (18–200, width ×k, small-image stem; BatchNorm, GroupNorm + WS or none)."""

import keras
from keras import layers, ops

from keras_byol.normalization import FusedBatchNormalization

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name → (block kind, blocks per stage); stages have 64, 128, 256, 512 (× width) channels.
ARCHITECTURES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
    "resnet200": ("bottleneck", (3, 24, 36, 3)),
}
# The encoder's normalization choices; "batch" is the only one that reads batch statistics.
ENCODER_NORMS = ("batch", "group_ws", "none")


def _fan_in_truncated_normal():
    """A normal truncated at ±2σ with standard deviation 1/√fan_in after truncation. Haiku's
    default (the official code's) is `TruncatedNormal(stddev=1/√fan_in)`, which it does not
    rescale after truncation: its standard deviation is 0.88/√fan_in (BatchNorm follows
    every convolution, so the scale changes no output; `heads.head_initializers("haiku")`
    is that initializer for the heads)."""
    return keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


@keras.saving.register_keras_serializable(package="keras_byol")
class WSConv2D(layers.Conv2D):
    """Conv2D with Weight Standardization: each output filter's kernel is standardized to
    zero mean and unit variance over (kh, kw, c_in) before the convolution (Qiao et al.,
    2019), as in "BYOL works even without batch statistics" (arXiv 2010.10241)."""

    def __init__(self, *args, ws_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.ws_epsilon = ws_epsilon

    def convolution_op(self, inputs, kernel):
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) * ops.rsqrt(var + self.ws_epsilon)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "ws_epsilon": self.ws_epsilon}


@keras.saving.register_keras_serializable(package="keras_byol")
class ImageNormalization(layers.Layer):
    """(x − mean) / std per channel, for images in [0, 1] (pure keras.ops: any backend).

    Args:
        mean: per-channel means, default ImageNet's (0.485, 0.456, 0.406).
        std: per-channel standard deviations, default ImageNet's (0.229, 0.224, 0.225).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def call(self, images):
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (ops.cast(images, self.compute_dtype) - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class _Builder:
    """Holds the per-encoder choices (norm kind, groups) while the functional graph is built."""

    def __init__(self, norm, groups, zero_init_residual, synchronized):
        self.norm = norm
        self.groups = groups
        self.zero_init_residual = zero_init_residual
        self.synchronized = synchronized

    def conv(self, x, filters, kernel_size, strides, name):
        conv_class = WSConv2D if self.norm == "group_ws" else layers.Conv2D
        return conv_class(
            filters,
            kernel_size,
            strides=strides,
            padding="same",  # TF/Haiku 'SAME' (extra pad bottom/right), as the official code
            use_bias=self.norm == "none",  # a normalization's β is the bias otherwise
            kernel_initializer=_fan_in_truncated_normal(),
            name=name,
        )(x)

    def normalize(self, x, name, zero_gamma=False):
        if self.norm == "none":
            return x
        gamma_init = "zeros" if zero_gamma and self.zero_init_residual else "ones"
        if self.norm == "batch":
            return FusedBatchNormalization(
                momentum=0.9,
                epsilon=1e-5,
                gamma_initializer=gamma_init,
                synchronized=self.synchronized,
                name=name,
            )(x)
        channels = x.shape[-1]
        groups = min(self.groups, channels)
        if x.shape[1] == x.shape[2] == 1 and channels == groups:
            # One value per group is normalized to 0: the layer's output would be constant.
            raise ValueError(
                f"{name}: GroupNorm of {channels} channels in {groups} groups at 1×1 pixels "
                "normalizes every value to a constant; use larger images, fewer groups or "
                "a wider encoder."
            )
        return layers.GroupNormalization(
            groups=groups,
            epsilon=1e-5,
            gamma_initializer=gamma_init,
            name=name,
        )(x)

    def conv_norm(self, x, filters, kernel_size, strides, name, relu=True, zero_gamma=False):
        x = self.conv(x, filters, kernel_size, strides, name=f"{name}_conv")
        x = self.normalize(x, name=f"{name}_norm", zero_gamma=zero_gamma)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def block(self, x, kind, filters, strides, name):
        """A post-activation (v1) residual block; bottlenecks stride in the 3×3 conv."""
        out_channels = filters * (4 if kind == "bottleneck" else 1)
        shortcut = x
        if strides != 1 or x.shape[-1] != out_channels:
            shortcut = self.conv_norm(x, out_channels, 1, strides, f"{name}_proj", relu=False)
        if kind == "basic":
            x = self.conv_norm(x, filters, 3, strides, f"{name}_a")
            x = self.conv_norm(x, filters, 3, 1, f"{name}_b", relu=False, zero_gamma=True)
        else:
            x = self.conv_norm(x, filters, 1, 1, f"{name}_a")
            x = self.conv_norm(x, filters, 3, strides, f"{name}_b")
            x = self.conv_norm(x, out_channels, 1, 1, f"{name}_c", relu=False, zero_gamma=True)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
        return layers.ReLU(name=f"{name}_out")(x)


def resnet(
    name,
    input_shape,
    small_images=False,
    width=1,
    norm="batch",
    groups=32,
    zero_init_residual=None,
    synchronized_batchnorm=True,
):
    """A ResNet v1 encoder mapping images in [0, 1] to pooled features.

    Args:
        name: one of resnet18, resnet34, resnet50, resnet101, resnet152, resnet200.
        input_shape: (H, W, 3) of the float images in [0, 1] (H, W may be None).
        small_images: CIFAR-style stem (3×3 stride-1 conv, no max-pool) for ~32 px images;
            otherwise the ImageNet stem (7×7 stride-2 conv, 3×3 stride-2 max-pool).
        width: channel multiplier (1, 2, 4 in the paper; fractions such as 0.25 give small
            encoders for CPU runs, as long as 64·width is a whole number).
        norm: "batch" (BatchNorm, momentum 0.9, ε 1e-5), "group_ws" (GroupNorm +
            Weight Standardization, the BYOL-without-batch-statistics variant; reads no
            batch statistics) or "none" (no normalization layer; the convolutions get
            biases instead: the "no normalization" row of the BatchNorm ablation).
        groups: GroupNorm groups (capped at the channel count); used with "group_ws".
        zero_init_residual: start the last normalization γ of every residual branch at 0,
            as Haiku's ResNet v1 (used by the official code) does. None (default): True
            for "batch" and "group_ws", False for "none", which has no γ (True is refused).
        synchronized_batchnorm: normalize with the global batch's statistics whenever
            several `tf.distribute` replicas train (the recipe's setting; one device keeps
            the fused kernel). False: each replica normalizes its own slice.

    Returns:
        A functional `keras.Model` named `name`: (B, H, W, 3) float in [0, 1] →
        (B, D) with D = 512·width (resnet18/34) or 2048·width (resnet50+). ImageNet
        mean/std normalization is its first layer.

    Example:
        >>> encoder = resnet("resnet18", input_shape=(32, 32, 3), small_images=True)
        >>> encoder(np.zeros((2, 32, 32, 3), "float32")).shape
        (2, 512)
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown encoder {name!r}; choose one of {sorted(ARCHITECTURES)}.")
    if norm not in ENCODER_NORMS:
        raise ValueError(f"norm must be one of {ENCODER_NORMS}, got {norm!r}.")
    if zero_init_residual is None:
        zero_init_residual = norm != "none"
    elif zero_init_residual and norm == "none":
        raise ValueError(
            'zero_init_residual=True zeroes a normalization γ, and norm="none" has none: '
            "pass zero_init_residual=False (or None) with it."
        )
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"ResNet encoders take RGB images of shape (H, W, 3); got input_shape={input_shape}. "
            "Repeat grayscale images to 3 channels first."
        )
    base_channels = 64 * width
    if width <= 0 or base_channels != int(base_channels):
        raise ValueError(
            f"width must be positive with 64·width a whole number of channels; got {width}."
        )
    base_channels = int(base_channels)
    kind, blocks_per_stage = ARCHITECTURES[name]
    builder = _Builder(norm, groups, zero_init_residual, synchronized_batchnorm)

    images = keras.Input(shape=input_shape, name="images")
    x = ImageNormalization(name="imagenet_normalization")(images)
    if small_images:
        x = builder.conv_norm(x, base_channels, 3, 1, "stem")
    else:
        x = builder.conv_norm(x, base_channels, 7, 2, "stem")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, num_blocks in enumerate(blocks_per_stage):
        for block in range(num_blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = builder.block(
                x,
                kind,
                base_channels * 2**stage,
                strides,
                name=f"stage{stage + 1}_block{block + 1}",
            )
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, features, name=name)

"""What BYOL trains on: the encoder's shape contract and the batch checks, as plain functions."""

import keras
from keras import ops

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Float views above this are not in [0, 1] (nor standardized): [0, 255] pixels, most likely.
MAX_PIXEL_VALUE = 8.0
INPUT_PROBLEMS = {
    "input_nonfinite_batches": "held NaN or inf values",
    "input_above_8_batches": (
        "held values above 8: BYOL takes float views in [0, 1] and these look like [0, 255] "
        "pixels (divide by 255, or use tf.image.convert_image_dtype)"
    ),
    "input_single_image_batches": (
        "held fewer than 2 images: BatchNorm statistics of one image are degenerate, the loss "
        "is 0 and nothing is learned (batch with drop_remainder=True, or a larger batch)"
    ),
}


# The message of the in-step check that stops a one-image batch before the step runs.
SINGLE_IMAGE_REFUSAL = f"BYOL batches {INPUT_PROBLEMS['input_single_image_batches']}."


def refused_before_the_step(error, step):
    """A ValueError for an error raised by the in-step check of the batch size, or None.

    `step`: a function giving the optimizer step (read only for that error)."""
    if SINGLE_IMAGE_REFUSAL not in str(error):
        return None
    step = step()
    return ValueError(
        f"Bad input to BYOL at optimizer step {step}: a batch "
        f"{INPUT_PROBLEMS['input_single_image_batches']}. It was refused before the step: "
        "nothing of it was applied."
    )


def encoder_input_shape(encoder):
    """(H, W, C) of a functional/Sequential encoder, or a ValueError saying what to do."""
    inputs = getattr(encoder, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "BYOL needs an encoder with one defined image input, such as a functional "
            "keras.Model (e.g. keras_byol.encoders.resnet(...)); got "
            f"{type(encoder).__name__} with inputs={inputs!r}."
        )
    return tuple(inputs[0].shape[1:])


def pooled_feature_dim(encoder):
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


def _as_dict(data):
    """The batch dict; train_on_batch and array inputs arrive as (x,) or (x, None, None)."""
    if not isinstance(data, (tuple, list)):
        return data
    if data and isinstance(data[0], dict) and all(d is None for d in data[1:]):
        return data[0]
    raise TypeError(
        "BYOL.fit expects batches that are dicts {'view1': images, 'view2': images} "
        f"(float32, (B, H, W, 3), values in [0, 1]); got a {type(data).__name__} of "
        f"{len(data)} elements. Map your dataset, e.g. "
        "ds.map(lambda v1, v2: {'view1': v1, 'view2': v2})."
    )


def _check_view(name, view):
    dtype = keras.backend.standardize_dtype(view.dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"BYOL {name} must be float images in [0, 1]; got dtype {dtype}. Convert "
            "with tf.image.convert_image_dtype(images, tf.float32) or images / 255."
        )
    if len(view.shape) != 4:
        raise ValueError(f"BYOL {name} must have shape (B, H, W, C); got {tuple(view.shape)}.")


def _differ(shape_a, shape_b):
    return any(a is not None and b is not None and a != b for a, b in zip(shape_a, shape_b))


def unpack_views(data, image_shape, augmenter=None):
    """(view1, view2) of a batch, or an error saying what the dataset should yield.

    Args:
        data: {"view1", "view2": (B, H, W, C) float in [0, 1]}, or {"images": …} when
            `augmenter` makes the views; an extra "label" is ignored.
        image_shape: the encoder's (H, W, C); None entries match any size.
        augmenter: a `TwoViewAugmenter` for {"images": …} batches, or None.
    """
    data = _as_dict(data)
    if isinstance(data, dict) and "images" in data and "view1" not in data:
        if augmenter is None:
            raise TypeError(
                "This batch holds raw 'images' but the model has no augmenter: build "
                "BYOL(..., augmenter=keras_byol.views.TwoViewAugmenter(image_size=...)) "
                'or make the views in tf.data (pretrain_dataset(..., augment_on="cpu")).'
            )
        data = augmenter(data["images"])
    if not isinstance(data, dict) or "view1" not in data or "view2" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise TypeError(
            f"BYOL.fit expects batches that are dicts with keys 'view1' and 'view2'; got {keys}."
        )
    view1, view2 = data["view1"], data["view2"]
    _check_view("view1", view1)
    _check_view("view2", view2)
    shape1, shape2 = tuple(view1.shape[1:]), tuple(view2.shape[1:])
    if _differ(shape1, shape2):
        raise ValueError(
            f"BYOL views must have the same shape; got view1 {shape1} and view2 {shape2}. "
            "Resize both views to one image_size."
        )
    if _differ(image_shape, shape1):
        raise ValueError(
            f"BYOL views of shape {shape1} do not fit the encoder's input {image_shape}."
        )
    return view1, view2


def input_problem_flags(view1, view2, replicas=1):
    """{name in INPUT_PROBLEMS: 1.0 if this batch has the problem else 0.0}, computed inside
    the compiled step (any backend), for the metrics `callbacks.InputCheck` reads."""
    nonfinite = ops.logical_not(
        ops.logical_and(ops.all(ops.isfinite(view1)), ops.all(ops.isfinite(view2)))
    )
    largest = ops.maximum(ops.max(view1), ops.max(view2))
    images = ops.shape(view1)[0] * replicas
    flags = (nonfinite, largest > MAX_PIXEL_VALUE, images < 2)
    return {name: ops.cast(flag, "float32") for name, flag in zip(INPUT_PROBLEMS, flags)}


def replicas_per_step(model):
    """Replicas that each see a slice of the step's batch (1 off TensorFlow: a JAX step
    sees the global batch)."""
    strategy = getattr(model, "distribute_strategy", None)
    return 1 if strategy is None else strategy.num_replicas_in_sync


def check_batch_size(view, replicas=1):
    """Raises at trace time when the batch size is known and below 2."""
    if view.shape[0] is not None and view.shape[0] * replicas < 2:
        raise ValueError(SINGLE_IMAGE_REFUSAL)


def batch_labels(data):
    """The batch's "label" (B,), or None when it has none."""
    data = data[0] if isinstance(data, (tuple, list)) and data else data
    return data.get("label") if isinstance(data, dict) else None

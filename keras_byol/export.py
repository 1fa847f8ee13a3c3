"""Export of the online encoder as a TensorFlow SavedModel with `serve` signatures."""

import json
import os

import keras
import tensorflow as tf

from keras_byol.batches import MAX_PIXEL_VALUE
from keras_byol.callbacks import trained_steps

# Written beside the SavedModel's own files: which optimizer step the encoder holds.
EXPORT_INFO = "keras_byol.json"


def export_encoder(model, path, step=None):
    """Writes the ONLINE encoder of `model` (a BYOL or an encoder) as a SavedModel.

    Endpoints (images of the encoder's input size):
      - `serve` (the default signature): float32 images in [0, 1] → (B, D) embeddings,
        any batch size, 0 included;
      - `serve_uint8`: uint8 images in [0, 255] → (B, D) embeddings, any batch size;
      - `embed`: the encoder alone (float32 images, batch ≥ 1, no input checks).
    The encoder runs in inference mode (BatchNorm on its moving statistics), without
    gradients (fine-tune the .keras model instead). The result
    loads with plain `tf.saved_model.load(path)`; keras_byol is not needed to use it.
    `serve` refuses (InvalidArgumentError naming the fix) images with NaN/inf or values
    above 8 — [0, 255] pixels sent to it instead of `serve_uint8`. NumPy inputs are
    converted to the endpoint's dtype; TensorFlow tensors of another dtype are refused by
    TensorFlow's signature check (cast them: `tf.cast(images, tf.float32)`).

    The same SavedModel is written on both backends. On JAX the encoder's forward pass
    is converted with `jax2tf` (Keras' export: an XLA module inside the TensorFlow graph)
    and the input checks around it are TensorFlow ops, so it serves with TensorFlow alone.

    The folder also holds `keras_byol.json`: {"step": the optimizer step of the weights
    (`step`, else the BYOL model's applied steps, else null)}.

    Args:
        model: a `keras_byol.BYOL` (its `.encoder` is exported) or an encoder model.
        path: output directory.
        step: the optimizer step the weights come from, when `model` is an encoder copy.
    """
    encoder = getattr(model, "encoder", model)
    step = trained_steps(model) if step is None else step
    height, width, channels = tuple(encoder.inputs[0].shape[1:])
    features = int(encoder.outputs[0].shape[-1])
    float_images = tf.TensorSpec((None, height, width, channels), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    # The encoder itself, a backend function (jax2tf-converted on JAX); the endpoints
    # below wrap it in TensorFlow ops.
    # (No gradients on JAX: the export serves inference, and jax2tf's custom gradients
    # make TensorFlow warn on every load.)
    without_gradients = (
        {"jax2tf_kwargs": {"with_gradient": False}} if keras.backend.backend() == "jax" else {}
    )
    forward = archive.add_endpoint(
        "embed",
        lambda images: encoder(images, training=False),
        input_signature=[float_images],
        **without_gradients,
    )

    def embed(images):
        # An empty batch: TensorFlow's inference BatchNorm fails on 0 rows.
        return tf.cond(
            tf.shape(images)[0] > 0,
            # Inference only: no gradient flows through the endpoints (TensorFlow's tape
            # would otherwise trace into the jax2tf module, which has none).
            lambda: tf.stop_gradient(tf.cast(forward(images), tf.float32)),
            lambda: tf.zeros((0, features), tf.float32),
        )

    @tf.function(input_signature=[float_images], autograph=False)
    def serve(images):
        largest = tf.reduce_max(images)  # −inf for an empty batch
        checks = [
            tf.debugging.assert_all_finite(images, "serve: the images hold NaN or inf."),
            tf.debugging.assert_less_equal(
                largest,
                MAX_PIXEL_VALUE,
                message=f"serve takes float images in [0, 1]; these hold values above "
                f"{MAX_PIXEL_VALUE:g}, like [0, 255] pixels: divide by 255 or call serve_uint8.",
            ),
        ]
        with tf.control_dependencies(checks):
            return embed(tf.identity(images))

    @tf.function(
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")],
        autograph=False,
    )
    def serve_uint8(images):
        return embed(tf.cast(images, tf.float32) / 255.0)

    serve.get_concrete_function()  # Keras adds traced tf.functions as they are
    serve_uint8.get_concrete_function()
    for name, function in (("serve", serve), ("serve_uint8", serve_uint8)):
        archive.add_endpoint(name, function)
    archive.add_endpoint("serving_default", serve)  # else the first endpoint, `embed`
    archive.write_out(str(path), verbose=False)
    with open(os.path.join(path, EXPORT_INFO), "w") as f:
        json.dump({"step": step}, f)
    return path


def exported_step(path):
    """The optimizer step recorded with an export (`export_encoder`), or None."""
    try:
        with open(os.path.join(path, EXPORT_INFO)) as f:
            return json.load(f).get("step")
    except (OSError, ValueError):
        return None

"""Export of the online encoder as a TensorFlow SavedModel with `serve` signatures."""

import keras
import tensorflow as tf

from keras_byol.batches import MAX_PIXEL_VALUE


def export_encoder(model, path):
    """Writes the ONLINE encoder of `model` (a BYOL or an encoder) as a SavedModel.

    Endpoints (any batch size, 0 included, images of the encoder's input size):
      - `serve` (the default signature): float32 images in [0, 1] → (B, D) embeddings;
      - `serve_uint8`: uint8 images in [0, 255] → (B, D) embeddings.
    The encoder runs in inference mode (BatchNorm on its moving statistics). The result
    loads with plain `tf.saved_model.load(path)`; keras_byol is not needed to use it.
    `serve` refuses (InvalidArgumentError naming the fix) images with NaN/inf or values
    above 8 — [0, 255] pixels sent to it instead of `serve_uint8`. NumPy inputs are
    converted to the endpoint's dtype; TensorFlow tensors of another dtype are refused by
    TensorFlow's signature check (cast them: `tf.cast(images, tf.float32)`).

    Args:
        model: a `keras_byol.BYOL` (its `.encoder` is exported) or an encoder model.
        path: output directory.
    """
    encoder = getattr(model, "encoder", model)
    height, width, channels = tuple(encoder.inputs[0].shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(encoder)

    features = int(encoder.outputs[0].shape[-1])

    def embed(images):
        # An empty batch: TensorFlow's inference BatchNorm fails on 0 rows.
        return tf.cond(
            tf.shape(images)[0] > 0,
            lambda: encoder(images, training=False),
            lambda: tf.zeros((0, features), encoder.outputs[0].dtype),
        )

    def embed_checked(images):
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

    archive.add_endpoint(
        name="serve",
        fn=embed_checked,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_uint8",
        fn=lambda images: embed(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")],
    )
    archive.write_out(str(path), verbose=False)
    return path

"""Export of the online encoder as a TensorFlow SavedModel with `serve` signatures."""

import keras
import tensorflow as tf


def export_encoder(model, path):
    """Writes the ONLINE encoder of `model` (a BYOL or an encoder) as a SavedModel.

    Endpoints (any batch size, images of the encoder's input size):
      - `serve` (the default signature): float32 images in [0, 1] → (B, D) embeddings;
      - `serve_uint8`: uint8 images in [0, 255] → (B, D) embeddings.
    The encoder runs in inference mode (BatchNorm on its moving statistics). The result
    loads with plain `tf.saved_model.load(path)`; keras_byol is not needed to use it.

    Args:
        model: a `keras_byol.BYOL` (its `.encoder` is exported) or an encoder model.
        path: output directory.
    """
    encoder = getattr(model, "encoder", model)
    height, width, channels = tuple(encoder.inputs[0].shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(encoder)

    def embed(images):
        return encoder(images, training=False)

    archive.add_endpoint(
        name="serve",
        fn=embed,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_uint8",
        fn=lambda images: embed(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")],
    )
    archive.write_out(str(path), verbose=False)
    return path

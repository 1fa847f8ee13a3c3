"""The few lines of the BYOL train step that differ per Keras backend."""

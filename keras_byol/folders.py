"""Image folders listed without opening a file, and without TensorFlow (the JAX input
`image_batches` lists folders too): `ImageFolder`, `list_image_folder`."""

import dataclasses
import logging
import os
import time

import numpy as np

logger = logging.getLogger("keras_byol")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Image types a folder may hold that TensorFlow does not decode: named when skipped.
UNSUPPORTED_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder:
    """A listed image folder: what every pipeline of a run reads, listed once.

    Attributes:
        directory: the folder.
        paths: (N,) bytes file names (need not be valid UTF-8), in listing order.
        labels: (N,) int64 positions in `class_names`, or −1 when images lie at the top.
        class_names: first-level subfolder names ([] when unlabelled).
    """

    directory: str
    paths: np.ndarray
    labels: np.ndarray
    class_names: list


def list_image_folder(directory, class_names=None):
    """The `ImageFolder` of the image files under `directory` (names only: none is opened).

    Symbolic links to files and folders are followed; a linked folder met a second time
    (a loop, or two links to one folder) is listed once, with a warning. With `class_names`
    (another folder's classes, e.g. the training folder's for a test folder), labels are
    positions in that list: a missing class is fine, a class it lacks is an error. An
    `ImageFolder` passes through (listed again only to take other `class_names`).

    Raises:
        ValueError: no such folder, no image file, or a class not in `class_names`.
    """
    if isinstance(directory, ImageFolder):
        if class_names is None or list(class_names) == directory.class_names:
            return directory
        directory = directory.directory  # labelled again, with `class_names`
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"Image folder {directory!r} does not exist or is not a directory.")
    started = time.perf_counter()
    paths, unsupported, repeated = [], [], []
    seen = {os.path.realpath(directory)}
    for root, dirs, files in os.walk(directory, followlinks=True):
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            (repeated if real in seen else kept).append(os.path.join(root, name))
            seen.add(real)
        dirs[:] = [os.path.basename(d) for d in kept]
        for name in sorted(files):
            extension = os.path.splitext(name)[1].lower()
            if extension in IMAGE_EXTENSIONS:
                paths.append(os.path.join(root, name))
            elif extension in UNSUPPORTED_IMAGE_EXTENSIONS:
                unsupported.append(os.path.join(root, name))
    if repeated:
        logger.warning(
            "Listed once: %d linked folder(s) that lead to a folder already listed (a loop or "
            "a second link): %s",
            len(repeated),
            "; ".join(map(_shown, repeated)),
        )
    if unsupported:
        logger.warning(
            "Skipped %d image file(s) of a type TensorFlow cannot decode (%s); convert them "
            "to JPEG or PNG to train on them: %s",
            len(unsupported),
            ", ".join(sorted({os.path.splitext(p)[1].lower() for p in unsupported})),
            "; ".join(map(_shown, unsupported[:20])) + (" …" if len(unsupported) > 20 else ""),
        )
    if not paths:
        raise ValueError(
            f"Image folder {directory!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            + (f"; {len(unsupported)} of unsupported types were skipped." if unsupported else ".")
        )
    prefix = len(os.path.join(directory, ""))
    top_dirs = [p[prefix:].split(os.sep)[0] if os.sep in p[prefix:] else "." for p in paths]
    labelled = all(d != "." for d in top_dirs)
    if class_names is not None:
        extra = sorted(set(top_dirs) - set(class_names)) if labelled else ["(images at the top)"]
        if extra:
            raise ValueError(
                f"Image folder {directory!r} has class folder(s) {extra} that the training "
                f"folder lacks (its classes: {list(class_names)}): the labels would not "
                "match. Give both folders the same class subfolders (a class may be missing "
                "here)."
            )
        class_names = list(class_names)
    elif labelled:
        class_names = sorted(set(top_dirs))
    else:
        class_names = []
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[d] for d in top_dirs] if labelled else [-1] * len(paths)
    logger.info(
        "Listed %d image files in %d class folder(s) under %s in %.1f s.",
        len(paths),
        len(class_names),
        _shown(directory),
        time.perf_counter() - started,
    )
    return ImageFolder(
        directory,
        np.asarray([os.fsencode(p) for p in paths]),
        np.asarray(labels, np.int64),
        class_names,
    )


def _shown(path):
    """`path` printable whatever its bytes (undecodable bytes as escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

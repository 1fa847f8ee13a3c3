"""The run folder: one writer at a time, files written whole or not at all, results merged.

The training job takes an advisory lock on WORKDIR/.lock for its whole run (a second job
in the same folder is refused with the first one's pid); every file it writes goes to a
temporary name first and replaces the old file only when complete, and a failed write
removes its temporary file, so a full disk never leaves a stale partial file behind.
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile

LOCK_FILE = ".lock"
TEMPORARY = ".tmp"  # marks a file or folder being written: `path + TEMPORARY[ + suffix]`


class WorkdirLock:
    """The exclusive lock of a run folder, held until `release()` or process exit."""

    def __init__(self, path, descriptor):
        self.path = path
        self._descriptor = descriptor

    def release(self):
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor releases the flock
            self._descriptor = None


def lock_workdir(path, files=()):
    """Creates `path` if needed, checks it is a writable folder and takes its lock.

    The temporaries of `files` (paths relative to `path`: what the run writes) that a run
    killed while writing left behind are removed (under the lock, so never those of a
    live run; nothing else in the folder is touched).

    Returns:
        a `WorkdirLock`.

    Raises:
        ValueError: `path` is a file, cannot be created or written, or another process
            holds its lock (the message names that process).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"The workdir {path!r} is a file, not a folder: pass a folder path (it is "
            "created when missing). Nothing was changed."
        )
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=TEMPORARY):
            pass  # the folder itself must take new files, not only an existing lock file
        descriptor = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ValueError(
            f"Cannot write in the workdir {path!r} ({error.strerror}): pass a --workdir "
            "this user can write to."
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ValueError(
            f"Another keras_byol run (pid {holder}) is using the workdir {path!r}. Wait for "
            "it to end or stop it, or pass another --workdir. Nothing was changed."
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    for name in files:
        for suffix in ("", ".keras"):
            _remove(os.path.join(path, name) + TEMPORARY + suffix)
    return WorkdirLock(path, descriptor)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def write_atomically(path, write, suffix=""):
    """`write(temporary_path)`, then the temporary replaces `path` (a file or a folder).

    On any failure the temporary is removed and `path` keeps its previous content; a
    failure of the file system (full disk, file size limit, permissions) becomes a
    ValueError that says so.
    """
    temporary = path + TEMPORARY + suffix
    try:
        write(temporary)
        if os.path.isdir(temporary) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException as error:
        _remove(temporary)
        cause = _os_error_in(error)
        if cause is None:
            raise
        kept = "keeps its previous content" if os.path.exists(path) else "was not written"
        raise ValueError(
            f"Could not write {path!r} ({cause.strerror or cause}); it {kept} and the "
            "partial file was removed. Free disk space (or fix the folder's permissions) "
            "and rerun to resume."
        ) from None


def _os_error_in(error):
    """The OSError behind `error` (itself or a cause in its chain), or None."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def write_text(path, text):
    """Writes `text` to `path` whole (see `write_atomically`)."""

    def write(temporary):
        with open(temporary, "w") as f:
            f.write(text)

    write_atomically(path, write)


def merge_json(path, key_values):
    """Merges `key_values` into the JSON object at `path` (created when missing): keys
    not in `key_values` are kept. Concurrent merges into one folder wait for each other."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        previous = {}
        if os.path.exists(path):
            with open(path) as f:
                try:
                    previous = json.load(f)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path!r} is not valid JSON ({error}); move it away so its results "
                        "are not lost, then rerun."
                    ) from None
        write_text(path, json.dumps({**previous, **key_values}, indent=2))
    finally:
        with contextlib.suppress(OSError):
            os.close(descriptor)

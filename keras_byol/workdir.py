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


# eval.json: the entries of an older encoder go under this key, by the step they measured.
EARLIER_STEPS = "earlier_steps"
# The job's own entries are flat numbers; their step is the file's top-level "step".
JOB_ENTRY_PREFIXES = ("byol_", "random_", "pretrain_seconds")


def merge_evaluation(path, entries, step, encoder):
    """Merges evaluation `entries` of the encoder at optimizer `step` into eval.json.

    Every entry says which encoder it measured: a dict entry (`python -m
    keras_byol.evaluate`'s) gets "step" and "encoder"; the job's flat numbers share the
    file's top-level "step" and "encoder". Entries of another step (None: unknown, from
    an export without a recorded step) no longer describe the encoder: they move to
    eval.json["earlier_steps"][str(their step)], so the top level describes one
    encoder. Returns the keys moved (also printed in one line).
    """
    entries = {
        key: {**value, "step": step, "encoder": encoder} if isinstance(value, dict) else value
        for key, value in entries.items()
    }
    if any(key.startswith(JOB_ENTRY_PREFIXES) for key in entries):
        entries.update(step=step, encoder=encoder)
    moved = []

    def update(previous):
        earlier = dict(previous.pop(EARLIER_STEPS, {}))
        job_step = previous.pop("step", None)
        job_encoder = previous.pop("encoder", None)
        current = {}
        for key, value in previous.items():
            measured = value.get("step") if isinstance(value, dict) else job_step
            if measured == step:
                current[key] = value
            else:
                older = earlier.setdefault(str(measured), {})
                older[key] = value
                if not isinstance(value, dict) and job_encoder is not None:
                    older.update(step=job_step, encoder=job_encoder)
                moved.append(key)
        if (
            job_step == step
            and job_encoder is not None
            and any(key.startswith(JOB_ENTRY_PREFIXES) for key in current)
        ):
            current.update(step=job_step, encoder=job_encoder)
        current.update(entries)
        if earlier:
            current[EARLIER_STEPS] = earlier
        return current

    if entries or os.path.exists(path):
        _update_json(path, update)
    if moved:
        print(
            f"{path}: {', '.join(sorted(moved))} measured the encoder of another step (this "
            f"one is at step {step}); moved under {EARLIER_STEPS!r}. Rerun python -m "
            "keras_byol.evaluate to measure this one.",
            flush=True,
        )
    return moved


def _update_json(path, update):
    """Writes update(the JSON object at `path`, or {}) to `path`; concurrent updates of
    one folder wait for each other."""
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
        write_text(path, json.dumps(update(previous), indent=2))
    finally:
        with contextlib.suppress(OSError):
            os.close(descriptor)

"""Atomic file writes: a reader sees the previous complete file or the new one, never half.

Everything hnm_d2 writes to resume from (checkpoints, ``last_checkpoint``, the mining loop's
decisions, results files) goes through :func:`atomic_open`: the data is written to a temporary
file in the same directory, flushed to disk, then renamed over the final name. A process killed
while writing leaves at most a stray temporary file, which nothing reads.
"""

import contextlib
import json
import math
import os
import tempfile

import numpy as np

__all__ = ["atomic_open", "write_json_atomically", "strict_json_value", "TEMPORARY_FILE_PATTERN"]

_PREFIX, _SUFFIX = ".tmp-", ".part"
# What a writer killed mid-write leaves behind (glob pattern, in the final file's directory).
TEMPORARY_FILE_PATTERN = f"{_PREFIX}*{_SUFFIX}"


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open ``path`` for writing so that it is replaced only when the block ends without error.

    Args:
        path (str): the final file; its directory is created when missing.
        mode (str): "w" or "wb".

    Yields:
        the temporary file object to write to.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Same directory as the final file, so that the rename is atomic.
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=_PREFIX, suffix=_SUFFIX)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise


def strict_json_value(value):
    """``value`` with numpy scalars made Python ones and non-finite floats made None, throughout.

    NaN is what COCO and the false-alarm metrics report for "cannot be computed"; written as a
    bare NaN it makes the file invalid JSON for strict readers (JavaScript, jq), so it becomes
    null. Dicts, lists and tuples are converted recursively (a tuple becomes a list, as
    ``json`` writes it anyway).
    """
    if isinstance(value, dict):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path, data):
    """Write ``data`` as indented, strict JSON to ``path``, atomically.

    Args:
        path (str): the JSON file; its directory is created when missing.
        data: JSON-serializable data; numpy scalars are converted, and NaN and +-infinity are
            written as null (strict JSON has no such numbers).

    Raises:
        TypeError: ``data`` holds a value JSON cannot represent; nothing is written.
    """
    text = json.dumps(strict_json_value(data), indent=2, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text)

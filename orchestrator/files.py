"""Atomic file writes: a reader (or a process killed mid-write) never sees a half-written file.

Each writer writes a temporary file of its own (named by process and thread) next to the target,
flushes it to disk and renames it over the target in one step (:func:`os.replace`). Two processes
building the same cache at once each publish a whole file; the last rename wins.

Example::

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> write_atomic(p, lambda fh: fh.write(b"done")).read_bytes()
    b'done'
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a binary file handle, then publish the result as ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

"""Writing one file atomically, with the permissions the user's umask gives a new file.

``tempfile.mkstemp`` creates its file private (0600) whatever the umask, so
a file renamed into place from it would be private too; :func:`write_atomically`
gives it ``0666 & ~umask``, as ``open()`` would.  Used by the saved graph,
the ONNX export and (for folders) :mod:`qfx.render.writer`.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any, Callable

__all__ = ["umask", "write_atomically"]


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: "os.PathLike | str", write: Callable[[Any], Any]) -> None:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the whole new one, never a part; the
    temporary file is removed on any error or interruption.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

"""Writing one file atomically, with the permissions the user's umask gives a new file.

``tempfile.mkstemp`` creates its file private (0600) whatever the umask, so
a file renamed into place from it would be private too; :func:`write_atomically`
gives it ``0666 & ~umask``, as ``open()`` would.  Used by the saved graph,
the ONNX export and (for folders) :mod:`qfx.render.writer`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # numpy is imported only where an array is read
    import numpy as np

__all__ = ["umask", "write_atomically", "existing_file", "load_array"]


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


def existing_file(text: "os.PathLike | str") -> pathlib.Path:
    """``text`` as the path of an existing regular file (a command-line argument type).

    Refuses (``argparse.ArgumentTypeError``, naming the path) a missing
    path, a folder and anything that is not a regular file (``/dev/zero``,
    a pipe), whose reading would never end.
    """
    path = pathlib.Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"'{path}': no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"'{path}' is a folder; give a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"'{path}' is not a regular file (a device, pipe or socket)")
    return path


def load_array(path: "os.PathLike | str") -> "np.ndarray":
    """The array in the ``.npy`` file ``path`` (never unpickled); ``ValueError`` naming the file otherwise."""
    import numpy as np
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        problem = "it holds Python objects, which qfx never unpickles" if "pickle" in str(error) else error
        raise ValueError(f"'{path}' is not a NumPy .npy array of numbers: {problem}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise ValueError(f"'{path}' is an .npz archive; give one array saved with numpy.save (.npy)")
    return array

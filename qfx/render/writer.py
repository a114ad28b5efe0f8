"""Writing generated files to disk: all files or none, never over a directory without ``force``.

Every back end writes through here: an HLS project (marked by ``qfx.json``)
and a Verilog design (marked by ``manifest.json``).

The plan's paths are checked before anything is written: relative, no
``..``, no empty or hidden-by-trick components.  Files are written into a
temporary directory beside the target, which then replaces the target in
one rename (the old directory, with ``force``, is removed only after the new
one is complete).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Mapping

__all__ = ["write_project", "check_relative_path", "UnsafePathError", "MARKER"]

#: The file that marks a directory as a generated project, which --force may replace.
MARKER = "qfx.json"


class UnsafePathError(ValueError):
    """A path in a project plan, or a target directory, that could write outside where it should."""


def check_relative_path(path: str) -> pathlib.PurePosixPath:
    """``path`` as a relative POSIX path with no ``..``, ``.``, empty or absolute components."""
    pure = pathlib.PurePosixPath(path)
    if (not path or "\\" in path or "\x00" in path or pure.is_absolute() or path != str(pure)
            or any(part in ("", ".", "..") for part in pure.parts)):
        raise UnsafePathError(f"unsafe path {path!r} in the project plan: paths must be relative, without '..'")
    return pure


def write_project(files: Mapping[str, str], directory: "os.PathLike | str", force: bool = False,
                  marker: str = MARKER) -> pathlib.Path:
    """Write ``files`` (relative path -> text) as the directory ``directory``; returns its path.

    Refuses an existing ``directory`` unless ``force`` (then it is replaced
    as a whole, and only if it is empty or an earlier output holding the file
    ``marker``), a symbolic link, and the home or current directory or an
    ancestor of it.
    """
    target = pathlib.Path(directory)
    checked = {check_relative_path(path): text for path, text in files.items()}
    if target.is_symlink():
        raise UnsafePathError(f"'{target}' is a symbolic link; give the real directory to write into")
    if target.exists() and not force:
        raise FileExistsError(f"'{target}' exists; pass --force (force=True) to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"'{target}' exists and is not a directory; remove it or choose another -o")
    resolved, here = target.resolve(), pathlib.Path.cwd().resolve()
    if resolved == pathlib.Path.home().resolve() or resolved in (here, *here.parents):
        raise UnsafePathError(f"'{target}' is the home directory, the current directory or one of its parents; "
                              "choose a new directory for the project")
    if target.exists() and any(target.iterdir()) and not (target / marker).is_file():
        raise UnsafePathError(f"'{target}' is not empty and holds no {marker}, so qfx did not write it; "
                              "qfx does not replace it even with --force: choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes the directory private; the output should not be
    try:
        for path, text in checked.items():
            destination = staging.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text, encoding="utf-8")
        if target.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "project")
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

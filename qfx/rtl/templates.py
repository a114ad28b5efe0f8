"""The Jinja environment of the Verilog templates, and writing a rendered design atomically.

The templates live in ``hls_templates/rtl/`` and render through the HLS
back end's environment (:func:`qfx.hls.environment.environment`: strict
undefined variables, ``trim_blocks``, ``lstrip_blocks``), so both back ends
share one set of rules; template names here start with ``rtl/``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Mapping

import jinja2

__all__ = ["environment", "write_files", "MANIFEST"]

#: The file that marks a folder as a design written by ``qfx rtl`` (which ``force`` may replace).
MANIFEST = "manifest.json"


def environment() -> jinja2.Environment:
    """The shared Jinja environment (its loader's root is ``hls_templates/``)."""
    from ..hls.environment import environment as shared
    return shared()


def _is_design(folder: pathlib.Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("generator") == "qfx rtl"
    except (OSError, ValueError, AttributeError):
        return False


def write_files(files: Mapping[str, str], directory: "os.PathLike | str", force: bool = False) -> pathlib.Path:
    """Write ``files`` (relative path to text) as the folder ``directory``, all or nothing.

    Everything is written to a temporary folder beside ``directory`` first,
    then renamed into place, so a failure never leaves half a design.  An
    existing ``directory`` is replaced only with ``force``, and only if it is
    empty or an earlier design (its ``manifest.json`` says so): user files
    are never overwritten.
    """
    target = pathlib.Path(directory)
    for path in files:
        pure = pathlib.PurePosixPath(path)
        if pure.is_absolute() or any(part in ("", ".", "..") for part in pure.parts):
            raise ValueError(f"unsafe path {path!r} in a design: paths must be relative, without '..'")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target} exists and is not a folder; choose another output folder")
    if target.exists() and any(target.iterdir()):
        if not force:
            raise FileExistsError(f"{target} already exists and is not empty; choose another folder or pass "
                                  "--force to replace an earlier design")
        if not _is_design(target):
            raise FileExistsError(f"{target} is not empty and holds no design written by `qfx rtl`; qfx does not "
                                  "replace it even with --force: choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes the folder private; a design folder should not be
    try:
        for relative, text in sorted(files.items()):
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if target.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "design")
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

"""The Jinja environment of the Verilog templates, and writing a rendered file set atomically.

Templates live in ``hls_templates/rtl/`` (shipped as
``qfx._data.hls_templates``), beside the HLS back end's, and use the same
settings: ``StrictUndefined`` (a missing variable is an error, never an
empty string), ``trim_blocks`` and ``lstrip_blocks`` (block tags leave no
blank lines or indentation behind).
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import tempfile
from importlib import resources

import jinja2

__all__ = ["environment", "template_dir", "write_files"]


def template_dir() -> pathlib.Path:
    """The folder of the Verilog templates: in the installed package, else in the source tree."""
    try:
        root = pathlib.Path(str(resources.files("qfx._data.hls_templates")))
    except ModuleNotFoundError:  # an editable install made before the data packages existed
        root = pathlib.Path(__file__).resolve().parents[2] / "hls_templates"
    return root / "rtl"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment for the Verilog, cocotb and README templates."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)


def write_files(files: dict[str, str], directory: "os.PathLike | str", force: bool = False) -> pathlib.Path:
    """Write ``files`` (relative path to text) into ``directory``, all or nothing.

    Everything is written to a temporary folder beside ``directory`` first,
    then moved into place, so a failure never leaves half a design.  An
    existing non-empty ``directory`` is replaced only with ``force``.
    """
    target = pathlib.Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise FileExistsError(f"{target} already exists and is not empty; choose another folder or pass --force "
                              "to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes the folder private; the design folder should not be
    try:
        for relative, text in sorted(files.items()):
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

"""The Jinja environment of the Verilog templates, and writing a rendered design atomically.

The templates live in ``hls_templates/rtl/`` and render through the HLS
back end's environment (:func:`qfx.hls.environment.environment`: strict
undefined variables, ``trim_blocks``, ``lstrip_blocks``), so both back ends
share one set of rules; template names here start with ``rtl/``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping

import jinja2

__all__ = ["environment", "write_files", "MANIFEST"]

#: The file that marks a folder as a design written by ``qfx rtl`` (which ``force`` may replace).
MANIFEST = "manifest.json"


def environment() -> jinja2.Environment:
    """The shared Jinja environment (its loader's root is ``hls_templates/``)."""
    from ..hls.environment import environment as shared
    return shared()


def write_files(files: Mapping[str, str], directory: "os.PathLike | str", force: bool = False) -> pathlib.Path:
    """Write ``files`` (relative path to text) as the folder ``directory``, all or nothing.

    See :func:`qfx.hls.writer.write_project`: an existing ``directory`` is
    replaced only with ``force``, and only if it is empty or an earlier
    design (it holds ``manifest.json``); user files are never overwritten.
    """
    from ..hls.writer import write_project
    return write_project(files, directory, force=force, marker=MANIFEST)

"""The one Jinja2 environment every back end renders through, and its filters.

Templates live in ``hls_templates/`` (the data package
``qfx._data.hls_templates``).  The environment is strict: an undefined
variable is an error, never an empty string.  Every string from a file
passes one of the filters of :mod:`qfx.render.escape` for the language it
lands in: names the code uses are checked (``ident``, ``verilog_ident``,
``tcl_word``), text for people is cleaned (``cpp_comment``,
``verilog_comment``, ``python_text``, ``tcl_comment``, ``markdown``).
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib

import jinja2

from . import escape

__all__ = ["environment", "template_dir"]


def template_dir() -> pathlib.Path:
    """The templates: the installed data package, else ``hls_templates/`` beside the package (a source checkout)."""
    try:
        return pathlib.Path(str(importlib.resources.files("qfx._data.hls_templates")))
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent.parent / "hls_templates"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared, strict environment (``StrictUndefined``, ``trim_blocks``, ``lstrip_blocks``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update({name: getattr(escape, name) for name in escape.__all__ if callable(getattr(escape, name))})
    return env

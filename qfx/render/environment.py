"""The one Jinja2 environment every back end renders through, and its filters.

Templates live in ``hls_templates/`` (the data package
``qfx._data.hls_templates``).  The environment is strict: an undefined
variable is an error, never an empty string.  Every name that reaches C++ or
Tcl passes the ``ident`` filter, which refuses anything but a C identifier.
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib
import re

import jinja2

from ..format import FixedType

__all__ = ["environment", "template_dir", "cpp_type", "ident"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,79}$")


def template_dir() -> pathlib.Path:
    """The templates: the installed data package, else ``hls_templates/`` beside the package (a source checkout)."""
    try:
        return pathlib.Path(str(importlib.resources.files("qfx._data.hls_templates")))
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent.parent / "hls_templates"


def cpp_type(t: FixedType) -> str:
    """The C++ spelling of a format: ``ap_fixed<8,3,AP_RND_CONV,AP_SAT>``."""
    return str(FixedType.coerce(t))


def ident(name: str) -> str:
    """``name`` unchanged if it is a C identifier; otherwise an error (a guard on everything spliced into code)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a C identifier; names reach generated code only through "
                         "Graph.c_names()")
    return name


def tcl_word(text: str) -> str:
    """``text`` unchanged if Tcl reads it as one literal word (letters, digits, ``_./:-``); otherwise an error."""
    if not isinstance(text, str) or not re.match(r"^[A-Za-z0-9_./:-]+$", text):
        raise ValueError(f"{text!r} cannot appear in a Tcl script as a plain word")
    return text


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared, strict environment (``StrictUndefined``, ``trim_blocks``, ``lstrip_blocks``)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(cpp_type=cpp_type, ident=ident, tcl_word=tcl_word)
    return env

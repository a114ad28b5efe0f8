"""What every back end shares to turn a plan into files: the one Jinja environment and the atomic writer.

:mod:`.environment` holds the strict Jinja2 environment over
``hls_templates/``; :mod:`.escape` the one checking or cleaning function
per target language that every string from a file passes before it
reaches generated text; :mod:`.writer` writes a rendered ``{path: text}`` plan as a
folder, all files or none.  The back ends (``qfx.hls``, ``qfx.rtl``,
``qfx.emulator``, ``qfx.onnx``) sit above this package; it imports none of them.
"""

from __future__ import annotations

from . import escape
from .environment import environment, template_dir
from .escape import cpp_type, ident, tcl_word
from .writer import ForeignFilesError, UnsafePathError, check_relative_path, check_replaceable, write_project

__all__ = ["escape", "environment", "template_dir", "cpp_type", "ident", "tcl_word", "write_project", "check_relative_path",
           "check_replaceable", "UnsafePathError", "ForeignFilesError"]

"""How a string from a file may reach generated code: one function per target language.

Nothing a file says is executed.  A string from a graph, a manifest or a
command line reaches generated text in one of two ways:

- as a **name the code uses** (a C++/Verilog/Python identifier, a Tcl word,
  a Yosys file or module name): it is *checked*, never rewritten, and
  anything else is refused (:func:`ident`, :func:`verilog_ident`,
  :func:`tcl_word`, :func:`yosys_word`); user names become identifiers only
  through :func:`qfx.ir.graph.c_identifier`;
- as **text for people** (a comment, a docstring, a README): it is
  *cleaned*: control, format and separator characters removed
  (:func:`printable`), cut to :data:`MAX_TEXT` characters, then whatever
  could end the comment or start a directive in that language removed
  (:func:`cpp_comment`, :func:`verilog_comment`, :func:`python_text`,
  :func:`tcl_comment`) or escaped (:func:`markdown`).

Each is a filter of the Jinja environment (:mod:`qfx.render.environment`).
"""

from __future__ import annotations

import html
import re
import unicodedata

from ..format import FixedType

__all__ = ["cpp_type", "ident", "verilog_ident", "VERILOG_KEYWORDS", "tcl_word", "yosys_word", "printable", "cpp_comment",
           "verilog_comment", "python_text", "tcl_comment", "markdown", "MAX_TEXT"]

#: The longest text from a file that generated comments and docs repeat.
MAX_TEXT = 120

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}")
_TCL_WORD = re.compile(r"[A-Za-z0-9_./:-]+")
_YOSYS_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")
#: Verilog-2005 keywords a module or signal may not be called.
VERILOG_KEYWORDS = frozenset("""
    always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default defparam
    design disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive endspecify
    endtable endtask event for force forever fork function generate genvar highz0 highz1 if ifnone incdir include
    initial inout input instance integer join large liblist library localparam macromodule medium module nand
    negedge nmos nor noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive pull0 pull1
    pulldown pullup pulsestyle_onevent pulsestyle_ondetect rcmos real realtime reg release repeat rnmos rpmos rtran
    rtranif0 rtranif1 scalared showcancelled signed small specify specparam strong0 strong1 supply0 supply1 table
    task time tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire vectored wait wand weak0
    weak1 while wire wor xnor xor
""".split())


def cpp_type(t: FixedType) -> str:
    """The C++ spelling of a format: ``ap_fixed<8,3,AP_RND_CONV,AP_SAT>``."""
    return str(FixedType.coerce(t))


# ------------------------------------------------------ names (checked)
def ident(name: str) -> str:
    """``name`` unchanged if it is an ASCII C identifier (so also Python's and Verilog's); otherwise an error."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"{name!r:.100} is not a C identifier; names reach generated code only through "
                         "Graph.c_names()")
    return name


def verilog_ident(name: str) -> str:
    """:func:`ident`, and not a Verilog keyword: a module, instance or signal name."""
    if ident(name) in VERILOG_KEYWORDS:
        raise ValueError(f"{name!r} is a Verilog keyword; choose another name")
    return name


def tcl_word(text: str) -> str:
    """``text`` unchanged if Tcl reads it as one literal word (letters, digits, ``_./:-``); otherwise an error."""
    if not isinstance(text, str) or not _TCL_WORD.fullmatch(text):
        raise ValueError(f"{text!r:.100} cannot appear in a Tcl script as a plain word")
    return text


def yosys_word(text: str) -> str:
    """``text`` unchanged if a Yosys script reads it as one plain argument (a relative file or a module name).

    Letters, digits and ``_./-``, not starting with ``-`` or ``.``, no ``..``:
    no spaces, ``;``, ``#``, quotes or ``$`` that would end the command or
    start another.
    """
    if not isinstance(text, str) or not _YOSYS_WORD.fullmatch(text) or ".." in text:
        raise ValueError(f"{text!r:.100} cannot appear in a Yosys script: a file or module name is letters, "
                         "digits and _./- only")
    return text


# ------------------------------------------------------- text (cleaned)
def printable(text: object) -> str:
    """``text`` (``str()`` of it) without control, format, surrogate or line/paragraph separator characters.

    Cut to :data:`MAX_TEXT` characters (``...`` marks a cut): what every
    comment and document repeats of a name from a file.
    """
    kept = "".join(ch for ch in str(text) if not unicodedata.category(ch).startswith(("C", "Zl", "Zp")))
    return kept if len(kept) <= MAX_TEXT else kept[:MAX_TEXT - 3] + "..."


def cpp_comment(text: object) -> str:
    """Text for a C++ ``//`` or ``/* */`` comment: :func:`printable`, no ``\\`` (a line splice), ``*/`` or ``??``."""
    return printable(text).replace("\\", "/").replace("*/", "* /").replace("??", "? ?")


def verilog_comment(text: object) -> str:
    """Text for a Verilog comment: :func:`printable`, no backtick (a directive), ``\\`` or ``*/``."""
    return printable(text).replace("`", "'").replace("\\", "/").replace("*/", "* /")


def python_text(text: object) -> str:
    """Text for a Python comment or docstring: :func:`printable`, no quotes or backslashes."""
    return printable(text).replace("\\", "/").replace('"', "'")


def tcl_comment(text: object) -> str:
    """Text for a Tcl comment: :func:`printable`, without ``\\ { } [ ] $ ; "`` (continuations, bodies, commands)."""
    return re.sub(r'[\\{}\[\]$;"]', "_", printable(text))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def markdown(text: object) -> str:
    """Text for Markdown prose or a table cell: :func:`printable`, HTML escaped, punctuation backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(printable(text), quote=False))

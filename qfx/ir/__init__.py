"""The export IR: a typed dataflow graph with integer constants, its file format and its interpreter.

``qfx.export(model, example_input)`` builds a :class:`Graph`;
``qfx.ir.save(graph, path)`` / :func:`load` store it (JSON + ``.npz``, no pickle);
:func:`run` executes it on integer codes, the reference every back end
matches bit for bit.  Op numerics: :mod:`qfx.ir.ops`,
:mod:`qfx.ir.interpreter`; the cast on codes: :mod:`qfx.ir.integer`.
"""

from .graph import Constant, Graph, IRError, Node, Value, c_identifier
from .integer import cast
from .interpreter import input_codes, run, run_codes, values_of
from .ops import OPS
from .serialize import load, save

__all__ = ["Graph", "Node", "Value", "Constant", "IRError", "c_identifier", "cast", "run", "run_codes",
           "input_codes", "values_of", "load", "save", "OPS", "export"]


def export(model, example_input, name: str = "") -> Graph:
    """The IR graph of a quantized model; see :func:`qfx.ir.export.export`."""
    from .export import export as _export  # torch is imported only when exporting
    return _export(model, example_input, name)

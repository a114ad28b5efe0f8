"""qfx: PyTorch to FPGA in fixed point, bit for bit what Vitis HLS's ap_fixed computes."""

from .format import FixedType, Overflow, Rounding
from .autograd import quantize
from .functional import from_codes, to_codes
from .khot import quantize_khot
from . import nn
from .nn.quantizers import NonFiniteError
from .convert import QConfig, UnsupportedOperationError, quantize_model
from .observers import MinMaxObserver, MSEObserver, PercentileObserver, calibrate
from .cost import bit_cost, summary
from . import ir
from .ir import export
from .emulator import emulate  # numpy and the IR only; nothing compiles before a call
from .compare import compare  # the function (ComparisonReport stays importable from qfx.compare)

__all__ = ["FixedType", "Rounding", "Overflow", "quantize", "to_codes", "from_codes", "quantize_khot",
           "NonFiniteError", "QConfig", "quantize_model", "UnsupportedOperationError", "calibrate", "MinMaxObserver", "MSEObserver",
           "PercentileObserver", "bit_cost", "summary", "nn", "ir", "export", "export_onnx", "emulate", "compare"]
__version__ = "0.1.0"


def export_onnx(graph, path, *, force: bool = False, batch_size: int = 1):
    """Write ``graph`` as a QONNX model; see :func:`qfx.onnx.export_onnx`."""
    from .onnx import export_onnx as _export_onnx  # onnx is imported only when exporting to it
    return _export_onnx(graph, path, force=force, batch_size=batch_size)

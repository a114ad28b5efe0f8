"""qfx: PyTorch to FPGA in fixed point, bit for bit what Vitis HLS's ap_fixed computes."""

from .format import FixedType, Overflow, Rounding
from .functional import from_codes, quantize, to_codes
from .khot import quantize_khot
from . import nn
from .convert import QConfig, UnsupportedOperationError, quantize_model
from .observers import MinMaxObserver, PercentileObserver, calibrate
from .cost import bit_cost, summary
from . import ir
from .ir import export

__all__ = ["FixedType", "Rounding", "Overflow", "quantize", "to_codes", "from_codes", "quantize_khot",
           "QConfig", "quantize_model", "UnsupportedOperationError", "calibrate", "MinMaxObserver",
           "PercentileObserver", "bit_cost", "summary", "ir", "export"]
__version__ = "0.1.0"

"""qfx: PyTorch to FPGA in fixed point, bit for bit what Vitis HLS's ap_fixed computes."""

from .format import FixedType, Overflow, Rounding
from .functional import from_codes, quantize, to_codes
from .khot import quantize_khot
from . import nn

__all__ = ["FixedType", "Rounding", "Overflow", "quantize", "to_codes", "from_codes", "quantize_khot"]
__version__ = "0.1.0"

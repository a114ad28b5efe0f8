"""Quantizer modules (and, as they come, quantized layers)."""

from .quantizers import FixedQuantizer, KHotQuantizer

__all__ = ["FixedQuantizer", "KHotQuantizer"]

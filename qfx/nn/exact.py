"""Exact arithmetic on fixed-point values held in floating-point tensors.

A fixed-point value is a floating-point number whose significand is its
integer code, so float arithmetic on such values is exact whenever every
result fits the significand: 24 bits in float32, 53 in float64.  The layers
of :mod:`qfx.nn` use this in eval mode to compute, bit for bit, what
``ap_fixed`` computes, without leaving torch's fast kernels:

* a product of a ``Wa``-bit and a ``Wb``-bit value has at most ``Wa + Wb``
  bits, and a sum of ``n`` products sharing one binary point at most
  ``ceil(log2 n)`` more, whatever the order of the additions;
  :func:`exact_dtype` picks the dtype from these widths, and refuses beyond
  53 bits;
* a sum of two values whose binary points are unknown (a bias added to a dot
  product whose input format the layer does not know, the two inputs of a
  residual add) is checked after the fact with the error-free transformation
  TwoSum: :func:`exact_add` moves to float64 if float32 rounded, and refuses
  if float64 did too;
* the kernels must not round on their own: :func:`float32_is_exact` says
  whether float32 matrix products and convolutions are IEEE on a device
  (not TF32 or bfloat16), and :func:`exact_kernels` turns off the
  convolution algorithms that are never exact (NNPACK's and cuDNN's
  Winograd and FFT kernels).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence, Union

import torch

from ..functional import mantissa_bits
from .quantizers import FixedQuantizer, KHotQuantizer, affine_relu

__all__ = ["exact_dtype", "float32_is_exact", "exact_kernels", "exact_add", "cast", "cast_output",
           "as_float", "compact"]

Quantizer = Union[FixedQuantizer, KHotQuantizer]

_EXACT_PRECISIONS = ("none", "ieee")


def float32_is_exact(device: torch.device) -> bool:
    """Whether float32 matrix products and convolutions on ``device`` round like IEEE float32.

    On CUDA, cuDNN picks TF32, Winograd or FFT kernels on its own, so the
    answer is no there; on the CPU it is yes unless the user allowed
    reduced-precision float32 matmuls (``torch.set_float32_matmul_precision``
    or the ``fp32_precision`` flags).
    """
    if device.type != "cpu":
        return False
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = torch.backends.mkldnn
    flags = [getattr(torch.backends, "fp32_precision", "none"), getattr(mkldnn, "fp32_precision", "none")]
    flags += [getattr(getattr(mkldnn, op, None), "fp32_precision", "none") for op in ("matmul", "conv")]
    return all(flag in _EXACT_PRECISIONS for flag in flags)


def exact_dtype(terms: Sequence[tuple[str, int]], layer: str, fix: str,
                device: Union[torch.device, None] = None) -> torch.dtype:
    """The floating dtype that holds a result of ``sum(bits for _, bits in terms)`` bits exactly.

    ``terms`` name where the bits come from (``[("input", 8), ("weight", 8),
    ("sum of 64 terms", 6)]``), for the error message.  ``device`` is given
    when the result comes out of a matrix product or convolution, whose
    float32 kernels must also be exact there (:func:`float32_is_exact`).
    Beyond 53 bits there is no exact dtype: the error names ``layer``, the
    terms, and says ``fix``.
    """
    bits = sum(b for _, b in terms)
    if bits <= mantissa_bits(torch.float32) and (device is None or float32_is_exact(device)):
        return torch.float32
    if bits <= mantissa_bits(torch.float64):
        return torch.float64
    spelled = " + ".join(f"{b} ({name})" for name, b in terms)
    raise ValueError(f"{layer}: an exact result needs {spelled} = {bits} bits, more than the 53 that float64 "
                     f"holds exactly, so eval mode cannot be bit-exact; {fix} (by {bits - 53} bits in all)")


@contextlib.contextmanager
def exact_kernels(device: torch.device) -> Iterator[None]:
    """Run convolutions with exact algorithms only: NNPACK off, and cuDNN off on CUDA.

    What remains are direct convolutions and im2col + GEMM, which round only
    where the dtype cannot hold a result.  The flags are global: another
    thread convolving meanwhile also runs without NNPACK and cuDNN.
    """
    with torch.backends.nnpack.flags(enabled=False):
        if device.type != "cuda":
            yield
            return
        previous = torch.backends.cudnn.enabled
        torch.backends.cudnn.enabled = False
        try:
            yield
        finally:
            torch.backends.cudnn.enabled = previous


def _two_sum_error(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``(a + b) - s`` exactly, for ``s = fl(a + b)`` (Knuth's TwoSum; no assumption on |a| and |b|)."""
    b_virtual = s - a
    return (a - (s - b_virtual)) + (b - b_virtual)


def exact_add(a: torch.Tensor, b: torch.Tensor, layer: str, fix: str) -> torch.Tensor:
    """``a + b`` (broadcast) exactly: in their common dtype if that holds it, else in float64.

    Exactness is checked with TwoSum, which costs a few elementwise passes and
    needs no knowledge of the operands' formats.  If even float64 rounds, the
    binary points lie more than 53 bits apart: the error names ``layer`` and
    says ``fix``.
    """
    s = a + b
    if not bool(_two_sum_error(a, b, s).any()):
        return s
    if not bool(torch.isfinite(s).all()):
        return s  # NaN or Inf: left for the cast that follows, which refuses them and counts them
    if s.dtype != torch.float64:
        return exact_add(a.double(), b.double(), layer, fix)
    raise ValueError(f"{layer}: the sum needs more than the 53 bits float64 holds exactly (the operands' "
                     f"binary points lie too far apart), so eval mode cannot be bit-exact; {fix}")


def as_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 or float64, exactly: narrower floats become float32, integers float64."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.to(torch.float32 if x.dtype.is_floating_point else torch.float64)


def compact(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if that holds every value exactly, else unchanged (meant for small constants)."""
    if x.dtype == torch.float32:
        return x
    narrow = x.to(torch.float32)
    return narrow if torch.equal(narrow.to(x.dtype), x) else x


def cast(quantizer: Quantizer, x: torch.Tensor, scale: Optional[torch.Tensor] = None,
         shift: Optional[torch.Tensor] = None, relu: bool = False) -> torch.Tensor:
    """``quantizer(x, scale, shift, relu)``; moved to float64 first (after the affine map and ReLU, which stay in
    ``x``'s dtype) when the format is wider than ``x``'s dtype holds."""
    if quantizer.base_type.width > mantissa_bits(x.dtype):
        return quantizer(affine_relu(x, scale, shift, relu).double())
    return quantizer(x, scale, shift, relu)


def cast_output(quantizer: Quantizer, x: torch.Tensor, dtype: torch.dtype, exact: bool,
                scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                relu: bool = False) -> torch.Tensor:
    """``quantizer(x, scale, shift, relu)`` (see :func:`cast`) returned in ``dtype``.

    ``exact`` (eval mode): in ``dtype`` only if it holds the format exactly,
    else in float64.  Otherwise (training, fake quantization) always in ``dtype``.
    """
    y = cast(quantizer, x, scale, shift, relu)
    if y.dtype == dtype or (exact and quantizer.base_type.width > mantissa_bits(dtype)):
        return y
    return y.to(dtype)

"""Quantizer modules: a fixed-point format held as parameters, the cast done by :mod:`qfx.autograd`.

The word length is fixed; the binary point (integer bits) is a float tensor,
one per tensor or one per channel, rounded in the forward pass.  With
``learn_int_bits=True`` it is a trained parameter (gradient documented on
:class:`qfx.autograd._LearnedIntBitsCast`); otherwise it is a buffer that
calibration may set.  ``freeze()`` turns a learned binary point into a fixed
one.

In training mode (``module.train()``) the quantizers cast ``AP_SAT`` formats
with the training-mode casts (:func:`qfx.autograd.fused_training_cast` for
``AP_RND_CONV`` with one binary point, else
:func:`qfx.functional.saturating_cast_codes`): the same values for finite
inputs in fewer passes, without the NaN/Inf check; eval mode always uses
the exact :func:`qfx.functional.cast_codes`.  A quantizer may also apply
the per-channel affine map of a BatchNorm and a ReLU before its cast
(``forward``'s ``scale``, ``shift`` and ``relu``), which training fuses
into the same pass.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..autograd import fixed_cast, fused_training_cast, learned_int_bits_cast
from ..format import FixedType
from ..khot import _KHotCast, _check_k

__all__ = ["FixedQuantizer", "KHotQuantizer"]

_GRANULARITIES = ("tensor", "channel")


def affine_relu(x: torch.Tensor, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                relu: bool = False) -> torch.Tensor:
    """``x * scale + shift`` (one per channel of dimension 1, in ``x``'s dtype), then ``max(.., 0)`` if ``relu``."""
    if scale is not None:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x * scale.to(x.dtype).view(shape)).add_(shift.to(x.dtype).view(shape))
    return torch.relu(x) if relu else x


class _BinaryPointQuantizer(nn.Module):
    """Shared state of the quantizers: the base type and its (possibly learned) integer bits."""

    def __init__(self, fixed_type: Union[FixedType, str], learn_int_bits: bool = False,
                 granularity: str = "tensor", channel_dim: int = 0, num_channels: Optional[int] = None,
                 int_bits_range: Optional[tuple[int, int]] = None) -> None:
        super().__init__()
        t = FixedType.coerce(fixed_type)
        if granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
        self.base_type = t
        self.granularity = granularity
        self.channel_dim = channel_dim
        self.learn_int_bits = bool(learn_int_bits)
        # By default the binary point may move a word length either way from
        # the word: wide enough for any sensible tensor, bounded so a runaway
        # gradient cannot leave the float exponent range.
        lo, hi = int_bits_range if int_bits_range is not None else (-t.width, 2 * t.width)
        if not lo <= t.int_bits <= hi:
            raise ValueError(f"int_bits={t.int_bits} of {t} lies outside int_bits_range=({lo}, {hi})")
        self.int_bits_range = (int(lo), int(hi))
        init = float(t.int_bits)
        if granularity == "tensor":
            value: torch.Tensor = torch.tensor(init)
        elif num_channels is not None:
            value = torch.full((int(num_channels),), init)
        else:  # sized by the first input
            value = UninitializedParameter() if self.learn_int_bits else UninitializedBuffer()
        if self.learn_int_bits:
            self.int_bits = value if isinstance(value, nn.Parameter) else nn.Parameter(value)
        else:
            self.register_buffer("int_bits", value)

    # ------------------------------------------------------------- state
    def _materialize(self, x: torch.Tensor) -> None:
        if isinstance(self.int_bits, (UninitializedParameter, UninitializedBuffer)):
            channels = x.shape[self.channel_dim]
            self.int_bits.materialize((channels,), device=x.device, dtype=torch.float32)
            with torch.no_grad():
                self.int_bits.fill_(float(self.base_type.int_bits))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A channel count not yet seen from data comes from the checkpoint, as for torch's lazy modules.
        saved = state_dict.get(prefix + "int_bits")
        if saved is not None and isinstance(self.int_bits, (UninitializedParameter, UninitializedBuffer)):
            self.int_bits.materialize(saved.shape, dtype=torch.float32)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _view_shape(self, x: torch.Tensor) -> Optional[tuple[int, ...]]:
        if self.granularity == "tensor":
            return None
        dim = self.channel_dim % x.dim()
        if x.shape[dim] != self.int_bits.numel():
            raise ValueError(f"{type(self).__name__} holds {self.int_bits.numel()} channels but the input's "
                             f"dimension {self.channel_dim} has {x.shape[dim]} (input shape {tuple(x.shape)})")
        return tuple(x.shape[dim] if i == dim else 1 for i in range(x.dim()))

    def effective_int_bits(self) -> torch.Tensor:
        """The integer bits in use: ``round(int_bits)`` clipped to ``int_bits_range``, detached."""
        if isinstance(self.int_bits, (UninitializedParameter, UninitializedBuffer)):
            raise RuntimeError(f"{type(self).__name__} with granularity='channel' learns its channel count from "
                               "the first input; run a forward pass (or pass num_channels) first")
        return torch.round(self.int_bits.detach()).clamp(*self.int_bits_range)

    @property
    def fixed_type(self) -> Union[FixedType, list[FixedType]]:
        """The format in use: one :class:`FixedType`, or a list of one per channel."""
        bits = self.effective_int_bits()
        if self.granularity == "tensor":
            return self.base_type.replace(int_bits=int(bits))
        return [self.base_type.replace(int_bits=int(b)) for b in bits.tolist()]

    def set_int_bits(self, int_bits: Union[int, torch.Tensor]) -> None:
        """Place the binary point (calibration): a number, or one per channel."""
        value = torch.as_tensor(int_bits, dtype=torch.float32)
        if isinstance(self.int_bits, (UninitializedParameter, UninitializedBuffer)):
            self.int_bits.materialize(value.shape if value.dim() else (1,), dtype=torch.float32)
        with torch.no_grad():
            self.int_bits.copy_(value.expand_as(self.int_bits).clamp(*self.int_bits_range))

    def freeze(self) -> "_BinaryPointQuantizer":
        """Fix the binary point where training left it: it becomes a rounded buffer and stops learning."""
        value = self.effective_int_bits().clone()
        if isinstance(self.int_bits, nn.Parameter):
            del self.int_bits
        self.register_buffer("int_bits", value)
        self.learn_int_bits = False
        return self

    def extra_repr(self) -> str:
        parts = [str(self.base_type)]
        if self.learn_int_bits:
            parts.append("learn_int_bits=True")
        if self.granularity != "tensor":
            parts.append(f"granularity={self.granularity!r}, channel_dim={self.channel_dim}")
        return ", ".join(parts)

    # ----------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                relu: bool = False) -> torch.Tensor:
        """``Q(x)``; with ``scale`` and ``shift`` (one per channel of dimension 1) ``Q(x * scale + shift)``, and
        with ``relu=True`` the cast of ``max(.., 0)``.

        The affine map and the ReLU are computed in ``x``'s dtype, rounding
        after the product and after the sum, as BatchNorm and ReLU layers
        would before the cast; in training mode, for ``AP_RND_CONV``/``AP_SAT``
        with one binary point, all of it runs as one fused pass each way
        (:func:`qfx.autograd.fused_training_cast`), with the same values and
        gradients.
        """
        self._materialize(x)
        view = self._view_shape(x)
        if self.learn_int_bits:
            self._keep_int_bits_in_range()
            int_bits = self.int_bits
        else:
            int_bits = self.effective_int_bits()
        if self.training and self._khot is None:
            channel_dim = None if view is None else self.channel_dim
            y = fused_training_cast(x, self.base_type, int_bits, channel_dim, scale, shift, relu)
            if y is not None:
                return y
        x = affine_relu(x, scale, shift, relu)
        if self.learn_int_bits:
            return learned_int_bits_cast(x, int_bits, self.base_type, view, khot=self._khot, training=self.training)
        frac = self.base_type.width - (int_bits if view is None else int_bits.view(view))
        return self._fixed_forward(x, frac)

    def _keep_int_bits_in_range(self) -> None:
        """Clamp the learned parameter to ``int_bits_range``, where rounding and the float range stay meaningful."""
        lo, hi = self.int_bits_range
        # One binary point: reading it is cheaper than a clamp that does nothing.
        if self.int_bits.dim() or not lo <= float(self.int_bits.detach()) <= hi:
            with torch.no_grad():
                self.int_bits.clamp_(lo, hi)

    _khot: Optional[int] = None

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FixedQuantizer(_BinaryPointQuantizer):
    """Cast to ``ap_fixed<W, I, Q, O, N>``; ``I`` per tensor or per channel, optionally learned.

    Forward: ``qfx.quantize`` with ``I = round(int_bits)``.  Backward: straight
    through inside the range; with ``learn_int_bits`` also a gradient to
    ``int_bits`` (see :func:`qfx.autograd.learned_int_bits_cast`).

    Args:
        fixed_type: the format; its ``int_bits`` is the starting binary point.
        learn_int_bits: train the binary point (word length stays fixed).
        granularity: ``"tensor"`` (one binary point) or ``"channel"``.
        channel_dim: the channel dimension of the input for ``"channel"``.
        num_channels: channel count; if omitted, taken from the first input.
        int_bits_range: bounds ``(lo, hi)`` for the binary point; default ``(-W, 2W)``.
    """

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor) -> torch.Tensor:
        if frac_bits.dim() == 0:
            t = self.base_type.replace(int_bits=self.base_type.width - int(frac_bits))
            return fixed_cast(x, t, training=self.training)
        return fixed_cast(x, self.base_type, frac_bits, training=self.training)


class KHotQuantizer(_BinaryPointQuantizer):
    """Nearest value of ``fixed_type`` with at most ``k`` nonzero signed digits (multiplier-free).

    Forward: :func:`qfx.quantize_khot` with ``I = round(int_bits)``; the type's
    rounding and overflow modes play no part (nearest, ties toward zero,
    beyond the range the nearest end).  Backward: straight through between
    the extreme allowed values; with ``learn_int_bits`` also a gradient to the
    binary point.  Other arguments as :class:`FixedQuantizer`.
    """

    def __init__(self, fixed_type: Union[FixedType, str], k: int, learn_int_bits: bool = False,
                 granularity: str = "tensor", channel_dim: int = 0, num_channels: Optional[int] = None,
                 int_bits_range: Optional[tuple[int, int]] = None) -> None:
        super().__init__(fixed_type, learn_int_bits, granularity, channel_dim, num_channels, int_bits_range)
        _check_k(self.base_type, k)
        self.k = k
        self._khot = k

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor) -> torch.Tensor:
        if frac_bits.dim() == 0:
            t = self.base_type.replace(int_bits=self.base_type.width - int(frac_bits))
            return _KHotCast.apply(x, t, self.k)
        # Per-channel binary points: the learned-cast function with a frozen parameter.
        return learned_int_bits_cast(x, self.base_type.width - frac_bits, self.base_type, khot=self.k)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

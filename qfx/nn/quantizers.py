"""Quantizer modules: a fixed-point format held as parameters, the cast done by :mod:`qfx.autograd`.

The word length is fixed; the binary point (integer bits) is a float tensor,
one per tensor or one per channel, rounded in the forward pass: the buffer
``int_bits``, which calibration sets.  With ``learn_int_bits=True`` it is
trained through the parameter ``int_bits_move`` (see :class:`_MoveIntBits`
for the parameterization and :class:`qfx.autograd._LearnedIntBitsCast` for
the gradient), so that one optimizer over ``model.parameters()`` at the
weights' learning rate moves binary points by sensible fractions of a bit
and its weight decay never reaches them.  ``freeze()`` turns a learned
binary point into a fixed one.  A binary point stays within
``int_bits_range`` (default ``(-W, 2W)``).

``learn_width()`` makes the word length learned as well (one per
quantizer, at most the configured ``W``): the buffer ``width`` trained
through the parameter ``width_move`` by the same mechanism, with the
gradient of :func:`qfx.autograd.learned_width`; the format in use is then
``ap_fixed<round(width), round(int_bits)>``, an ordinary ``FixedType``.

In training mode (``module.train()``) the quantizers cast with the
training-mode casts (:func:`qfx.autograd.fused_training_cast` for every
format :mod:`qfx.fused` takes: ``AP_RND_CONV``/``AP_TRN``/``AP_RND`` with
``AP_SAT``/``AP_SAT_ZERO``/``AP_SAT_SYM``/``AP_WRAP``; else, for ``AP_SAT``,
:func:`qfx.functional.saturating_cast_codes`): the same values for finite
inputs in fewer passes (``AP_SAT`` without the NaN/Inf check); eval mode
always uses the exact :func:`qfx.functional.cast_codes`.  A quantizer may also apply
the per-channel affine map of a BatchNorm and a ReLU before its cast
(``forward``'s ``scale``, ``shift`` and ``relu``), which training fuses
into the same pass.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..autograd import fixed_cast, fused_training_cast, learned_int_bits_cast, learned_width
from ..format import FixedType
from ..functional import mantissa_bits
from ..fused import native
from ..khot import _KHotCast, _check_k

__all__ = ["FixedQuantizer", "KHotQuantizer", "NonFiniteError", "STEP_SCALE"]

_GRANULARITIES = ("tensor", "channel")

#: Bits a binary point moves per unit of ``int_bits_move``: Adam's step of about ``lr`` moves it ``STEP_SCALE * lr`` bits.
STEP_SCALE = 32.0


class NonFiniteError(FloatingPointError):
    """A NaN or infinity reached a quantizer in training (its input, or the gradient of its binary point).

    Raised from ``loss.backward()`` before the optimizer step, so nothing
    has been written yet: catch it (and ``optimizer.zero_grad()``) to skip
    the batch.
    """


class _MoveIntBits(torch.autograd.Function):
    """The learned binary point ``I = int_bits + k * move`` (``k`` = :data:`STEP_SCALE`) with gradient
    ``dL/dmove = (dL/dI) / k``.

    The quantizer folds every pending move into the buffer ``int_bits``
    and sets ``move`` back to 0 before each forward pass, so the optimizer
    always steps a parameter that is 0: weight decay, coupled (Adam, SGD:
    ``wd * move`` added to the gradient) or decoupled (AdamW: ``move``
    scaled by ``1 - lr * wd``), has nothing to act on, and never pulls a
    binary point towards ``I = 0``.

    Why ``k`` forward and ``1/k`` backward (not the chain rule's ``k``):
    the two kinds of optimizer see the same parameter differently.

    * Adam, AdamW (and other optimizers that normalize the gradient's size):
      a step is about ``lr`` in ``move`` whatever the gradient's scale,
      i.e. ``k * lr`` bits: at the weights' fine-tuning ``lr = 1e-3``,
      1/32 of a bit per step, a bit in about 30 steps of one sign, and a
      step of a few hundredths of a bit where the gradient's sign
      alternates around the balance point.
    * SGD: ``dmove = -lr * dL/dI / k``, i.e. ``dI = -lr * dL/dI`` bits:
      exactly the step SGD would take on ``I`` itself with the gradient of
      :class:`qfx.autograd._LearnedIntBitsCast`, independent of ``k``
      (momentum ``mu`` lengthens a steady step by ``1 / (1 - mu)``).

    The backward pass also refuses a non-finite gradient (a NaN or Inf in
    the quantizer's input or in the gradient reaching it) with
    :class:`NonFiniteError` naming the quantizer: one read of one number per
    binary point, no pass over the data (:func:`_check_finite`).

    In training, the fused cast (:func:`qfx.autograd.fused_training_cast`)
    does all of this itself, after the fold: the binary point is then
    ``int_bits``, and the cast hands ``move`` the gradient ``(dL/dI) / k``
    and the same check, without a node of this function in the graph.
    """

    @staticmethod
    def forward(ctx, int_bits: torch.Tensor, move: torch.Tensor, where: str) -> torch.Tensor:
        ctx.where = where
        return torch.add(int_bits, move, alpha=STEP_SCALE)  # int_bits + k * move: k * move is exact

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        _check_finite(ctx.where, grad)
        return None, grad / STEP_SCALE, None


def _check_finite(where: str, grad: torch.Tensor) -> None:
    """:class:`NonFiniteError` naming ``where`` if ``grad`` (a binary point's gradient) holds a NaN or an infinity;
    one Python read for a single binary point, no tensor ops."""
    if grad.numel() == 1:
        finite = math.isfinite(grad.item())
    else:  # a finite sum has finite terms; an infinite one may come from finite terms: then each is looked at
        finite = math.isfinite(float(grad.sum())) or bool(torch.isfinite(grad).all())
    if not finite:
        raise NonFiniteError(f"{where}: the gradient of its learned binary point or word length is not "
                             "finite (NaN or Inf in its input or in the gradient reaching it); catch "
                             "qfx.NonFiniteError and call optimizer.zero_grad() to skip the batch")


def affine_relu(x: torch.Tensor, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                relu: bool = False) -> torch.Tensor:
    """``x * scale + shift`` (one per channel of dimension 1, in ``x``'s dtype), then ``max(.., 0)`` if ``relu``."""
    if scale is not None:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x * scale.to(x.dtype).view(shape)).add_(shift.to(x.dtype).view(shape))
    return torch.relu(x) if relu else x


@functools.lru_cache(maxsize=None)
def _largest_step(dtype: torch.dtype) -> float:
    """The largest ``|move|`` whose ``k * move`` is finite in ``dtype``."""
    return torch.finfo(dtype).max / STEP_SCALE


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
        self.path = ""  # the module path errors name; qfx.quantize_model sets it
        if granularity == "tensor":
            value: torch.Tensor = torch.tensor(init)
        elif num_channels is not None:
            value = torch.full((int(num_channels),), init)
        else:  # sized by the first input
            value = UninitializedBuffer()
        self.register_buffer("int_bits", value)
        if self.learn_int_bits:
            self.int_bits_move = (UninitializedParameter() if isinstance(value, UninitializedBuffer)
                                  else nn.Parameter(torch.zeros_like(value)))

    # ------------------------------------------------------------- state
    def _materialize(self, x: torch.Tensor) -> None:
        if isinstance(self.int_bits, UninitializedBuffer):
            self._materialize_shape((x.shape[self.channel_dim],), x.device)
            with torch.no_grad():
                self.int_bits.fill_(float(self.base_type.int_bits))

    def _materialize_shape(self, shape: tuple, device=None) -> None:
        self.int_bits.materialize(shape, device=device, dtype=torch.float32)
        move = getattr(self, "int_bits_move", None)
        if isinstance(move, UninitializedParameter):
            move.materialize(shape, device=device, dtype=torch.float32)
            with torch.no_grad():
                move.zero_()

    def _where(self) -> str:
        return f"{type(self).__name__} '{self.path}'" if self.path else type(self).__name__

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for key in ("int_bits", "int_bits_move", "width", "width_move"):
            value = state_dict.get(prefix + key)
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"load_state_dict: '{prefix + key}' holds a non-finite binary point "
                                 f"({value.flatten().tolist()[:8]}); refusing to load it")
        saved = state_dict.get(prefix + "int_bits")
        # A channel count not yet seen from data comes from the checkpoint, as for torch's lazy modules.
        if saved is not None and isinstance(self.int_bits, UninitializedBuffer):
            self._materialize_shape(tuple(saved.shape))
        # A checkpoint of a fixed binary point, or from before the move parameter, loads with no pending move.
        if saved is not None and self.learn_int_bits and prefix + "int_bits_move" not in state_dict:
            state_dict[prefix + "int_bits_move"] = torch.zeros_like(saved, dtype=torch.float32)
        # A checkpoint from before the word length was learned: it starts at the configured one.
        if self.learns_width and saved is not None and prefix + "width" not in state_dict:
            state_dict[prefix + "width"] = torch.tensor(float(self.base_type.width))
            state_dict[prefix + "width_move"] = torch.zeros(())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _view_shape(self, x: torch.Tensor) -> Optional[tuple[int, ...]]:
        if self.granularity == "tensor":
            return None
        dim = self.channel_dim % x.dim()
        if x.shape[dim] != self.int_bits.numel():
            raise ValueError(f"{type(self).__name__} holds {self.int_bits.numel()} channels but the input's "
                             f"dimension {self.channel_dim} has {x.shape[dim]} (input shape {tuple(x.shape)})")
        return tuple(x.shape[dim] if i == dim else 1 for i in range(x.dim()))

    # ------------------------------------------------------ word length
    learns_width: bool = False

    def learn_width(self, width_range: Optional[tuple[int, int]] = None) -> "_BinaryPointQuantizer":
        """Train the word length too, from the configured one: ``W = width + k * width_move`` (``k`` =
        :data:`STEP_SCALE`, as for the binary point), used as ``round(W)`` within ``width_range`` (default
        ``(2, W0)``, ``W0`` the configured width: the word only narrows, so the configured width stays an
        upper bound for every layer's choice of dtype).  The binary point keeps its meaning (integer bits);
        the fractional bits are ``round(W) - round(I)``."""
        if self._khot is not None:
            raise ValueError(f"{self._where()}: a K-hot quantizer cannot learn its word length (its allowed codes "
                             "are listed for one width)")
        lo, hi = width_range if width_range is not None else (2, self.base_type.width)
        if not 1 <= lo <= hi <= self.base_type.width:
            raise ValueError(f"{self._where()}: width_range=({lo}, {hi}) must lie within 1..{self.base_type.width}")
        self.width_range = (int(lo), int(hi))
        self.register_buffer("width", torch.tensor(float(self.base_type.width)))
        self.width_move = nn.Parameter(torch.zeros(()))
        self.learns_width = True
        return self

    def effective_width(self) -> int:
        """The word length in use: ``round(width + k * width_move)`` within ``width_range``, or the configured one."""
        if not self.learns_width:
            return self.base_type.width
        value = float(self.width.detach() + STEP_SCALE * self.width_move.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"{self._where()}: its learned word length is not finite ({value})")
        lo, hi = self.width_range
        return int(min(max(round(value), lo), hi))

    def word_length(self) -> torch.Tensor:
        """The word length as a 0-d float tensor: ``round(W)`` in value, with the straight-through gradient
        ``d round(W) / dW = 1`` towards ``width_move`` when learned (what :func:`qfx.bit_cost` uses)."""
        if not self.learns_width:
            return torch.tensor(float(self.base_type.width))
        raw = _MoveIntBits.apply(self.width, self.width_move, self._where())
        return raw + (float(self.effective_width()) - raw).detach()

    def current_type(self) -> FixedType:
        """The base format at the word length in use (its ``int_bits`` is the configured start)."""
        if not self.learns_width:
            return self.base_type
        return self.base_type.replace(width=self.effective_width())

    def frac_bits(self) -> torch.Tensor:
        """Fractional bits in use, ``W - I``: 0-d, or one per channel."""
        return self.current_type().width - self.effective_int_bits()

    def effective_int_bits(self) -> torch.Tensor:
        """The integer bits in use: ``round(int_bits + k * int_bits_move)`` clipped to ``int_bits_range``, detached."""
        if isinstance(self.int_bits, UninitializedBuffer):
            raise RuntimeError(f"{type(self).__name__} with granularity='channel' learns its channel count from "
                               "the first input; run a forward pass (or pass num_channels) first")
        bits = self.int_bits.detach()
        if self.learn_int_bits:
            bits = bits + STEP_SCALE * self.int_bits_move.detach()
            if not bool(torch.isfinite(bits).all()):
                raise NonFiniteError(f"{self._where()}: its learned binary point is not finite ({bits.tolist()})")
        return torch.round(bits).clamp(*self.int_bits_range)

    def binary_point(self) -> torch.Tensor:
        """The (unrounded) integer bits as a tensor; for a learned binary point differentiable towards
        ``int_bits_move`` (see :class:`_MoveIntBits`)."""
        if not self.learn_int_bits:
            return self.int_bits
        return _MoveIntBits.apply(self.int_bits, self.int_bits_move, self._where())

    @property
    def fixed_type(self) -> Union[FixedType, list[FixedType]]:
        """The format in use: one :class:`FixedType`, or a list of one per channel."""
        bits = self.effective_int_bits()
        t = self.current_type()
        if self.granularity == "tensor":
            return t.replace(int_bits=int(bits))
        return [t.replace(int_bits=int(b)) for b in bits.tolist()]

    def set_int_bits(self, int_bits: Union[int, torch.Tensor]) -> None:
        """Place the binary point (calibration): a number, or one per channel."""
        value = torch.as_tensor(int_bits, dtype=torch.float32)
        if isinstance(self.int_bits, UninitializedBuffer):
            self._materialize_shape(value.shape if value.dim() else (1,))
        with torch.no_grad():
            self.int_bits.copy_(value.expand_as(self.int_bits).clamp(*self.int_bits_range))
            if self.learn_int_bits:
                self.int_bits_move.zero_()

    def freeze(self) -> "_BinaryPointQuantizer":
        """Fix the binary point where training left it: it becomes a rounded buffer and stops learning."""
        value = self.effective_int_bits().clone()
        if self.learns_width:
            self.base_type = self.current_type()
            del self.width_move, self.width
            self.learns_width = False
        if self.learn_int_bits:
            del self.int_bits_move
        self.int_bits = value
        self.learn_int_bits = False
        return self

    def extra_repr(self) -> str:
        parts = [str(self.base_type)]
        if self.learn_int_bits:
            parts.append("learn_int_bits=True")
        if self.learns_width:
            parts.append(f"learned width {self.effective_width()} in {self.width_range}")
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
        would before the cast; in training mode, for the formats :mod:`qfx.fused`
        takes, all of it runs as one fused pass each way
        (:func:`qfx.autograd.fused_training_cast`), with the same values and
        gradients.
        """
        self._materialize(x)
        if self.learns_width:
            self._fold_width_move()
            v = affine_relu(x, scale, shift, relu)
            q = self._cast(v)
            if not self.training:
                return q
            frac = self.frac_bits()
            view = self._view_shape(v)
            step = torch.exp2(-(frac if view is None else frac.view(view)).to(v.dtype))
            width = _MoveIntBits.apply(self.width, self.width_move, self._where())
            return learned_width(q, v, width.to(v.dtype), step)
        return self._cast(x, scale, shift, relu)

    def _cast(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
              relu: bool = False) -> torch.Tensor:
        view = self._view_shape(x)
        t = self.current_type()
        if self.learn_int_bits:
            self._fold_move()
            if self.training and self._khot is None:
                # The move is 0 now: the binary point is int_bits, and the fused cast hands the move its
                # gradient itself (as _MoveIntBits would: dL/dI / k, checked for NaN/Inf with the others).
                y = fused_training_cast(x, t, self.int_bits, None if view is None else self.channel_dim, scale,
                                        shift, relu, self.int_bits_move, 1.0 / STEP_SCALE, self._check_gradient)
                if y is not None:
                    return y
            int_bits = self.binary_point()
        else:
            int_bits = self.effective_int_bits()
            if self.training and self._khot is None:
                y = fused_training_cast(x, t, int_bits, None if view is None else self.channel_dim, scale, shift,
                                        relu)
                if y is not None:
                    return y
        x = affine_relu(x, scale, shift, relu)
        if self.learn_int_bits:
            return learned_int_bits_cast(x, int_bits, t, view, khot=self._khot, training=self.training)
        frac = t.width - (int_bits if view is None else int_bits.view(view))
        return self._fixed_forward(x, frac, t)

    def training_operand(self, x: torch.Tensor) -> Optional[tuple]:
        """This quantizer's training cast of ``x`` as :func:`qfx.autograd.fused_pair_cast` takes it, ``(format,
        binary point, gradient target, factor, check)``, with the pending move folded in (as :meth:`forward`
        folds it; the binary point 0-d, or one per channel); ``None`` where only :meth:`forward` casts it: eval
        mode, K-hot, a learned word length, a format wider than ``x``'s dtype holds, a per-channel quantizer not
        yet sized, or hooks that must see the call."""
        if (not self.training or isinstance(self.int_bits, UninitializedBuffer) or self._khot is not None
                or self.learns_width
                or self._forward_hooks or self._forward_pre_hooks or x.dtype not in (torch.float32, torch.float64)
                or self.base_type.width > mantissa_bits(x.dtype)):
            return None
        if self.learn_int_bits:
            self._fold_move()
            return self.base_type, self.int_bits, self.int_bits_move, 1.0 / STEP_SCALE, self._check_gradient
        bits = self.effective_int_bits()
        return self.base_type, bits, bits, 1.0, None

    def _check_gradient(self, grad: torch.Tensor) -> None:
        """Refuse a non-finite gradient of the binary point (see :class:`_MoveIntBits`)."""
        _check_finite(self._where(), grad)

    def _fold_width_move(self) -> None:
        """Fold the optimizer's pending move of the word length into ``width``, clamped to ``width_range``."""
        move = self.width_move
        if float(move.detach()) == 0.0:
            return
        with torch.no_grad():
            value = self.width + STEP_SCALE * move
            if not bool(torch.isfinite(value)):
                raise NonFiniteError(f"{self._where()}: the optimizer left its learned word length non-finite "
                                     f"({float(value)}); a non-finite loss or learning rate upstream")
            self.width.copy_(value.clamp_(*self.width_range))
            move.zero_()

    def _fold_move(self) -> None:
        """Fold the optimizer's pending move into ``int_bits``, clamped to ``int_bits_range``; the move becomes 0.

        In training, one native call (:func:`qfx.fused.native.fold_points`) where the kernels are built."""
        move = self.int_bits_move
        if self.training:
            folded = native.fold_points(self.int_bits, move, STEP_SCALE, *self.int_bits_range)
            if folded is False:
                self._refuse_folded(torch.add(self.int_bits, move.detach(), alpha=STEP_SCALE).tolist())
            if folded is not None:
                return
        if move.dim() == 0:
            # One binary point: two reads and three in-place ops instead of a dozen small tensor ops.
            step = float(move.detach())
            if step == 0.0:
                return
            start = float(self.int_bits)
            # int_bits + k * move overflows exactly where k * move does (int_bits is small and finite).
            if not (math.isfinite(start) and math.isfinite(step)
                    and abs(step) <= _largest_step(move.dtype)):
                self._refuse_folded(start + STEP_SCALE * step)
            with torch.no_grad():
                self.int_bits.add_(move, alpha=STEP_SCALE).clamp_(*self.int_bits_range)
                move.zero_()
            return
        with torch.no_grad():
            bits = torch.add(self.int_bits, move, alpha=STEP_SCALE)
            if not bool(torch.isfinite(bits).all()):
                self._refuse_folded(bits.tolist())
            self.int_bits.copy_(bits.clamp_(*self.int_bits_range))
            move.zero_()

    def _refuse_folded(self, bits) -> None:
        raise NonFiniteError(f"{self._where()}: the optimizer left its learned binary point non-finite "
                             f"({bits}); a non-finite loss or learning rate upstream")

    _khot: Optional[int] = None

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor, t: FixedType) -> torch.Tensor:
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

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor, t: FixedType) -> torch.Tensor:
        if frac_bits.dim() == 0:
            return fixed_cast(x, t.replace(int_bits=t.width - int(frac_bits)), training=self.training)
        return fixed_cast(x, t, frac_bits, training=self.training)


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

    def _fixed_forward(self, x: torch.Tensor, frac_bits: torch.Tensor, t: FixedType) -> torch.Tensor:
        if frac_bits.dim() == 0:
            return _KHotCast.apply(x, t.replace(int_bits=t.width - int(frac_bits)), self.k)
        # Per-channel binary points: the learned-cast function with a frozen parameter.
        return learned_int_bits_cast(x, self.base_type.width - frac_bits, self.base_type, khot=self.k)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

"""Custom autograd functions: the straight-through cast, the learnable binary point and word length.

Each docstring states its forward and backward formulas.  Notation:
``W`` word length, ``I`` integer bits, ``F = W - I``, ``s = 2**-F`` the LSB
(the step), ``Q`` the exact ``ap_fixed`` cast of :mod:`qfx.functional`,
``in(x)`` 1 where ``x`` lies in the range after rounding and 0 where it
overflowed.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Union

import torch

from . import fused
from .format import FixedType
from .functional import (FixedLike, cast_codes, cast_values, in_range_grad, saturating_cast_codes,
                         tensor_argument)
from .khot import khot_cast_codes

__all__ = ["quantize", "fixed_cast", "learned_int_bits_cast", "fused_training_cast", "fused_pair_cast",
           "fused_cast_moments", "point_weights", "point_gradient", "learned_width", "direct_apply"]

_LN2 = math.log(2.0)

# Power of the step that divides the binary-point gradient; see _LearnedIntBitsCast.
_STEP_POWER = 1.5


def direct_apply(function: type) -> Callable[..., object]:
    """``function.apply`` for a training step's fused nodes, without the per-call work of the Python wrapper
    ``torch.autograd.Function.apply`` adds to the C++ one (about 8 µs of a node's 18: binding default arguments
    for a ``setup_context`` these nodes do not define, and looking at every argument for a functorch wrapper
    left over from a transform that has ended); the wrapper itself while a functorch transform is active.

    Why: a training step of a quantized network makes about a hundred such nodes.
    """
    base = torch._C._FunctionBase.__dict__["apply"].__get__(None, function)
    wrapped = function.apply
    active = torch._C._are_functorch_transforms_active

    def apply(*args: object) -> object:
        return wrapped(*args) if active() else base(*args)

    return apply


class _FixedCast(torch.autograd.Function):
    """Forward ``q = Q(x)``.  Backward ``dL/dx = dL/dq * in(x)`` (straight-through inside the range).

    ``training=True`` casts ``AP_SAT`` types with
    :func:`~qfx.functional.saturating_cast_codes` (same values for finite
    ``x``, fewer passes, NaN not refused).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: FixedType, frac_bits, training: bool = False) -> torch.Tensor:
        fast = saturating_cast_codes(x.detach(), t, frac_bits) if training else None
        if fast is not None:
            codes, rounded = fast
            ctx.save_for_backward(rounded)
            ctx.t = t
        else:
            values, inside = cast_values(x.detach(), t, frac_bits, need_mask=ctx.needs_input_grad[0])
            ctx.save_for_backward(inside)
            ctx.t = None
            return values
        return _scale_codes(codes, t if frac_bits is None else frac_bits)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.t is not None:  # saved: the codes before saturation
            return in_range_grad(grad, saved, ctx.t), None, None, None
        return (grad if saved is None else grad * saved), None, None, None


def quantize(x: torch.Tensor, t: FixedLike) -> torch.Tensor:
    """Cast to ``t`` exactly as ``ap_fixed`` does; differentiable (straight-through).

    Forward:  ``q = overflow_t(round_t(x * 2**F)) * 2**-F`` with ``F = t.frac_bits``,
    equal element for element to ``t(x)`` compiled against Xilinx's
    ``ap_fixed.h``.  float64 in, float64 out (widths up to 53); float32 in,
    float32 out (widths up to 24).  NaN and Inf are refused.

    Backward: ``dq/dx = 1`` where ``x`` lies in ``t``'s range after rounding,
    ``0`` where it overflowed (saturated, zeroed or wrapped).
    """
    return fixed_cast(tensor_argument(x, "quantize"), FixedType.coerce(t))


def fixed_cast(x: torch.Tensor, t: FixedType, frac_bits: Optional[torch.Tensor] = None,
               training: bool = False) -> torch.Tensor:
    """``Q(x)`` with a straight-through gradient; ``frac_bits`` (broadcast against ``x``) overrides ``t``'s binary point.

    ``training=True`` takes the training-mode cast (see :class:`_FixedCast`).
    """
    return _FixedCast.apply(x, t, frac_bits, training)


def _scale_codes(codes: torch.Tensor, t_or_frac) -> torch.Tensor:
    """``codes * 2**-F`` in place; ``F`` from a type, an int or a tensor of (per-channel) binary points."""
    if isinstance(t_or_frac, FixedType):
        return codes.mul_(t_or_frac.lsb)
    if isinstance(t_or_frac, int):
        return codes.mul_(math.ldexp(1.0, -t_or_frac))
    if t_or_frac.dim() == 0:  # one binary point: a Python scalar multiplies fastest
        return codes.mul_(math.ldexp(1.0, -int(t_or_frac)))
    return codes.mul_(torch.exp2(-t_or_frac.to(codes.dtype)))


class _LearnedIntBitsCast(torch.autograd.Function):
    """Cast with a trained binary point.

    Forward:  ``I_r = round(I)`` (``I`` the float parameter, one per tensor or
    channel), ``q = Q_{W, I_r}(x)``, or the nearest K-hot value when ``khot=K``.

    Backward, with round treated as identity (straight-through):

    * ``dL/dx = dL/dq * in(x)``;
    * ``dL/dI = s**-1.5 * sum dL/dq * dq/dI`` (the sum over the elements that
      share the binary point), with ``dq/dI = ln 2 * s * dq/ds`` and the LSQ
      step gradient ``dq/ds = round(x/s) - x/s`` inside the range and the
      clipping code ``clamp(x/s, code_min, code_max)`` outside.  Hence
      ``dq/dI = ln 2 * (q - x)`` inside and ``ln 2 * clamp(x, min, max)``
      outside (the saturated value, also for WRAP types).

    Why this gradient: inside the range the summed term is ``ln 2 * (q-x)**2 / s``
    on average, which, in expectation over the rounding error, is the
    derivative of the rounding-noise power ``s**2/12`` with respect to
    ``log2 s``; outside it is the derivative of the clipping error.
    Descending it balances rounding noise against clipping, the trade-off the
    binary point decides (LSQ, Esser et al. 2020; thresholds trained in the
    log2 domain, Jain et al. 2020).

    ``training=True`` casts ``AP_SAT`` types with
    :func:`~qfx.functional.saturating_cast_codes` (same values for finite
    ``x``; it keeps the codes before saturation instead of a mask); the
    saturated value outside the range is then ``q`` itself, so
    ``sum dL/dq * dq/dI / ln 2 = sum dL/dq * q - sum dL/dx * x``: the
    backward pass is one fused pass for ``dL/dx``
    (:func:`~qfx.functional.in_range_grad`) and, for a single binary point,
    two dot products.  (``AP_RND_CONV`` with one binary point takes
    :func:`fused_training_cast` instead, from the quantizer modules.)

    Why ``s**-1.5``: for a reconstruction loss the noise terms shrink as
    ``s**2`` and the clipping terms roughly as ``s``.  Unscaled, a binary
    point that must come down six bits ends with gradients 4,096 times
    smaller than it started with, and Adam, which remembers early gradient
    magnitudes, stalls; divided by ``s**2`` the same happens to one that must
    climb.  A positive factor shared by all the terms of one binary point
    leaves the sign of its gradient, and so the balance point, unchanged;
    ``s**-1.5`` keeps both kinds of move going.  Clipping terms stay much
    larger than noise terms, so a binary point that clips is pushed out
    quickly and one that only rounds drifts in slowly, and the rounded
    binary point settles on the side that does not clip.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, int_bits: torch.Tensor, t: FixedType, khot: Optional[int],
                training: bool = False) -> torch.Tensor:
        if training and khot is None and int_bits.dim() == 0:
            # One binary point: a Python int saves a dozen small tensor ops per call, forward and
            # backward (Python's round, like torch.round, rounds half to even).
            frac_bits = t.width - round(float(int_bits.detach()))
        else:
            frac_bits = t.width - torch.round(int_bits.detach())
        fast = saturating_cast_codes(x.detach(), t, frac_bits) if training and khot is None else None
        ctx.saturating = fast is not None
        if fast is None and isinstance(frac_bits, int):
            frac_bits = torch.tensor(float(frac_bits))
        if fast is not None:
            codes, inside = fast  # "inside" holds the codes before saturation here
        elif khot is not None:
            codes, inside = khot_cast_codes(x.detach(), t, khot, frac_bits)
        else:
            codes, inside = cast_codes(x.detach(), t, frac_bits, need_mask=True)
        q = _scale_codes(codes, frac_bits).to(x.dtype)
        ctx.frac = frac_bits if isinstance(frac_bits, int) else None
        ctx.save_for_backward(x, q, inside, None if ctx.frac is not None else frac_bits)
        ctx.t = t
        ctx.int_bits_shape, ctx.int_bits_dtype = int_bits.shape, int_bits.dtype
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, q, inside, frac_bits = ctx.saved_tensors
        t = ctx.t
        if ctx.saturating:
            grad_x = in_range_grad(grad, inside, t)
        else:
            grad_x = grad if inside is None else grad * inside
        if not ctx.needs_input_grad[1]:
            return grad_x, None, None, None, None
        if ctx.frac is not None:  # one binary point, saturating: all in Python scalars
            # sum(grad * (q - in(x) * x)) as two fused dot products, without a tensor for the
            # difference; they differ by the rounding noise, and float32 dot products (blocked
            # accumulation) keep the difference to about 1e-5 relative of a float64 reference.
            grad_i = torch.dot(grad.reshape(-1), q.reshape(-1)) - torch.dot(grad_x.reshape(-1), x.reshape(-1))
            grad_i = grad_i * (_LN2 * 2.0 ** (_STEP_POWER * ctx.frac))  # ln 2 / step**1.5
            return grad_x, grad_i.reshape(ctx.int_bits_shape).to(ctx.int_bits_dtype), None, None, None
        step = torch.exp2(-frac_bits.to(x.dtype))
        if inside is None:
            dq_di = q - x
        elif ctx.saturating:  # AP_SAT: outside the range q is the saturated value
            dq_di = q - in_range_grad(x, inside, t)
        else:
            saturated = torch.minimum(torch.maximum(x, t.code_min * step), t.code_max * step)
            dq_di = torch.where(inside, q - x, saturated)
        grad_i = _sum_products(grad, dq_di, frac_bits.shape)
        grad_i = (grad_i * (_LN2 / step.reshape(frac_bits.shape) ** _STEP_POWER)).reshape(ctx.int_bits_shape)
        return grad_x, grad_i.to(ctx.int_bits_dtype), None, None, None


def _sum_products(a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``sum(a * b)`` over the dimensions broadcast from ``shape``; one fused dot product for a scalar."""
    if len(shape) == 0 or all(n == 1 for n in shape):
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(shape)
    return _sum_to_shape(a * b, shape)


def _sum_to_shape(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``g`` over the dimensions that broadcasting expanded from ``shape``."""
    lead = g.dim() - len(shape)
    dims = list(range(lead)) + [lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1]
    return g.sum(dim=dims, keepdim=True).reshape(shape) if dims else g.reshape(shape)


def learned_int_bits_cast(x: torch.Tensor, int_bits: torch.Tensor, t: FixedType,
                          view_shape: Optional[tuple[int, ...]] = None, khot: Optional[int] = None,
                          training: bool = False) -> torch.Tensor:
    """``Q_{W, round(I)}(x)`` with gradients to ``x`` and to the float parameter ``int_bits``.

    ``training=True`` takes the training-mode cast (see :class:`_LearnedIntBitsCast`).

    With ``khot=K`` the forward pass is the nearest K-hot value instead of ``t``'s cast.
    ``view_shape`` reshapes a per-channel ``int_bits`` so it broadcasts
    against ``x`` (e.g. ``(1, C, 1, 1)``); the gradient comes back in
    ``int_bits``'s own shape.
    """
    shaped = int_bits if view_shape is None else int_bits.view(view_shape)
    return _LearnedIntBitsCast.apply(x, shaped, t, khot, training)


class _FusedCast(torch.autograd.Function):
    """Forward ``q = Q(r)`` with ``r = v`` (or ``max(v, 0)`` after a ReLU), ``v = x * scale + shift`` per channel
    (or ``v = x``), ``Q`` a cast :mod:`qfx.fused` takes (rounding ``AP_RND_CONV``, ``AP_TRN`` or ``AP_RND``;
    overflow ``AP_SAT``, ``AP_SAT_ZERO``, ``AP_SAT_SYM`` or ``AP_WRAP``) with one binary point or one per channel;
    ``q`` comes computed (``fused.cast_forward``), so that the caller can fall back where the kernel declines,
    in a tuple: autograd takes it for a new tensor, not for an input it would have to return as a view of itself.

    Backward, with ``in(r)`` the range test of :class:`_FixedCast` (and ``v > 0`` after a ReLU):
    ``dL/dv = dL/dq * in(r)``; ``dL/dx = dL/dv * scale``; ``dL/dscale =
    sum dL/dv * x`` and ``dL/dshift = sum dL/dv`` per channel; for a learned
    binary point the gradient of :class:`_LearnedIntBitsCast`,
    ``dL/dI = ln 2 * s**-1.5 * (sum dL/dq * d - sum dL/dv * r)`` with
    ``d = q`` in range and ``d = clamp(r, min, max)`` outside (for ``AP_SAT``
    that is ``q`` itself), the sums over the elements that share the binary
    point.  The binary point's gradient goes to ``target`` (``int_bits``, or
    a parameter that moves it), times ``factor`` (multiplied into the float64
    weights before the one rounding: exact for a power of two), and is handed
    to ``check`` (if given) before it is returned where it may not be finite:
    where the kernel found it not finite, or PyTorch operations formed it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor],
                target: torch.Tensor, p: Union[fused.NearestEven, fused.Table],
                frac_bits: Union[int, range], computed: tuple[torch.Tensor], kernels: bool, factor: float,
                check: Optional[Callable[[torch.Tensor], None]]) -> torch.Tensor:
        q = computed[0]
        ctx.save_for_backward(x, q, scale, shift)
        # A tuple: view() parses a torch.Size several times slower.
        ctx.p, ctx.frac, ctx.target_shape, ctx.kernels = p, frac_bits, tuple(target.shape), kernels
        ctx.factor, ctx.check = factor, check
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, q, scale, shift = ctx.saved_tensors
        grad_x, grad_i, grad_scale, grad_shift, finite = fused.cast_backward(
            grad, x, q, ctx.p, scale, shift, point_weights(ctx.frac, ctx.factor), ctx.kernels)
        grad_i = point_gradient(grad_i, ctx.needs_input_grad[3], ctx.target_shape, ctx.check, finite)
        return grad_x, grad_scale, grad_shift, grad_i, None, None, None, None, None, None


@functools.lru_cache(maxsize=4096)
def point_weights(frac_bits: Union[int, range], factor: float = 1.0) -> torch.Tensor:
    """``factor * ln 2 / step**1.5`` per binary point (float64; one, or one per row of a per-channel
    :class:`qfx.fused.Table`): turns the sums of :func:`qfx.fused.cast_backward` into gradients."""
    fracs = (frac_bits,) if isinstance(frac_bits, int) else frac_bits
    return torch.tensor([_point_weight(f, factor) for f in fracs], dtype=torch.float64)


@functools.lru_cache(maxsize=4096)
def _point_weight(frac_bits: int, factor: float) -> float:
    try:
        return factor * _LN2 * 2.0 ** (_STEP_POWER * frac_bits)
    except OverflowError:  # past float64: a binary point no gradient can be formed for (it comes out infinite)
        return math.inf


def point_gradient(point: Optional[torch.Tensor], needed: bool, shape: tuple[int, ...],
                   check: Optional[Callable[[torch.Tensor], None]], finite: Optional[bool]) -> Optional[torch.Tensor]:
    """A fused node's gradient of a binary point, viewed as ``shape`` (its target's), or ``None`` where the target
    needs none; handed to ``check`` first unless the kernel found it ``finite`` (``None``: nobody looked)."""
    if not needed or point is None:
        return None
    if point.shape != shape:
        point = point.view(shape)
    if check is not None and not finite:
        check(point)
    return point


def _detached(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach()


_fused_cast_node = direct_apply(_FusedCast)


def fused_training_cast(x: torch.Tensor, t: FixedType, int_bits: torch.Tensor, channel_dim: Optional[int] = None,
                        scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                        relu: bool = False, move: Optional[torch.Tensor] = None, move_factor: float = 1.0,
                        check: Optional[Callable[[torch.Tensor], None]] = None) -> Optional[torch.Tensor]:
    """Training-mode ``Q(relu?(x * scale + shift))`` in one fused pass each way, or ``None`` where it does not apply.

    ``t`` is the format and ``int_bits`` its binary point, rounded half to
    even: 0-d, or one per channel along ``channel_dim``; a learned
    parameter receives its gradient.  ``scale`` and ``shift`` (together, one
    per channel of dimension 1, cast to ``x``'s dtype) apply before the cast.
    ``AP_RND_CONV``/``AP_SAT`` with one binary point always applies where
    :func:`qfx.fused.nearest_even` takes the format (PyTorch operations
    without the kernels); the other formats of :mod:`qfx.fused`, and binary
    points per channel, where the native kernels take ``x`` (runs along the
    channel dimension long enough) and every value, and, per channel,
    without a scale.  ``None`` elsewhere: the caller then composes the
    operations itself.  Values equal the exact cast of ``relu(x * scale +
    shift)`` computed in ``x``'s dtype; gradients as :class:`_FusedCast`.

    ``move`` (shaped like ``int_bits``; a learned parameter the caller keeps
    at 0 in value) receives the binary point's gradient ``dL/dI`` times
    ``move_factor`` instead of ``int_bits``, and ``check`` is called with it:
    a quantizer's parameterization of its binary point, without an autograd
    node of its own.
    """
    if scale is not None:
        scale, shift = scale.to(x.dtype), shift.to(x.dtype)
    if int_bits.dim() == 0:
        frac_bits: Union[int, range, None] = t.width - round(float(int_bits))
        kernels = fused.kernels_take(x, scale, shift)
        p = fused.nearest_even(t, frac_bits, x.dtype)
        if p is not None:
            p = p.after_relu() if relu else p
        elif kernels:
            p = fused.fixed_table(t, frac_bits, x.dtype, relu)
    elif scale is None and fused.native.applies(x) and fused.native.long_runs(x, channel_dim % x.dim()):
        p, kernels = fused.channel_table(t, int_bits.detach(), x.dtype, channel_dim % x.dim(), relu), True
        frac_bits = None if p is None else p.fracs
    else:
        return None
    if p is None:
        return None
    q = fused.cast_forward(x.detach(), p, _detached(scale), _detached(shift), kernels)
    if q is None:
        return None
    if move is None:
        move, move_factor = int_bits, 1.0
    return _fused_cast_node(x, scale, shift, move, p, frac_bits, (q,), kernels, move_factor, check)


class _FusedPair(torch.autograd.Function):
    """Forward ``q1 = Q1(v)`` and ``q2 = Q2(max(q1, 0))`` (``v`` as in :class:`_FusedCast`): a cast, then a ReLU
    and a second cast, both outputs computed already (``fused.pair_forward``) and handed over in a tuple, as
    :class:`_FusedCast` takes its ``q``.

    Backward: what :class:`_FusedCast` gives each cast, chained: ``dL/dq1 = dL/dq1' + dL/dq2 * in2(q1) *
    (q1 > 0)`` (``dL/dq1'`` where ``q1`` also reaches the loss another way), then ``dL/dx``, ``dL/dscale``,
    ``dL/dshift`` and the first binary point's gradient from ``dL/dq1``, the second's from ``dL/dq2``; each
    binary point's gradient goes to its ``target`` times its ``factor`` and through its ``check``.  Only
    ``x`` (and the scale and shift) are saved: ``q1`` is recomputed, so it is freed once the ReLU has
    read it.

    Why: a BatchNorm or a residual sum followed by a ReLU would otherwise be two autograd nodes and two
    passes each way over memory, and keep ``q1`` alive until the backward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor],
                target1: torch.Tensor, target2: torch.Tensor, casts: tuple,
                computed: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, scale, shift)
        ctx.casts, ctx.shapes = casts, (tuple(target1.shape), tuple(target2.shape))
        return computed

    @staticmethod
    def backward(ctx, grad1: Optional[torch.Tensor], grad2: Optional[torch.Tensor]):
        x, scale, shift = ctx.saved_tensors
        (p1, frac1, factor1, check1), (p2, frac2, factor2, check2) = ctx.casts
        if grad2 is None and grad1 is None:
            return None, None, None, None, None, None, None
        if grad2 is None:  # q2 unused: the first cast's backward alone
            grad_x, point1, grad_scale, grad_shift, finite = fused.cast_backward(
                grad1, x, None, p1, scale, shift, point_weights(frac1, factor1), True)
            point2 = None
        else:
            grad_x, point1, point2, grad_scale, grad_shift, finite = fused.pair_backward(
                grad1, grad2, x, p1, p2, scale, shift, point_weights(frac1, factor1),
                point_weights(frac2, factor2))
        point1 = point_gradient(point1, ctx.needs_input_grad[3], ctx.shapes[0], check1, finite)
        point2 = point_gradient(point2, ctx.needs_input_grad[4], ctx.shapes[1], check2, finite)
        return grad_x, grad_scale, grad_shift, point1, point2, None, None


_fused_pair_node = direct_apply(_FusedPair)


def fused_pair_cast(x: torch.Tensor, first: tuple, second: tuple, scale: Optional[torch.Tensor] = None,
                    shift: Optional[torch.Tensor] = None) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Training-mode ``q1 = Q1(x * scale + shift)`` (or ``Q1(x)``) and ``q2 = Q2(max(q1, 0))`` in one fused pass each
    way (see :class:`_FusedPair`), or ``None`` where the native kernels do not take ``x``, a format or a value.

    ``first`` and ``second`` are each ``(t, int_bits, target, factor, check)``: the format, its one binary
    point (0-d, rounded half to even), the tensor that receives the binary point's gradient times ``factor``
    (``int_bits`` itself, or the parameter that moves it, as ``move`` in :func:`fused_training_cast`) and
    the function that gets to see that gradient first (or ``None``).  ``scale`` and ``shift`` (together, one
    per channel of dimension 1) are cast to ``x``'s dtype.  Values equal the two casts of
    :func:`fused_training_cast` one after the other (the second with ``relu=True``), bit for bit, and so do
    the input gradients; the second binary point's gradient sums the same terms in another order.
    """
    if scale is not None:
        scale, shift = scale.to(x.dtype), shift.to(x.dtype)
    if not fused.kernels_take(x, scale, shift):
        return None
    casts, tables = [], []
    for (t, bits, target, factor, check), relu in ((first, False), (second, True)):
        if bits.dim() != 0:
            return None
        frac_bits = t.width - round(float(bits))
        p = fused.fixed_table(t, frac_bits, x.dtype, relu)
        if p is None:
            return None
        casts.append((p, frac_bits, factor, check))
        tables.append(p)
    computed = fused.pair_forward(x.detach(), tables[0], tables[1], _detached(scale), _detached(shift))
    if computed is None:
        return None
    return _fused_pair_node(x, scale, shift, first[2], second[2], tuple(casts), computed)


class _CastMoments(torch.autograd.Function):
    """Forward ``q = Q(x)`` (one binary point) and the per-channel (dimension 1) ``mean`` and biased ``var`` of
    ``q``, all computed already (``fused.cast_moments``) and handed over in a tuple, as :class:`_FusedCast`
    takes its ``q``: a layer's output cast and the batch statistics of the BatchNorm that reads it.

    Backward: ``dL/dq' = dL/dq + (dL/dmean + 2 * dL/dvar * (q - mean)) / n`` (``n`` the values per channel: the
    gradient of the statistics, as :class:`qfx.nn.batchnorm._BatchStatistics` forms it), then the cast's
    (:class:`_FusedCast`) with ``dL/dq'``; the binary point's gradient goes to ``target`` times ``factor``
    and through ``check``.  Only ``x`` and ``mean`` are saved; ``q`` is recomputed.

    Why: the output cast and the statistics would otherwise be two nodes and two passes each way.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, cast: tuple,
                computed: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = computed[1]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, mean)
        ctx.cast, ctx.shape = cast, tuple(target.shape)
        return computed

    @staticmethod
    def backward(ctx, grad_q: Optional[torch.Tensor], grad_mean: Optional[torch.Tensor],
                 grad_var: Optional[torch.Tensor]):
        x, mean = ctx.saved_tensors
        p, frac_bits, factor, check = ctx.cast
        if grad_q is None and grad_mean is None and grad_var is None:
            return None, None, None, None
        grad_q = torch.zeros_like(x) if grad_q is None else grad_q
        grad_x, point, finite = fused.cast_moments_backward(grad_q, x, p, grad_mean, grad_var, mean,
                                                            point_weights(frac_bits, factor))
        return grad_x, point_gradient(point, ctx.needs_input_grad[1], ctx.shape, check, finite), None, None


_cast_moments_node = direct_apply(_CastMoments)


def fused_cast_moments(x: torch.Tensor, cast: tuple) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Training-mode ``q = Q(x)`` with the per-channel (dimension 1) mean and biased variance of ``q`` in one fused
    pass each way (see :class:`_CastMoments`), or ``None`` where the native kernels do not take ``x``, the
    format or a value.

    ``cast`` is ``(t, int_bits, target, factor, check)`` as in :func:`fused_pair_cast`, one binary point.
    Values equal :func:`fused_training_cast` followed by :func:`qfx.fused.batch_moments`, bit for bit, and so
    does the input gradient; the binary point's gradient sums the same terms in another order.
    """
    t, bits, target, factor, check = cast
    if bits.dim() != 0 or x.dim() < 2 or not fused.kernels_take(x) or not fused.native.long_runs(x, 1):
        return None
    frac_bits = t.width - round(float(bits))
    p = fused.fixed_table(t, frac_bits, x.dtype)
    computed = None if p is None else fused.cast_moments(x.detach(), p)
    if computed is None:
        return None
    return _cast_moments_node(x, target, (p, frac_bits, factor, check), computed)


class _LearnedWidth(torch.autograd.Function):
    """The gradient of a learned word length ``W``, attached to a cast already done.

    Forward: ``q`` unchanged (``q = Q_{round(W), I}(v)``, cast by the caller
    with its binary point ``I``); ``W`` (a 0-d tensor) only receives a gradient.

    Backward: ``dL/dq`` passes on unchanged (to the cast, which gives ``v``
    and ``I`` theirs), and, with round treated as identity and ``I`` held,
    ``W`` moves only the fractional bits ``F = W - I``, i.e. the step
    ``s = 2**-F``, not the range::

        dq/dW = -ln 2 * s * dq/ds = -ln 2 * (q - v)    where v rounded (|q - v| <= s/2)
        dq/dW = 0                                      where v saturated (the range is I's)
        dL/dW = sum dL/dq * dq/dW                      over the elements of the tensor

    the LSQ step gradient (as for the binary point, :class:`_LearnedIntBitsCast`)
    in the log2 domain of the step, unscaled: in expectation over the rounding
    error it is ``-ln 2`` times the loss's curvature times the noise power
    ``s**2/12``, so it always asks for more bits, less the more bits there are.
    A cost (``lambda * qfx.bit_cost(model)``, differentiable in ``W``) pulls
    the other way; the word length settles where the two balance.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, v: torch.Tensor, width: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, v, step)
        return q.view_as(q)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, v, step = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[2]:
            error = q - v
            rounded = error.abs() <= step / 2
            grad_w = (-_LN2 * torch.where(rounded, grad * error, torch.zeros((), dtype=grad.dtype)).sum()).reshape(())
        return grad, None, grad_w, None


def learned_width(q: torch.Tensor, v: torch.Tensor, width: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``q`` (the cast of ``v``) with the gradient of the learned word length ``width`` (0-d) attached
    (see :class:`_LearnedWidth`); ``step`` is ``2**-F``, broadcast against ``v``."""
    return _LearnedWidth.apply(q, v, width, step)

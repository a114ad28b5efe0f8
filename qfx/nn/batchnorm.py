"""Batch normalization as one multiply-add per element: ``QBatchNorm1d``, ``QBatchNorm2d``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import fused
from ..autograd import direct_apply, point_gradient, point_weights
from .config import LayerQConfig, make_quantizer
from .exact import as_float, cast, cast_output, compact, exact_add, exact_dtype
from .layer import FixedConstant, QuantizedLayer, fixed_constant

__all__ = ["QBatchNorm1d", "QBatchNorm2d"]

_NUMERICS = """
    Numerics: per channel ``c``, with the statistics folded into two constants::

        scale[c] = gamma[c] / sqrt(var[c] + eps)
        shift[c] = beta[c] - mean[c] * scale[c]
        y        = Qout(x * Qs(scale[c]) + Qsh(shift[c]))     # product and sum exact

    ``Qs`` is ``cfg.scale`` (K-hot when ``cfg.scale_khot``: a multiplier-free
    scale) and ``Qsh`` ``cfg.shift``, each with one binary point per channel;
    ``Qout`` is ``cfg.output``.  ``x`` must already be fixed-point with one
    binary point and at most ``input_width`` bits.

    Eval mode (bit-exact): ``mean`` and ``var`` are the running statistics;
    ``scale`` and ``shift`` are computed in float64 and quantized, and
    :meth:`constants` returns exactly those quantized constants.  The product
    runs in float32 when ``input_width + scale width <= 24``, else in float64
    (an error beyond 53 bits); the shift is added in the same dtype if that
    is exact (checked with TwoSum), else in float64.  The output is returned
    in the input's dtype when it holds ``cfg.output``, else in float64.

    Training mode: like ``torch.nn.BatchNorm``, ``mean`` and ``var`` are the
    batch's (biased variance), and the running statistics are updated with
    ``momentum`` (unbiased variance; ``momentum=None`` is a cumulative
    average).  The same formula then runs as fake quantization in the input's
    dtype, with gradients to ``x`` (also through the statistics), ``gamma``,
    ``beta`` and, when ``cfg.learn_int_bits``, every binary point.
"""


class _BatchStatistics(torch.autograd.Function):
    """Forward: per-channel (dimension 1) ``mean`` and biased ``var`` of ``x``, as ``torch.var_mean`` gives them,
    and ``x`` itself (a view), for the layer to go on with.

    Backward: ``dL/dx = dL/dx' + (dL/dmean + 2 * dL/dvar * (x - mean)) / n``,
    ``n`` the values per channel and ``x'`` the returned view: the gradient
    of ``torch.var_mean`` added to the one from the rest of the layer, in
    one pass (:func:`qfx.fused.channel_affine`).  Returning ``x`` spares
    autograd a separate pass that would add the two gradients of ``x``.

    Why not ``torch.var_mean``: on the CPU its reduction over ``(0, 2, 3)``
    of an NCHW tensor is several times slower than
    :func:`qfx.fused.batch_moments` (a native kernel that reads ``x`` once
    and writes nothing), and its backward takes several passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var = fused.batch_moments(x.detach())
        ctx.save_for_backward(x, mean)
        ctx.n = x.numel() // mean.numel()
        return mean, var, x

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_var: torch.Tensor, grad_x: torch.Tensor):
        x, mean = ctx.saved_tensors
        slope = grad_var * (2 / ctx.n)
        offset = grad_mean / ctx.n - slope * mean
        return fused.channel_affine(x, slope.contiguous(), offset.contiguous(), grad_x)


def _reciprocal_root(var: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / sqrt(var + eps)`` as PyTorch rounds it (its square root is not always correctly rounded, so the
    native fold takes this from here)."""
    return torch.sqrt(var + eps).reciprocal()


def _fold_values(mean: torch.Tensor, var: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                 eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scale, shift, r)`` of :class:`_FoldStatistics`, ``r = 1 / sqrt(var + eps)``."""
    r = _reciprocal_root(var, eps)
    scale = r if gamma is None else gamma.to(mean.dtype) * r
    shift = -mean * scale if beta is None else beta.to(mean.dtype) - mean * scale
    return scale, shift, r


class _FoldStatistics(torch.autograd.Function):
    """Forward: ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale`` per channel, rounding as
    the PyTorch ops of :meth:`_QBatchNorm._fold` do (``1 / sqrt(var + eps)``, then times ``gamma``); without
    ``gamma`` or ``beta`` (``affine=False``) ``scale = 1 / sqrt(var + eps)`` and ``shift = -mean * scale``.
    With ``casts`` (see :meth:`_QBatchNorm._fold_and_cast`), ``Qs(scale)`` and ``Qsh(shift)`` instead: the
    training casts of the two per-channel quantizers, done already with the fold
    (:func:`qfx.fused.fold_forward`).

    Backward, with ``r = 1 / sqrt(var + eps)`` and ``g_scale' = dL/dscale - dL/dshift * mean`` (the scale
    reaches the loss also through the shift): ``dL/dbeta = dL/dshift``, ``dL/dmean = -dL/dshift * scale``,
    ``dL/dgamma = g_scale' * r``, ``dL/dvar = -g_scale' * gamma * r**3 / 2``.  With ``casts``, ``dL/dscale``
    and ``dL/dshift`` first come through the casts (as the quantizers' own casts give them), whose binary
    points' gradients go to ``target_scale`` and ``target_shift``, all of it one native call
    (:func:`qfx.fused.fold_backward`).

    Why one node: training folds the statistics every step in every BatchNorm, and the seven small
    operations it takes, and the two casts after them, cost, as autograd nodes, more than the arithmetic
    itself.
    """

    @staticmethod
    def forward(ctx, mean: torch.Tensor, var: torch.Tensor, gamma: Optional[torch.Tensor],
                beta: Optional[torch.Tensor], eps: float, target_scale: Optional[torch.Tensor] = None,
                target_shift: Optional[torch.Tensor] = None, casts: Optional[tuple] = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.beta_dtype = None if beta is None else beta.dtype
        ctx.casts = None if casts is None else casts[2:]
        if casts is None:
            scale, shift, r = _fold_values(mean, var, gamma, beta, eps)
            ctx.save_for_backward(mean, scale, shift, r, gamma)
            return scale, shift
        # The outputs stay out of ctx: a node holding its own outputs would never be freed.
        (scale, shift, r), (qscale, qshift) = casts[:2]
        ctx.save_for_backward(mean, scale, shift, r, gamma)
        ctx.target_shapes = (tuple(target_scale.shape), tuple(target_shift.shape))
        return qscale, qshift

    @staticmethod
    def backward(ctx, grad_scale: torch.Tensor, grad_shift: torch.Tensor):
        mean, scale, shift, r, gamma = ctx.saved_tensors
        if ctx.casts is not None:
            tables, weights, checks = ctx.casts
            computed, finite = fused.fold_backward(grad_scale, grad_shift, (scale, shift, mean, r), gamma, tables,
                                                   weights)
            grad_mean, grad_var, grad_gamma, grad_beta, *found = computed
            points = [point_gradient(point, needed, shape, check, finite) for point, needed, shape, check
                      in zip(found, ctx.needs_input_grad[5:7], ctx.target_shapes, checks)]
            grad_beta = None if ctx.beta_dtype is None else grad_beta
            return grad_mean, grad_var, grad_gamma, grad_beta, None, points[0], points[1], None
        grad_scale = grad_scale - grad_shift * mean
        grad_mean = -grad_shift * scale
        grad_gamma = None if gamma is None else (grad_scale * r).to(gamma.dtype)
        slope = r if gamma is None else gamma.to(r.dtype) * r
        grad_var = grad_scale * slope * r * r * -0.5
        grad_beta = None if ctx.beta_dtype is None else grad_shift.to(ctx.beta_dtype)
        return grad_mean, grad_var, grad_gamma, grad_beta, None, None, None, None


_fold_node = direct_apply(_FoldStatistics)


class _QBatchNorm(QuantizedLayer):
    """Parameters, running statistics and numerics shared by the 1-d and 2-d layers."""

    _float_type: type = nn.Module
    _input_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.register_parameter("weight", nn.Parameter(torch.ones(num_features)) if affine else None)
        self.register_parameter("bias", nn.Parameter(torch.zeros(num_features)) if affine else None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        #: Word length of the input's format; the converter sets it from the producer's output format.
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        self.scale_quantizer = make_quantizer(cfg.scale, cfg.learn_int_bits, cfg.scale_khot, "channel",
                                              channel_dim=0, num_channels=num_features)
        self.shift_quantizer = make_quantizer(cfg.shift, cfg.learn_int_bits, None, "channel",
                                              channel_dim=0, num_channels=num_features)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"input_width={self.input_width}")

    # ---------------------------------------------------------- constants
    def _fold(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale`` in ``mean``'s dtype."""
        scale, shift, _ = _fold_values(mean, var, self.weight, self.bias, self.eps)
        return scale, shift

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float64 scale and shift of eval mode (running statistics), before quantization."""
        return self._fold(self.running_mean.double(), self.running_var.double())

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized per-channel ``scale`` and ``shift`` that eval mode uses, with codes and formats."""
        scale, shift = self.folded()
        return {"scale": fixed_constant(self.scale_quantizer, scale),
                "shift": fixed_constant(self.shift_quantizer, shift)}

    # ------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in self._input_dims or x.shape[1] != self.num_features:
            dims = " or ".join(f"{d}-d" for d in self._input_dims)
            raise ValueError(f"{self.describe()} expects a {dims} input with {self.num_features} channels in "
                             f"dimension 1, got shape {tuple(x.shape)}")

    def _batch_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's mean and biased variance per channel, and ``x`` to go on with (see :class:`_BatchStatistics`);
        updates the running statistics."""
        count = x.numel() // self.num_features
        if count < 2:
            raise ValueError(f"{self.describe()} needs more than one value per channel in training mode to form "
                             f"batch statistics, got input shape {tuple(x.shape)}; use a larger batch or eval mode")
        handed = getattr(x, "_qfx_batch_statistics", None)
        if handed is not None and handed[0] == id(self) and handed[1] == x._version:
            mean, var = handed[2], handed[3]  # computed with x by the layer paired with this one
        else:
            mean, var, x = _BatchStatistics.apply(x)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            unbiased = var * (count / (count - 1))
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return mean, var, x

    def _fold_and_cast(self, mean: torch.Tensor, var: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Training: ``Qs(scale)`` and ``Qsh(shift)`` from the batch statistics as one autograd node
        (:class:`_FoldStatistics` with its casts, :func:`qfx.fused.fold_forward`), or ``None`` where the quantizers'
        own casts must run: the native kernels do not take the tensors, the format or the values, or a quantizer
        is K-hot, learns its word length or has hooks."""
        operands = [q.training_operand(mean) for q in (self.scale_quantizer, self.shift_quantizer)]
        if None in operands:
            return None
        with torch.no_grad():
            r = _reciprocal_root(var, self.eps)
        folded = fused.fold_forward(mean, r, self.weight, self.bias, operands[0][:2], operands[1][:2])
        if folded is None:
            return None
        (scale, shift), quantized, tables = folded
        weights = tuple(point_weights(every.fracs, operand[3]) for (every, _), operand in zip(tables, operands))
        checks = tuple(operand[4] for operand in operands)
        return _fold_node(mean, var, self.weight, self.bias, self.eps, operands[0][2], operands[1][2],
                          ((scale, shift, r), quantized, tables, weights, checks))

    def compute_dtype(self) -> torch.dtype:
        """The dtype eval mode multiplies in (float32 or float64); ``ValueError`` beyond 53 bits."""
        terms = [("input_width", self.input_width), ("scale width", self.scale_quantizer.base_type.width)]
        return exact_dtype(terms, self.describe(), "narrow the input format (input_width) or cfg.scale")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = as_float(x)
        view = (1, self.num_features) + (1,) * (x.dim() - 2)
        if self.training:
            mean, var, x = self._batch_statistics(x)
            folded = self._fold_and_cast(mean, var)
            if folded is None:
                scale, shift = _FoldStatistics.apply(mean, var, self.weight, self.bias, self.eps)
                folded = cast(self.scale_quantizer, scale), cast(self.shift_quantizer, shift)
            s, sh = folded
            paired = self._cast_output_then_relu(x, s, sh)
            if paired is not None:
                return paired
            return cast_output(self.output_quantizer, x, x.dtype, exact=False, scale=s, shift=sh)
        scale, shift = self.folded()
        s, sh = cast(self.scale_quantizer, scale), cast(self.shift_quantizer, shift)
        dtype = self.compute_dtype()
        product = x.to(dtype) * s.to(dtype).view(view)
        y = exact_add(product, compact(sh).view(view), f"{self.describe()} adding the shift",
                      "narrow cfg.shift or bring its binary point nearer the products'")
        return cast_output(self.output_quantizer, y, x.dtype, exact=True)

    # --------------------------------------------------------- conversion
    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "_QBatchNorm":
        """A quantized batch norm with ``module``'s eps, momentum, affine parameters and running statistics."""
        if not isinstance(module, cls._float_type):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(module).__name__}")
        if not module.track_running_stats or module.running_mean is None:
            raise ValueError(f"{cls.__name__}.from_float: the BatchNorm has track_running_stats=False, but the "
                             "hardware needs fixed constants from running statistics; train it with "
                             "track_running_stats=True")
        layer = cls(module.num_features, module.eps, module.momentum, module.affine, cfg=cfg,
                    input_width=input_width)
        with torch.no_grad():
            for name in ("weight", "bias"):
                if module.affine:
                    setattr(layer, name, nn.Parameter(getattr(module, name).detach().clone()))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(layer, name, getattr(module, name).detach().clone())
        return layer.to(module.running_mean.device)


def _batchnorm_doc(dims: int, shape: str) -> str:
    return f"""Batch normalization over {shape} fixed-point inputs.

    Args:
        num_features, eps, momentum, affine: as :class:`torch.nn.BatchNorm{dims}d`
            (running statistics are always tracked).
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """ + _NUMERICS


class QBatchNorm1d(_QBatchNorm):
    __doc__ = _batchnorm_doc(1, "``(N, C)`` or ``(N, C, L)``")
    _float_type = nn.BatchNorm1d
    _input_dims = (2, 3)


class QBatchNorm2d(_QBatchNorm):
    __doc__ = _batchnorm_doc(2, "``(N, C, H, W)``")
    _float_type = nn.BatchNorm2d
    _input_dims = (4,)

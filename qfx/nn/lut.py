"""Elementwise functions by exact lookup table: :class:`QTable` (sigmoid, tanh, GELU, exp, 1/x, any function).

A table is a function's values at every code of a small input format,
cast once, from float64, to the output format.  It is the definition of
the layer: training, eval and every back end read the same codes.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..format import FixedType
from ..functional import to_codes
from .config import LayerQConfig, make_quantizer
from .exact import as_float
from .layer import FixedConstant, QuantizedLayer

__all__ = ["QTable", "TABLE_MODULES", "TABLE_FUNCTIONS", "table_function", "DEFAULT_TABLE_WIDTH"]

#: Word length of the table's input format when ``cfg.table`` is not given: 1024 entries.
DEFAULT_TABLE_WIDTH = 10


def _module_function(module: nn.Module) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The name and the float function of a supported activation module (its hyperparameters bound)."""
    if isinstance(module, nn.GELU):
        return f"gelu({module.approximate})", lambda x: F.gelu(x, approximate=module.approximate)
    if isinstance(module, nn.ELU):
        return f"elu(alpha={module.alpha})", lambda x: F.elu(x, module.alpha)
    if isinstance(module, nn.Softplus):
        return (f"softplus(beta={module.beta}, threshold={module.threshold})",
                lambda x: F.softplus(x, module.beta, module.threshold))
    return TABLE_MODULES[type(module)], module.forward


#: Float modules a table replaces, with the function's name in the IR.
TABLE_MODULES: dict[type, str] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.GELU: "gelu", nn.ELU: "elu",
    nn.Softplus: "softplus", nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish",
}

#: Functions and tensor methods a table replaces when called with one tensor argument.
TABLE_FUNCTIONS: dict[object, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    torch.sigmoid: ("sigmoid", torch.sigmoid), F.sigmoid: ("sigmoid", torch.sigmoid),
    torch.tanh: ("tanh", torch.tanh), F.tanh: ("tanh", torch.tanh), F.silu: ("silu", F.silu),
    F.gelu: ("gelu(none)", F.gelu), F.elu: ("elu(alpha=1.0)", F.elu), F.softplus: ("softplus", F.softplus),
    F.hardsigmoid: ("hardsigmoid", F.hardsigmoid), F.hardswish: ("hardswish", F.hardswish),
    torch.exp: ("exp", torch.exp), torch.reciprocal: ("reciprocal", torch.reciprocal),
    "sigmoid": ("sigmoid", torch.sigmoid), "tanh": ("tanh", torch.tanh), "exp": ("exp", torch.exp),
    "reciprocal": ("reciprocal", torch.reciprocal),
}


def table_function(target: object, kwargs: Optional[dict] = None
                   ) -> Optional[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """``(name, function)`` for a module, or a function or method name called with ``kwargs``, that a table can
    replace; else ``None``.  ``inplace`` changes nothing; ``F.gelu`` takes ``approximate``."""
    if isinstance(target, nn.Module):
        return _module_function(target) if type(target) in TABLE_MODULES else None
    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "inplace"}
    try:
        found = TABLE_FUNCTIONS.get(target)
    except TypeError:  # unhashable
        return None
    if found is not None and target is F.gelu and set(kwargs) <= {"approximate"}:
        approximate = kwargs.get("approximate", "none")
        return f"gelu({approximate})", lambda x: F.gelu(x, approximate=approximate)
    return found if not kwargs else None


class _Lookup(torch.autograd.Function):
    """Forward: ``values[index]`` (a gather).  Backward: ``grad * f'(x)``, the function's derivative at ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, values: torch.Tensor, function) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.function = function
        return values[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            at = x.detach().double().requires_grad_()
            (slope,) = torch.autograd.grad(ctx.function(at).sum(), at)
        return (grad * slope.to(grad.dtype)).to(x.dtype), None, None, None


class QTable(QuantizedLayer):
    """``y = table[Qtable(x)]``: an elementwise function by lookup table.

    Numerics: ``x`` is cast to the table's input format ``Qtable``
    (``cfg.table``; default a 10-bit format with the output's modes), whose
    ``2**W`` codes address the table.  Entry ``k`` is ``Qout(f(v_k))`` for
    ``v_k`` the value of the ``k``-th code from the lowest: ``f`` computed
    once in float64 and cast by the exact ``ap_fixed`` cast to the output
    format (``cfg.output``; ``+-inf`` count as the largest double of their
    sign, NaN is refused).  Eval and training both gather from the float64
    values of ``f`` and cast them with the output quantizer, which gives the
    table's codes bit for bit; the table is rebuilt only when a binary point
    moves.  Backward: ``f'(x)`` at the table's input (by autograd through
    ``f`` in float64), straight through ``Qtable`` (zero where it
    saturated), and, when ``cfg.learn_int_bits``, gradients to both binary
    points.  Eval mode returns the input's dtype when it holds the output
    format, else float64.

    Args:
        function: an elementwise function of a float64 tensor (a torch
            function, module or lambda).
        name: the function's name in the IR and in messages.
        cfg: the formats: ``output``, ``table`` (``None``: the default above).
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], name: str = "function",
                 cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        if not callable(function):
            raise TypeError(f"QTable: function must be callable, got {function!r}")
        self.function, self.name = function, str(name)
        table = cfg.table if cfg.table is not None else FixedType(
            DEFAULT_TABLE_WIDTH, 4, signed=True, rounding=cfg.output.rounding, overflow=cfg.output.overflow)
        if table.width > 16:
            raise ValueError(f"QTable({self.name}): table input format {table} has {table.width} bits, a table of "
                             f"2**{table.width} entries; use at most 16 bits")
        self.table_quantizer = make_quantizer(table, cfg.learn_int_bits)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)
        self._cache: dict[tuple[FixedType, torch.device], torch.Tensor] = {}

    def _shape_repr(self) -> str:
        return self.name

    def inputs(self, t: Optional[FixedType] = None) -> torch.Tensor:
        """The values of the table input format's codes, lowest first (float64)."""
        t = t or self.table_quantizer.fixed_type
        return torch.arange(t.code_min, t.code_max + 1, dtype=torch.float64) * t.lsb

    def function_values(self, t: Optional[FixedType] = None,
                        device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """``f`` at every table input, in float64 (cached per format); NaN is refused, infinities clamped."""
        t = t or self.table_quantizer.fixed_type
        key = (t, device)
        if key not in self._cache:
            with torch.no_grad():
                values = torch.as_tensor(self.function(self.inputs(t)), dtype=torch.float64)
            if values.shape != (t.code_max - t.code_min + 1,):
                raise ValueError(f"{self.describe()}: the function is not elementwise: {t.code_max - t.code_min + 1}"
                                 f" inputs gave shape {tuple(values.shape)}")
            if bool(torch.isnan(values).any()):
                bad = float(self.inputs(t)[torch.isnan(values)][0])
                raise ValueError(f"{self.describe()}: the function is NaN at table input {bad}; narrow the table's "
                                 f"input format {t} to the function's domain")
            big = torch.finfo(torch.float64).max
            self._cache = {key: values.clamp(-big, big).to(device)}  # one format at a time
        return self._cache[key]

    def table_codes(self) -> torch.Tensor:
        """The table: the output codes of every table input, lowest input first (int64)."""
        return to_codes(self.function_values(), self.output_quantizer.fixed_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        xq = self.table_quantizer(x if self.table_quantizer.base_type.width <= 24 else x.double())
        t = self.table_quantizer.fixed_type
        index = torch.round(xq.detach().double() * 2.0 ** t.frac_bits).to(torch.int64) - t.code_min
        values = _Lookup.apply(xq, index, self.function_values(t, x.device), self.function)
        y = self.output_quantizer(values)
        if self.training or self.output_quantizer.base_type.width <= 24 or x.dtype == torch.float64:
            return y.to(x.dtype)
        return y

    def constants(self) -> dict[str, FixedConstant]:
        """The table: codes and values of the output format, one per table input."""
        codes = self.table_codes()
        t = self.output_quantizer.fixed_type
        return {"table": FixedConstant(codes.double() * t.lsb, codes, t)}

    def rom_bits(self) -> int:
        """The table's size in bits: ``2**W_table * W_out``."""
        return (1 << self.table_quantizer.base_type.width) * self.output_quantizer.base_type.width

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None) -> "QTable":
        """The table of an activation module (:data:`TABLE_MODULES`)."""
        found = table_function(module)
        if found is None:
            raise TypeError(f"QTable.from_float: no table for {type(module).__name__}; pass the function to QTable")
        return cls(found[1], found[0], cfg)

"""Elementwise functions by exact lookup table: :class:`QTable` (sigmoid, tanh, GELU, exp, 1/x, any function).

A table is a function's values at every code of a small input format,
cast once, from float64, to the output format.  It is the definition of
the layer: training, eval and every back end read the same codes.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..format import FixedType
from ..functional import to_codes
from .config import LayerQConfig, make_quantizer
from .exact import as_float
from .layer import FixedConstant, QuantizedLayer
from .quantizers import FixedQuantizer, KHotQuantizer

Quantizer = Union[FixedQuantizer, KHotQuantizer]

__all__ = ["QTable", "TableFunction", "TABLE_MODULES", "TABLE_FUNCTIONS", "table_function", "DEFAULT_TABLE_WIDTH"]

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


class TableFunction:
    """A function's float64 values at every code of a table format (the current format's cached) and the lookup."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.function = function
        self._cache: dict[tuple[FixedType, torch.device], torch.Tensor] = {}

    def values(self, t: FixedType, device: torch.device, where: str) -> torch.Tensor:
        """``f`` at every code of ``t``, lowest first; NaN is refused (``where`` names the layer), infinities become
        the largest double of their sign."""
        key = (t, device)
        if key not in self._cache:
            inputs = torch.arange(t.code_min, t.code_max + 1, dtype=torch.float64) * t.lsb
            with torch.no_grad():
                values = torch.as_tensor(self.function(inputs), dtype=torch.float64)
            if values.shape != inputs.shape:
                raise ValueError(f"{where}: the function is not elementwise: {inputs.numel()} inputs gave shape "
                                 f"{tuple(values.shape)}")
            if bool(torch.isnan(values).any()):
                raise ValueError(f"{where}: the function is NaN at table input {float(inputs[torch.isnan(values)][0])}"
                                 f"; narrow the table's input format {t} to the function's domain")
            big = torch.finfo(torch.float64).max
            self._cache = {key: values.clamp(-big, big).to(device)}  # one format at a time
        return self._cache[key]

    def codes(self, t: FixedType, out: FixedType, where: str) -> torch.Tensor:
        """The table: the codes of ``out`` for every code of ``t``, lowest first (int64)."""
        return to_codes(self.values(t, torch.device("cpu"), where), out)

    def lookup(self, x: torch.Tensor, table_quantizer: Quantizer, output_quantizer: Quantizer,
               where: str) -> torch.Tensor:
        """``Qout(f(Qtable(x)))`` by gathering ``f``'s float64 values (see :class:`QTable`); float64."""
        xq = table_quantizer(x if table_quantizer.base_type.width <= 24 else x.double())
        t = table_quantizer.fixed_type
        index = torch.round(xq.detach().double() * 2.0 ** t.frac_bits).to(torch.int64) - t.code_min
        return output_quantizer(_Lookup.apply(xq, index, self.values(t, x.device, where), self.function))


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
        self.table = TableFunction(function)
        table = cfg.table if cfg.table is not None else FixedType(
            DEFAULT_TABLE_WIDTH, 4, signed=True, rounding=cfg.output.rounding, overflow=cfg.output.overflow)
        if table.width > 16:
            raise ValueError(f"QTable({self.name}): table input format {table} has {table.width} bits, a table of "
                             f"2**{table.width} entries; use at most 16 bits")
        self.table_quantizer = make_quantizer(table, cfg.learn_int_bits)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return self.name

    def function_values(self, t: Optional[FixedType] = None,
                        device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """``f`` at every code of the table format ``t`` (default the current one), lowest first, in float64."""
        return self.table.values(t or self.table_quantizer.fixed_type, device, self.describe())

    def table_codes(self) -> torch.Tensor:
        """The table: the output codes of every table input, lowest input first (int64)."""
        return self.table.codes(self.table_quantizer.fixed_type, self.output_quantizer.fixed_type, self.describe())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        y = self.table.lookup(x, self.table_quantizer, self.output_quantizer, self.describe())
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

"""Softmax and log-softmax on fixed-point codes, every step a declared format: :class:`QSoftmax`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..format import FixedType
from .config import LayerQConfig, make_quantizer
from .exact import as_float
from .layer import FixedConstant, QuantizedLayer
from .lut import TableFunction

__all__ = ["QSoftmax", "EXP_TYPE", "RECIPROCAL_TYPE", "LOG_TYPE"]

#: exp(d) for d <= 0 lies in (0, 1]: 16 bits, one integer bit.
EXP_TYPE = FixedType(16, 1, signed=False, rounding="RND_CONV", overflow="SAT")
#: 1/s for a sum s >= 1 lies in (0, 1].
RECIPROCAL_TYPE = FixedType(16, 1, signed=False, rounding="RND_CONV", overflow="SAT")
#: log(s) for 1 <= s < 2**10.
LOG_TYPE = FixedType(16, 4, signed=False, rounding="RND_CONV", overflow="SAT")


def _log(v: torch.Tensor) -> torch.Tensor:
    """``log`` where it is defined; the sum is at least 1, so inputs below it never occur (0 there)."""
    return torch.log(v.clamp_min(torch.finfo(torch.float64).tiny))


class QSoftmax(QuantizedLayer):
    """Softmax (or log-softmax) over dimension 1, on fixed-point values, as the FPGA computes it.

    Numerics, per position along the other dimensions (``x`` of ``n`` values):

    1. ``d_i = x_i - max(x)``, exact (``d_i <= 0``);
    2. ``e_i = exp_table[Qtable(d_i)]``: ``d`` cast to the table's input
       format (``cfg.table``, default 10 bits with 5 integer bits; its binary
       point calibrated or learned), entries ``exp`` cast from float64 to
       ``exp_type`` (default ``ap_ufixed<16,1>``);
    3. ``s = Qsum(sum_i e_i)``: the exact sum cast to ``cfg.accum`` (default
       ``ap_ufixed<10,4>``; calibrated), which addresses the next table;
    4. softmax: ``y_i = Qout(e_i * reciprocal_table[s])``, entries ``1/s``
       in ``reciprocal_type``; log-softmax: ``y_i = Qout(d_i -
       log_table[s])``, entries ``log(s)`` in ``log_type``; the product or
       difference exact, ``Qout`` (``cfg.output``) the last rounding.

    Training runs the same steps (the tables gathered as in
    :class:`~qfx.nn.QTable`, the max and the sum exact in float64), so the
    softmax a model is trained with is the one the hardware computes;
    backward: ``exp'`` and ``-1/s**2`` (or ``1/s``) at the table inputs,
    straight through the casts.  Eval returns float64 unless the input's
    dtype holds the output format.
    """

    def __init__(self, dim: int = 1, log: bool = False, cfg: Optional[LayerQConfig] = None,
                 exp_type: FixedType = EXP_TYPE, reciprocal_type: Optional[FixedType] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.dim, self.log = int(dim), bool(log)
        table = cfg.table if cfg.table is not None else FixedType(10, 5, rounding=cfg.output.rounding,
                                                                  overflow="SAT")
        total = cfg.accum if cfg.accum is not None else FixedType(10, 4, signed=False, rounding=cfg.output.rounding,
                                                                  overflow="SAT")
        for name, t in (("table", table), ("accum (the sum)", total)):
            if t.width > 16:
                raise ValueError(f"QSoftmax: the {name} format {t} addresses a table; use at most 16 bits")
        self.table_quantizer = make_quantizer(table, cfg.learn_int_bits)
        self.accum_quantizer = make_quantizer(total, cfg.learn_int_bits)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)
        second = reciprocal_type or (LOG_TYPE if self.log else RECIPROCAL_TYPE)
        self.exp_quantizer = make_quantizer(exp_type, False)
        self.second_quantizer = make_quantizer(second, False)
        self.exp = TableFunction(torch.exp)
        self.second = TableFunction(_log if self.log else torch.reciprocal)

    def _shape_repr(self) -> str:
        return f"{'log_' if self.log else ''}softmax, dim={self.dim}"

    @property
    def second_name(self) -> str:
        """The second table's role and constant name: ``log`` or ``reciprocal``."""
        return "log" if self.log else "reciprocal"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        v = x.double()
        d = v - v.amax(dim=self.dim, keepdim=True).detach()
        where = self.describe()
        e = self.exp.lookup(d, self.table_quantizer, self.exp_quantizer, where)
        s = self.accum_quantizer(e.sum(dim=self.dim, keepdim=True))
        t = self.second.lookup(s, _Identity(self.accum_quantizer), self.second_quantizer, where)
        y = self.output_quantizer(d - t if self.log else e * t)
        if self.training or self.output_quantizer.base_type.width <= 24 or x.dtype == torch.float64:
            return y.to(x.dtype)
        return y

    def constants(self) -> dict[str, FixedConstant]:
        """The exp table and the reciprocal (or log) table: codes and values, lowest table input first."""
        out = {}
        for role, table, index_q, q in (("exp", self.exp, self.table_quantizer, self.exp_quantizer),
                                        (self.second_name, self.second, self.accum_quantizer, self.second_quantizer)):
            t = q.fixed_type
            codes = table.codes(index_q.fixed_type, t, self.describe())
            out[role] = FixedConstant(codes.double() * t.lsb, codes, t)
        return out

    def rom_bits(self) -> int:
        """Both tables' bits."""
        return ((1 << self.table_quantizer.base_type.width) * self.exp_quantizer.base_type.width
                + (1 << self.accum_quantizer.base_type.width) * self.second_quantizer.base_type.width)

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None) -> "QSoftmax":
        """The fixed-point ``nn.Softmax`` or ``nn.LogSoftmax``."""
        if not isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            raise TypeError(f"QSoftmax.from_float expects nn.Softmax or nn.LogSoftmax, got {type(module).__name__}")
        if module.dim is None:
            raise ValueError("QSoftmax: nn.Softmax(dim=None) is ambiguous; give dim=1 (or -1 for (N, F) inputs)")
        return cls(module.dim, isinstance(module, nn.LogSoftmax), cfg)


class _Identity:
    """A quantizer stand-in for a value already in its format: the sum, cast once, addresses the second table."""

    def __init__(self, quantizer) -> None:
        self.base_type, self.fixed_type = quantizer.base_type, quantizer.fixed_type

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

"""Hardware cost of a quantized model in bit-operations: :func:`bit_cost`, and :func:`summary`.

The cost model counts, per inference (one sample of the batch), each
operator's bit-level work:

* a ``Wa x Wb`` multiplier costs ``Wa * Wb``; a product by a K-hot constant
  is ``K - 1`` additions of shifted copies of the input, each as wide as the
  accumulator (``(K - 1) * W_acc``; K = 1 is a shift, free);
* an adder costs its width.  The ``fan_in - 1`` additions of a dot product
  are ``W_acc`` wide (``W_acc`` = ``cfg.accum``'s width, else the exact sum
  type ``W_in + W_w + ceil(log2 fan_in)``); an addition of two operands
  with different binary points (a bias onto a dot product, the shift of a
  BatchNorm, a residual add) is ``max(I_a, I_b) + max(F_a, F_b) + 1`` wide,
  the ``ap_fixed`` result type of the ``+``;
* comparisons (ReLU, max pooling) cost the input width; a lookup table
  (:class:`~qfx.nn.QTable`) costs its ROM bits, ``2**W_table * W_out``; reshapes, dropout,
  identity and the input cast cost nothing; the output casts (rounding
  increments) are not counted.

Word lengths enter as constants, except where a quantizer learns its word
length (``QConfig(learn_widths=True)``): there ``round(W)`` enters with a
straight-through gradient (``d round(W) / dW = 1``), in the multipliers
(``W_in * W_w``, a BatchNorm's ``W_in * W_s``), the adders (``W_acc``, the
alignment adders' ``F = W - I``) and the comparisons, so that
``loss + lambda * bit_cost(model)`` narrows the words whose bits buy least
accuracy (:func:`qfx.autograd.learned_width` is the other side of that
balance).  The binary points enter too: the alignment adders above depend on
the integer bits ``I`` of both operands (a bias whose binary point lies far
from the products' needs a wide adder), so with ``learn_int_bits=True``
``bit_cost`` is differentiable with respect to every learned binary point that
feeds such an adder (the input's, the weights', the bias's, BatchNorm's
scale and shift, both operands of a residual add).  Integer bits enter as
``round(I)`` in the value and with a straight-through gradient
(``d round(I) / dI = 1``), so the value is exactly the cost of the current
formats.  Multiplier costs and carry bits do not depend on ``I`` and carry
no gradient.  Adding ``lambda * bit_cost(model)`` to a loss therefore pulls
binary points of operands that are added together towards each other.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch
from torch import fx, nn

from .convert import record_shapes, trace
from .nn import (QAdaptiveAvgPool, QClamp, QConcat, QConstantAdd, QConstantMul, QMean, QMul, QSub, QUpsample,
                 QZeroPad)
from .nn import (QAdaptiveAvgPool2d, QAdd, QAvgPool2d, QFlatten, QInput, QLeakyReLU, QMaxPool2d, QReLU,
                 QReLU6, QuantizedLayer)
from .nn.batchnorm import _QBatchNorm
from .nn.binary import QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QSign, QThermometer
from .nn.prelu import QPReLU, QRPReLU
from .nn.layer import describe_format
from .nn.linear import _QDotProduct
from .nn.lut import QTable
from .nn.softmax import QSoftmax
from .nn.quantizers import KHotQuantizer

__all__ = ["bit_cost", "layer_costs", "summary", "LayerCost"]


class LayerCost(NamedTuple):
    """One layer's cost: its qualified name, the module and the bit-operations per inference (a 0-d tensor)."""

    name: str
    module: nn.Module
    cost: torch.Tensor


class _Operand(NamedTuple):
    width: Any  # an int, or a 0-d tensor where the word length is learned
    int_bits: Optional[torch.Tensor]  # straight-through rounded, 0-d; None when unknown


def _width(q) -> Any:
    """The word length in use: an int, or for a learned one ``round(W)`` with a straight-through gradient."""
    return q.word_length() if getattr(q, "learns_width", False) else q.base_type.width


def _int_bits(q) -> Optional[torch.Tensor]:
    """``round(I)`` clipped to the range, with the gradient of ``I`` (straight-through)."""
    try:
        q.effective_int_bits()
    except RuntimeError:
        return None
    raw = q.binary_point()
    rounded = q.effective_int_bits().to(raw.dtype)
    return raw + (rounded - raw).detach()


def _align_width(int_a: torch.Tensor, frac_a: torch.Tensor, int_b: torch.Tensor,
                 frac_b: torch.Tensor) -> torch.Tensor:
    """Width of the exact adder of two fixed-point operands: ``max(I) + max(F) + 1``."""
    return torch.maximum(int_a, int_b) + torch.maximum(frac_a, frac_b) + 1


def _graph(model: nn.Module, example_input: Any) -> fx.GraphModule:
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    if example_input is not None:
        record_shapes(gm, example_input)
    return gm


def _shape(node: fx.Node) -> Optional[torch.Size]:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)


def _per_sample(node: fx.Node) -> float:
    shape = _shape(node)
    if shape is None:
        raise ValueError(f"bit_cost: no tensor shape recorded for node '{node.name}'; pass example_input "
                         "(to bit_cost/summary, or to quantize_model)")
    return math.prod(shape[1:]) if len(shape) > 1 else 1.0


def layer_costs(model: nn.Module, example_input: Any = None) -> list[LayerCost]:
    """The cost of every quantized layer of ``model``, in graph order (see the module docstring)."""
    gm = _graph(model, example_input)
    modules = dict(gm.named_modules())
    operand: dict[fx.Node, _Operand] = {}
    costs: list[LayerCost] = []
    zero = torch.zeros(())

    def operand_of(arg: Any) -> _Operand:
        if isinstance(arg, fx.Node) and arg in operand:
            return operand[arg]
        return _Operand(0, None)

    def int_or_zero(value: Optional[torch.Tensor]) -> torch.Tensor:
        return zero if value is None else value

    for node in gm.graph.nodes:
        if node.op != "call_module":
            if node.op == "placeholder":
                operand[node] = _Operand(0, None)
            continue
        layer = modules[node.target]
        x = operand_of(node.args[0] if node.args else None)
        out_q = getattr(layer, "output_quantizer", None)
        operand[node] = x if out_q is None else _Operand(_width(out_q), _int_bits(out_q))
        if not isinstance(layer, QuantizedLayer):
            continue  # Dropout, Identity: nothing computed
        # input_width is the producer's configured width; a learned one may be narrower
        w_in = x.width if isinstance(x.width, torch.Tensor) else (getattr(layer, "input_width", None) or x.width)
        cost = zero
        if isinstance(layer, (QInput, QFlatten)):
            pass
        elif isinstance(layer, _QDotProduct):
            elems = _per_sample(node)
            fan_in = layer.fan_in
            wq = layer.weight_quantizer
            w_w = _width(wq)
            carry = (fan_in - 1).bit_length()
            exact_width = w_in + w_w + carry
            w_acc = _width(layer.accum_quantizer) if layer.accum_quantizer is not None else exact_width
            macs = elems * fan_in
            if isinstance(wq, KHotQuantizer):
                cost = cost + macs * (wq.k - 1) * w_acc
            else:
                cost = cost + macs * w_in * w_w
            cost = cost + elems * (fan_in - 1) * w_acc
            if layer.bias is not None:
                i_acc = int_or_zero(x.int_bits) + int_or_zero(_int_bits(wq)) + carry  # per channel if wq is
                f_acc = exact_width - i_acc
                i_b = int_or_zero(_int_bits(layer.bias_quantizer))
                f_b = _width(layer.bias_quantizer) - i_b
                widths = _align_width(i_acc, f_acc, i_b, f_b)
                cost = cost + elems * widths.mean()
        elif isinstance(layer, _QBatchNorm):
            elems = _per_sample(node)
            sq, shq = layer.scale_quantizer, layer.shift_quantizer
            w_s = _width(sq)
            if isinstance(sq, KHotQuantizer):
                cost = cost + elems * (sq.k - 1) * (w_in + w_s)
            else:
                cost = cost + elems * w_in * w_s
            i_p = int_or_zero(x.int_bits) + int_or_zero(_int_bits(sq))
            f_p = (w_in + w_s) - i_p
            i_sh = int_or_zero(_int_bits(shq))
            f_sh = _width(shq) - i_sh
            cost = cost + elems * _align_width(i_p, f_p, i_sh, f_sh).mean()
        elif isinstance(layer, QAdd):
            elems = _per_sample(node)
            a, b = operand_of(node.args[0]), operand_of(node.args[1])
            i_a, i_b = int_or_zero(a.int_bits), int_or_zero(b.int_bits)
            cost = cost + elems * _align_width(i_a, a.width - i_a, i_b, b.width - i_b)
        elif isinstance(layer, (QReLU, QReLU6)):
            cost = cost + _per_sample(node) * w_in
        elif isinstance(layer, QLeakyReLU):
            cost = cost + _per_sample(node) * w_in * layer.slope_quantizer.base_type.width
        elif isinstance(layer, QTable):
            cost = cost + layer.rom_bits()  # one ROM, read by every element
        elif isinstance(layer, QSoftmax):  # its ROMs, the max's comparisons, the sum's adds, the products
            elems = _per_sample(node)
            e, r = layer.exp_quantizer.base_type.width, layer.second_quantizer.base_type.width
            cost = cost + layer.rom_bits() + elems * (w_in + e + e * r)
        elif isinstance(layer, QMaxPool2d):
            k = layer.kernel_size
            area = k * k if isinstance(k, int) else math.prod(k)
            cost = cost + _per_sample(node) * (area - 1) * w_in
        elif isinstance(layer, (QAvgPool2d, QAdaptiveAvgPool2d)):
            window = layer.window
            if isinstance(layer, QAdaptiveAvgPool2d):
                shape = _shape(node.args[0])
                window = math.prod(shape[-2:]) if shape is not None else window
            w_sum = w_in + (window - 1).bit_length()
            cost = cost + _per_sample(node) * ((window - 1) * w_sum + w_sum * layer.divisor_quantizer.base_type.width)
        elif isinstance(layer, (QBinaryLinear, QBinaryConv1d, QBinaryConv2d, QSign, QThermometer, QPReLU)):
            cost = cost + _binary_and_prelu_cost(layer, node, x.width)
        else:
            structural = _structure_cost(layer, node, w_in, [operand_of(a) for a in node.args])
            if structural is None:
                raise TypeError(f"bit_cost: no cost model for {type(layer).__name__} at '{node.target}'")
            cost = cost + structural
        costs.append(LayerCost(node.target, layer, cost))
    return costs


def _binary_and_prelu_cost(layer: nn.Module, node: fx.Node, w_in: int) -> torch.Tensor:
    """Binary layers and PReLU.

    A binary dot product of ``N`` terms is ``N`` XNORs and a popcount (an
    adder tree of about ``N`` full-adder bits): ``2 N`` per output.  A sign
    or thermometer level is one comparison of the input's width.  PReLU is a
    slope product like a BatchNorm scale (``(K - 1)`` adds when K-hot) plus
    the adds of its shifts, each as wide as the wider operand.
    """
    elems = _per_sample(node)
    if isinstance(layer, (QBinaryLinear, QBinaryConv1d, QBinaryConv2d)):
        return torch.as_tensor(float(elems * 2 * layer.fan_in))
    if isinstance(layer, QSign):
        return torch.as_tensor(elems * w_in, dtype=torch.float32)
    if isinstance(layer, QThermometer):
        return torch.as_tensor(elems * w_in, dtype=torch.float32)  # one comparison per output channel
    q = layer.slope_quantizer
    w_s = q.base_type.width
    ops = (q.k - 1) * (w_in + w_s) if isinstance(q, KHotQuantizer) else w_in * w_s
    if isinstance(layer, QRPReLU):
        w_shift = layer.shift_quantizer.base_type.width
        ops += max(w_in, w_shift) + max(w_in + w_s, w_shift)
    return torch.as_tensor(elems * ops, dtype=torch.float32)


def _structure_cost(layer: nn.Module, node: fx.Node, w_in: int, args: list) -> Optional[torch.Tensor]:
    """Bit-operations of the structural layers (``qfx.nn.structure``, ``qfx.nn.reduce``); ``None`` for others.

    Differences cost like sums, products of two tensors ``wa * wb`` per
    element, a constant product like a BatchNorm scale (``(K - 1)`` adds when
    K-hot), a clamp one comparison per bound, averages like pooling; joins,
    padding and upsampling move wires only.
    """
    elems = _per_sample(node)
    if isinstance(layer, QSub):
        a, b = args
        i_a, i_b = (torch.zeros(()) if v.int_bits is None else v.int_bits for v in (a, b))
        return elems * _align_width(i_a, a.width - i_a, i_b, b.width - i_b)
    if isinstance(layer, QMul):
        return torch.as_tensor(elems * layer.a_width * layer.b_width, dtype=torch.float32)
    if isinstance(layer, QConstantMul):
        q = layer.scale_quantizer
        w = q.base_type.width
        ops = (q.k - 1) * (w_in + w) if isinstance(q, KHotQuantizer) else w_in * w
        return torch.as_tensor(elems * ops, dtype=torch.float32)
    if isinstance(layer, QConstantAdd):
        return torch.as_tensor(elems * max(w_in, layer.shift_quantizer.base_type.width), dtype=torch.float32)
    if isinstance(layer, QClamp):
        return torch.as_tensor(elems * w_in * len(layer.constants()), dtype=torch.float32)
    if isinstance(layer, (QConcat, QZeroPad, QUpsample)):
        return torch.zeros(())
    if isinstance(layer, (QAdaptiveAvgPool, QMean)):
        window = layer.window
        w_sum = w_in + (window - 1).bit_length()
        return torch.as_tensor(elems * ((window - 1) * w_sum + w_sum * layer.divisor_quantizer.base_type.width),
                            dtype=torch.float32)
    return None


def bit_cost(model: nn.Module, example_input: Any = None) -> torch.Tensor:
    """Bit-operations per inference of the quantized ``model``: a 0-d tensor, differentiable where it can be.

    ``model`` is a :func:`qfx.quantize_model` result (shapes recorded when it
    was given ``example_input``) or any module of qfx layers that ``torch.fx``
    can trace; ``example_input`` records (again) the tensor shapes.  See the
    module docstring for the cost model and what the gradient is.
    """
    total = torch.zeros(())
    for item in layer_costs(model, example_input):
        total = total + item.cost
    return total


def _fmt_int_bits(q) -> str:
    try:
        bits = q.effective_int_bits()
    except RuntimeError:
        return "?"
    if bits.dim() == 0:
        return str(int(bits))
    lo, hi = int(bits.min()), int(bits.max())
    return str(lo) if lo == hi else f"{lo}..{hi}"


def summary(model: nn.Module, example_input: Any = None, print_fn=print) -> str:
    """A table of every layer: each tensor's format, its integer bits (learned or fixed) and the layer's cost.

    The cost column is empty where no shapes are known (give ``example_input``
    here or to :func:`qfx.quantize_model`).  The table is printed with
    ``print_fn`` (``None``: not printed) and returned.
    """
    gm = _graph(model, example_input)
    try:
        costs = {c.name: float(c.cost.detach()) for c in layer_costs(gm)}
    except ValueError:
        costs = {}
    header = ("layer", "type", "tensor", "format", "int bits", "cost (bit-ops)")
    rows = []
    modules = dict(gm.named_modules())
    seen = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        seen.add(node.target)
        layer = modules[node.target]
        cost = costs.get(node.target)
        cost_text = "" if cost is None else f"{cost:,.0f}"
        quantizers = layer.quantizers() if isinstance(layer, QuantizedLayer) else {}
        if not quantizers:
            rows.append((node.target, type(layer).__name__, "-", "(input format kept)", "-", cost_text))
            continue
        for i, (tensor, q) in enumerate(quantizers.items()):
            try:
                fmt = describe_format(q.fixed_type)
            except RuntimeError:
                fmt = str(q.base_type)
            if isinstance(q, KHotQuantizer):
                fmt += f" k-hot({q.k})"
            if getattr(q, "learns_width", False):
                fmt += f" (width learned, at most {q.base_type.width})"
            bits = _fmt_int_bits(q) + (" (learned)" if q.learn_int_bits else "")
            rows.append((node.target if i == 0 else "", type(layer).__name__ if i == 0 else "", tensor, fmt,
                         bits, cost_text if i == 0 else ""))
    total = sum(costs.values()) if costs else None
    rows.append(("total", "", "", "", "", "" if total is None else f"{total:,.0f}"))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    text = "\n".join(["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(), line]
                     + ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows[:-1]]
                     + [line, "  ".join(str(c).ljust(w) for c, w in zip(rows[-1], widths)).rstrip()])
    if print_fn is not None:
        print_fn(text)
    return text

"""Range observers and post-training calibration: :func:`calibrate`.

Observers only watch tensors and report their range; they are kept apart
from the quantizers, which hold the formats.  :func:`calibrate` attaches one
observer to every activation quantizer (each layer's ``output_quantizer`` and
``accum_quantizer``) with forward pre-hooks, runs the calibration batches in
eval mode through the graph node by node (every batch through one layer,
whose binary points are then placed, before the next layer sees its input),
and places every binary point with the observer's rule (:meth:`Observer.int_bits`).

The default, :class:`MSEObserver`, tries the range-based binary point
(:func:`fit_int_bits`: the smallest number of integer bits such that the
observed range fits the format) and the few below it, and keeps the one
whose cast has the smallest squared error over the observed values: at 4
bits it clips rare outliers to buy resolution for the bulk of the values.
:class:`MinMaxObserver` (never saturates on the calibration data) and
:class:`PercentileObserver` stay available.  Constants (weights, biases,
BatchNorm scales and shifts) are fitted to the tensors themselves, per
channel where the quantizer is per channel, by the same rules.

An unsigned format cannot hold negative values: its binary point is fitted
to the non-negative part of what it sees (the cast sends the rest to 0 or
wraps it whatever the binary point), with a warning naming the tensor when
most of what it sees is negative.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import fx, nn

from .format import FixedType
from .khot import khot_codes
from .nn.layer import QuantizedLayer
from .nn.linear import _QDotProduct
from .nn.batchnorm import _QBatchNorm
from .nn.prelu import QPReLU, QRPReLU
from .nn.quantizers import FixedQuantizer, KHotQuantizer, affine_relu

__all__ = ["Observer", "MinMaxObserver", "PercentileObserver", "MSEObserver", "fit_int_bits", "calibrate",
           "calibrate_constants"]

Quantizer = Union[FixedQuantizer, KHotQuantizer]


class Observer:
    """Watches tensors (``observe``) and reports the range to fit (``bounds``): ``(low, high)`` tensors.

    ``channel_dim=None`` gives one range for the tensor; an int gives one per
    index along that dimension.  :meth:`int_bits` turns what was seen into
    a quantizer's binary point(s).
    """

    def __init__(self, channel_dim: Optional[int] = None) -> None:
        self.channel_dim = channel_dim
        self.low: Optional[torch.Tensor] = None
        self.high: Optional[torch.Tensor] = None
        self.count = 0
        self.negatives = 0

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(channels, values)`` (one row for a per-tensor observer), float64."""
        x = x.detach().double()
        if self.channel_dim is None:
            return x.reshape(1, -1)
        return x.movedim(self.channel_dim, 0).reshape(x.shape[self.channel_dim], -1)

    def observe(self, x: torch.Tensor) -> None:
        """Widen the range to cover ``x`` (NaN values are ignored)."""
        flat = self._flat(x)
        if flat.numel() == 0:
            return
        low, high = self._reduce(flat)
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        self.count += flat.numel()
        if float(low.min()) < 0:
            self.negatives += int((flat < 0).sum())

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The observed ``(low, high)``; per-tensor observers give 0-d tensors."""
        if self.low is None:
            raise RuntimeError(f"{type(self).__name__} has observed nothing")
        if self.channel_dim is None:
            return self.low[0], self.high[0]
        return self.low, self.high

    def reset(self) -> None:
        self.low = self.high = None
        self.count = self.negatives = 0

    def int_bits(self, quantizer: "Quantizer", name: str = "") -> torch.Tensor:
        """The binary point(s) for ``quantizer``: :func:`fit_int_bits` of the observed range.

        For an unsigned format only the non-negative part of the range is
        fitted; ``name`` (the tensor's) goes into the warning given when
        most observed values are negative.
        """
        low, high = self.bounds()
        if not quantizer.base_type.signed:
            _warn_if_mostly_negative(self, quantizer, name)
            low, high = low.clamp(min=0), high.clamp(min=0)
        return fit_int_bits(quantizer, low, high)


class MinMaxObserver(Observer):
    """The exact minimum and maximum seen: a format fitted to them never saturates on the observed data."""

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nan_to_num(x, nan=0.0)
        return x.amin(dim=1), x.amax(dim=1)


class PercentileObserver(Observer):
    """The ``percentile`` and ``100 - percentile`` quantiles of each batch, widened over batches.

    Ignores outliers: a format fitted to it may saturate the rarest values,
    in exchange for finer resolution.  Large batches are subsampled
    (``max_samples`` values, evenly strided) for the quantile.
    """

    def __init__(self, percentile: float = 99.99, channel_dim: Optional[int] = None,
                 max_samples: int = 1 << 20) -> None:
        super().__init__(channel_dim)
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must lie in (50, 100], got {percentile}")
        self.percentile, self.max_samples = float(percentile), int(max_samples)

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nan_to_num(x, nan=0.0)
        if x.shape[1] > self.max_samples:
            x = x[:, :: math.ceil(x.shape[1] / self.max_samples)]
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=x.dtype, device=x.device)
        low, high = torch.quantile(x, q, dim=1)
        return low, high


class MSEObserver(MinMaxObserver):
    """The binary point whose cast has the smallest squared error over the observed values (the default).

    Candidates: the range-based binary point ``I0`` (:func:`fit_int_bits` of
    the exact minimum and maximum) and ``I0 - 1`` ... ``I0 - candidates + 1``
    (within the quantizer's ``int_bits_range``): each step down halves the
    LSB and the range, trading clipped outliers for finer rounding of the
    bulk.  The error is that of the quantizer's own cast (its rounding and
    overflow modes, K-hot included) over a sample of the observed values
    (every value up to ``max_samples`` per channel, else an even stride of
    each batch), summed per binary point (per tensor or per channel); ties
    go to the larger ``I``.  More integer bits than ``I0`` never lower the
    error: nothing clips at ``I0`` already.
    """

    def __init__(self, channel_dim: Optional[int] = None, candidates: int = 5,
                 max_samples: int = 1 << 16) -> None:
        super().__init__(channel_dim)
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.candidates, self.max_samples = int(candidates), int(max_samples)
        self.samples: list[torch.Tensor] = []
        self.kept = 0

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        flat = torch.nan_to_num(self._flat(x), nan=0.0)
        if flat.numel() == 0 or self.kept >= self.max_samples:
            return
        room = self.max_samples - self.kept
        if flat.shape[1] > room:
            flat = flat[:, :: math.ceil(flat.shape[1] / room)]
        self.samples.append(flat.float())
        self.kept += flat.shape[1]

    def reset(self) -> None:
        super().reset()
        self.samples, self.kept = [], 0

    def int_bits(self, quantizer: "Quantizer", name: str = "") -> torch.Tensor:
        start = super().int_bits(quantizer, name)
        if not self.samples:
            return start
        values = torch.cat(self.samples, dim=1)  # (binary points, values)
        if not quantizer.base_type.signed:
            values = values.clamp(min=0)
        return mse_int_bits(quantizer, values, start, self.candidates)


def mse_int_bits(quantizer: "Quantizer", values: torch.Tensor, start: torch.Tensor,
                 candidates: int) -> torch.Tensor:
    """Among ``start``, ``start - 1``, ... (``candidates`` values), the integer bits with the least squared error.

    ``values`` is ``(rows, n)``: one row per binary point of ``start`` (a
    0-d ``start`` takes one row).  The cast is ``quantizer``'s own, in eval
    mode, with its binary point(s) set to each candidate in turn and then
    restored.
    """
    lo, _ = quantizer.int_bits_range
    saved = quantizer.int_bits.detach().clone()
    training = quantizer.training
    per_channel = start.dim() > 0
    shaped = values if not per_channel else values.movedim(0, quantizer.channel_dim % 2)
    if not per_channel:
        shaped = shaped.reshape(-1)
    best, best_error = start.clone(), None
    quantizer.eval()
    try:
        with torch.no_grad():
            for step in range(candidates):
                bits = (start - step).clamp(min=lo)
                quantizer.set_int_bits(bits)
                q = quantizer(shaped)
                error = (q.double() - shaped.double()).square()
                if per_channel:
                    error = error.movedim(quantizer.channel_dim % 2, 0).sum(dim=1)
                else:
                    error = error.sum()
                if best_error is None:
                    best_error = error
                    continue
                better = error < best_error
                best = torch.where(better, bits, best)
                best_error = torch.where(better, error, best_error)
    finally:
        quantizer.set_int_bits(saved)
        quantizer.train(training)
    return best


def _warn_if_mostly_negative(obs: Observer, quantizer: "Quantizer", name: str) -> None:
    if obs.count and obs.negatives * 2 > obs.count:
        where = f"'{name}'" if name else "a tensor"
        warnings.warn(f"calibrate: {where} has the unsigned format {quantizer.base_type} but "
                      f"{100 * obs.negatives / obs.count:.0f}% of the values it saw are negative; they cast to "
                      "0 (or wrap). Its binary point is fitted to the non-negative part; a signed format or a "
                      "ReLU before it may be what is meant", stacklevel=3)


def _code_bounds(quantizer: Quantizer) -> tuple[int, int]:
    """The smallest and largest code the quantizer can produce (K-hot: the extreme allowed codes)."""
    t = quantizer.base_type
    if isinstance(quantizer, KHotQuantizer):
        try:
            codes = khot_codes(t, quantizer.k)
            return int(codes[0]), int(codes[-1])
        except ValueError:  # every code allowed
            pass
    return t.code_min, t.code_max


def fit_int_bits(quantizer: Quantizer, low: Union[float, torch.Tensor],
                 high: Union[float, torch.Tensor]) -> torch.Tensor:
    """The smallest integer bits ``I`` (per entry) with ``[low, high]`` inside the format's range.

    Range of ``I``: the quantizer's ``int_bits_range``; a range that fits
    nowhere gets the largest ``I`` (it will saturate), an all-zero range the
    smallest.  ``low <= min`` and ``high <= max`` are checked without
    rounding, so no rounding mode can carry an observed value past the range.
    """
    low = torch.as_tensor(low, dtype=torch.float64)
    high = torch.as_tensor(high, dtype=torch.float64)
    code_min, code_max = _code_bounds(quantizer)
    lo, hi = quantizer.int_bits_range
    width = quantizer.base_type.width
    result = torch.full(torch.broadcast_shapes(low.shape, high.shape), float(hi), dtype=torch.float64)
    found = torch.zeros(result.shape, dtype=torch.bool)
    for bits in range(lo, hi + 1):
        lsb = math.ldexp(1.0, bits - width)
        fits = (low >= code_min * lsb) & (high <= code_max * lsb) & ~found
        result = torch.where(fits, torch.full_like(result, float(bits)), result)
        found |= fits
        if bool(found.all()):
            break
    return result.float()


def _fit(quantizer: Optional[Quantizer], value: torch.Tensor, observer: Callable[..., Observer],
         name: str) -> None:
    """Fit ``quantizer``'s binary point(s) to the constant ``value`` (per channel along dim 0 if per channel)."""
    if quantizer is None:
        return
    obs = observer(channel_dim=0) if quantizer.granularity == "channel" else observer()
    obs.observe(value.detach())
    quantizer.set_int_bits(obs.int_bits(quantizer, name))


def calibrate_constants(model: nn.Module, observer: Callable[..., Observer] = None) -> None:
    """Fit the binary points of every weight, bias, BatchNorm scale/shift and PReLU slope/shift to the tensors.

    ``observer`` (default :class:`MSEObserver`) is called with
    ``channel_dim=0`` for a per-channel quantizer and without arguments
    otherwise; it sees the whole tensor.
    """
    observer = observer or MSEObserver
    for name, layer in model.named_modules():
        if isinstance(layer, _QDotProduct):
            _fit(layer.weight_quantizer, layer.weight, observer, f"{name}.weight")
            if layer.bias is not None:
                _fit(layer.bias_quantizer, layer.bias, observer, f"{name}.bias")
        elif isinstance(layer, _QBatchNorm):
            scale, shift = layer.folded()
            _fit(layer.scale_quantizer, scale, observer, f"{name}.scale")
            _fit(layer.shift_quantizer, shift, observer, f"{name}.shift")
        elif isinstance(layer, QPReLU):
            _fit(layer.slope_quantizer, layer.weight, observer, f"{name}.slope")
            if isinstance(layer, QRPReLU):
                _fit(layer.bias_quantizer, layer.bias, observer, f"{name}.bias")
                _fit(layer.shift_quantizer, layer.shift, observer, f"{name}.shift")


class _BatchFolds:
    """The scale and shift a BatchNorm that has never tracked statistics will use in training, from the data.

    Such a layer's running statistics are the initial mean 0 and variance 1, so the eval fold that
    :func:`calibrate_constants` fits its ``scale``/``shift`` formats to is ``gamma`` and ``beta`` alone
    (a shift of all zeros gets the smallest binary point).  Training folds the batch's statistics
    instead, and would then saturate the shift from the first step, leaving ``beta`` without a
    gradient.  A forward pre-hook records, for every calibration batch, the fold of that batch's mean
    and biased variance; :meth:`refit` fits both formats to the eval fold and every batch's fold.
    """

    def __init__(self, layer: _QBatchNorm) -> None:
        self.layer = layer
        self.folds: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def untracked(layer: nn.Module) -> bool:
        return isinstance(layer, _QBatchNorm) and int(layer.num_batches_tracked) == 0

    def hook(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        if x.numel() // x.shape[1] >= 2:  # a single value per channel forms no batch statistics
            self.folds.append(self.layer._fold(x.mean(dims), x.var(dims, unbiased=False)))

    def refit(self, observer: Callable[..., Observer], name: str) -> None:
        if not self.folds:
            return
        scale, shift = self.layer.folded()
        scales = torch.stack([scale] + [f[0] for f in self.folds], dim=1)
        shifts = torch.stack([shift] + [f[1] for f in self.folds], dim=1)
        _fit(self.layer.scale_quantizer, scales, observer, f"{name}.scale")
        _fit(self.layer.shift_quantizer, shifts, observer, f"{name}.shift")


def _default_input_fn(batch: Any) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],)  # the usual (inputs, targets) pair
    raise TypeError(f"calibrate: cannot read model inputs from a batch of type {type(batch).__name__}; pass "
                    "input_fn=lambda batch: (tuple of model inputs)")


def _activation_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    found = {}
    for name, layer in model.named_modules():
        if isinstance(layer, QuantizedLayer):
            for tensor in ("table", "accum", "output"):
                q = getattr(layer, f"{tensor}_quantizer", None)
                if q is not None:
                    found[f"{name}.{tensor}" if name else tensor] = q
    return found


def calibrate(model: nn.Module, batches: Iterable[Any], *,
              observer: Callable[[], Observer] = MSEObserver,
              input_fn: Optional[Callable[[Any], tuple]] = None, constants: bool = True,
              constant_observer: Optional[Callable[..., Observer]] = None,
              max_passes: Optional[int] = None, progress: bool = False) -> dict[str, FixedType]:
    """Post-training quantization: place every binary point of ``model`` from data.

    1. With ``constants=True``, weights, biases and BatchNorm scales and
       shifts get their binary points from the tensors themselves
       (:func:`calibrate_constants` with ``constant_observer``, default
       :class:`MSEObserver`), per channel where their quantizer is.  A
       BatchNorm that has never tracked statistics (``num_batches_tracked``
       is 0: an untrained model, QAT from scratch) has its scale and shift
       fitted in step 2 to the folds of the calibration batches' own
       statistics as well, which is what training will use.
    2. Every activation quantizer (``output_quantizer``, ``accum_quantizer``, a table's
       ``table_quantizer``)
       gets an observer (``observer()``, default :class:`MSEObserver`; pass
       :class:`MinMaxObserver` for ranges that never saturate on the
       calibration data) through a forward pre-hook, which sees the exact
       value about to be cast; ``model`` runs in eval mode without
       gradients; each binary point is then set by the observer's
       :meth:`Observer.int_bits`.

    A layer's observed input depends on the formats upstream, so step 2
    walks a ``torch.fx.GraphModule`` (what :func:`qfx.quantize_model`
    returns) node by node in topological order, every batch through one
    node before the next: a layer's quantizers are fitted (the accumulator
    before the output) on all batches before any downstream layer runs, and
    the layer then runs once more to give its consumers the values cast to
    the final formats.  With :class:`MinMaxObserver` one walk thus reaches
    the fixed point: observing again with these formats would place every
    binary point where it is, and no activation saturates on the
    calibration data.  The batches are read once; every node's outputs are
    kept until their last consumer has run.

    Any other model (not a ``GraphModule``, a quantized layer called at
    more than one node or from inside a module the graph does not show) is
    calibrated by whole-model passes instead, repeated until no binary
    point moves (at most ``max_passes``, default the number of activation
    quantizers + 1; after the first pass a binary point only grows, so the
    loop ends).  ``max_passes`` plays no part in the graph walk.

    A batch is a tensor, or a tuple/list whose first element is the input;
    ``input_fn(batch)`` returning the tuple of model inputs overrides that.
    ``progress=True`` shows a tqdm bar if tqdm is installed.  The model's
    training flags are restored afterwards.

    Returns the activation formats found, by ``"<layer>.<tensor>"``.
    """
    input_fn = input_fn or _default_input_fn
    if iter(batches) is batches:
        batches = list(batches)
    constant_observer = constant_observer or MSEObserver
    if constants:
        calibrate_constants(model, constant_observer)
    folds = {name: _BatchFolds(layer) for name, layer in model.named_modules()
             if constants and _BatchFolds.untracked(layer)}
    quantizers = _activation_quantizers(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            if _walkable(model, quantizers):
                _calibrate_graph(model, batches, observer, input_fn, progress, folds, constant_observer)
            else:
                max_passes = len(quantizers) + 1 if max_passes is None else int(max_passes)
                _calibrate_by_passes(model, quantizers, batches, observer, input_fn, max_passes, progress, folds,
                                     constant_observer)
    finally:
        for m, training in modes.items():
            m.training = training
    return {name: q.fixed_type for name, q in quantizers.items()}


def _layer_quantizers(layer: nn.Module) -> list[Quantizer]:
    """A layer's activation quantizers in the order it applies them: table input, accumulator, then output."""
    return [q for q in (getattr(layer, f"{tensor}_quantizer", None) for tensor in ("table", "accum", "output"))
            if q is not None]


def _walkable(model: nn.Module, quantizers: dict[str, Quantizer]) -> bool:
    """Whether the graph shows every activation quantizer, each in exactly one ``call_module`` node."""
    if not isinstance(model, fx.GraphModule):
        return False
    calls: dict[str, int] = {}
    for node in model.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    shown = set()
    for target, count in calls.items():
        layer = model.get_submodule(target)
        if isinstance(layer, QuantizedLayer):
            owned = _layer_quantizers(layer)
            if owned and count > 1:
                return False  # one format, several inputs: needs the union over every call
            shown.update(id(q) for q in owned)
    return shown == {id(q) for q in quantizers.values()}


def _watch(obs: Observer) -> Callable:
    """A quantizer pre-hook feeding ``obs`` the value the quantizer casts: its input after the
    BatchNorm affine map and the ReLU it may apply (``quantizer(x, scale, shift, relu)``)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        names = ("x", "scale", "shift", "relu")
        bound = dict(zip(names, args), **kwargs)
        obs.observe(affine_relu(bound["x"], bound.get("scale"), bound.get("shift"), bool(bound.get("relu", False))))

    return hook


def _fit_observed(quantizer: Quantizer, obs: Observer, name: str) -> None:
    if obs.low is not None:  # never reached by the data: left as it is
        quantizer.set_int_bits(obs.int_bits(quantizer, name))


def _calibrate_graph(model: fx.GraphModule, batches: list, observer: Callable[[], Observer],
                     input_fn: Callable[[Any], tuple], progress: bool, folds: dict[str, _BatchFolds],
                     constant_observer: Callable[..., Observer]) -> None:
    """Fit the activation quantizers node by node, every batch through a node before the next one runs
    (an untracked BatchNorm's scale and shift first, to its batches' folds)."""
    interpreters = []
    for batch in batches:
        interpreter = fx.Interpreter(model, garbage_collect_values=False)
        interpreter.args_iter = iter(input_fn(batch))
        interpreters.append(interpreter)
    nodes = list(model.graph.nodes)
    last_use = {}  # node -> index of the last node that reads it, to free values early
    for index, node in enumerate(nodes):
        for used in node.all_input_nodes:
            last_use[used] = index

    def run(node: fx.Node) -> list:
        return [interpreter.run_node(node) for interpreter in interpreters]

    for index, node in enumerate(_progress(nodes, progress, "calibrate")):
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), QuantizedLayer):
            layer = model.get_submodule(node.target)
            if node.target in folds:
                handle = layer.register_forward_pre_hook(folds[node.target].hook)
                try:
                    run(node)
                finally:
                    handle.remove()
                folds.pop(node.target).refit(constant_observer, node.target)
            for q in _layer_quantizers(layer):
                obs = observer()
                handle = q.register_forward_pre_hook(_watch(obs), with_kwargs=True)
                try:
                    run(node)
                finally:
                    handle.remove()
                tensor = "accum" if q is getattr(layer, "accum_quantizer", None) else "output"
                _fit_observed(q, obs, f"{node.target}.{tensor}")
        if node.op == "output":
            break
        for interpreter, value in zip(interpreters, run(node)):
            interpreter.env[node] = value
        for used in node.all_input_nodes:
            if last_use[used] == index:
                for interpreter in interpreters:
                    del interpreter.env[used]


def _calibrate_by_passes(model: nn.Module, quantizers: dict[str, Quantizer], batches: list,
                         observer: Callable[[], Observer], input_fn: Callable[[Any], tuple], max_passes: int,
                         progress: bool, folds: dict[str, _BatchFolds],
                         constant_observer: Callable[..., Observer]) -> None:
    """Whole-model passes until no binary point moves (see :func:`calibrate`); an untracked
    BatchNorm's scale and shift are refitted to the folds of the first pass's batches."""
    observers = {name: observer() for name in quantizers}
    handles = [q.register_forward_pre_hook(_watch(observers[name]), with_kwargs=True)
               for name, q in quantizers.items()]
    fold_handles = [fold.layer.register_forward_pre_hook(fold.hook) for fold in folds.values()]
    try:
        for index in range(max(max_passes, 1)):
            for obs in observers.values():
                obs.reset()
            for batch in _progress(batches, progress, f"calibrate pass {index + 1}"):
                model(*input_fn(batch))
            changed = False
            for handle in fold_handles:
                handle.remove()
            for name, fold in folds.items():
                fold.refit(constant_observer, name)
                changed = changed or bool(fold.folds)
            fold_handles, folds = [], {}
            for name, q in quantizers.items():
                obs = observers[name]
                if obs.low is None:
                    continue  # never reached by the data
                bits = obs.int_bits(q, name)
                old = q.effective_int_bits().to(bits)
                if index:
                    bits = torch.maximum(bits, old)
                if not torch.equal(bits, old):
                    changed = True
                    q.set_int_bits(bits)
            if not changed:
                break
    finally:
        for handle in handles + fold_handles:
            handle.remove()


def _progress(batches: Iterable[Any], enabled: bool, description: str) -> Iterable[Any]:
    if not enabled:
        return batches
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc=description, leave=False)

"""Float model to qfx model: :class:`QConfig` and :func:`quantize_model`.

:class:`QConfig` (in :mod:`qfx.qconfig`) holds the defaults of a whole
network and the per-layer overrides; :meth:`QConfig.resolve` turns them into
the :class:`~qfx.nn.LayerQConfig` of one layer.

:func:`quantize_model` traces the float model with ``torch.fx``, replaces
every supported module and function by its quantized layer, inserts a
:class:`~qfx.nn.QInput` at each graph input and sets every layer's
``input_width`` from its producer's output format.  What it cannot convert it
refuses, naming the operation and where it is in the graph; nothing is
skipped silently.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import convert_rules
from .nn import (LayerQConfig, QAdaptiveAvgPool2d, QAdd, QAvgPool2d, QBatchNorm1d, QBatchNorm2d, QConv1d,
                 QConv2d, QFlatten, QInput, QLeakyReLU, QLinear, QMaxPool2d, QReLU, QReLU6, QuantizedLayer)
from .nn.binary import QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QSign, QThermometer
from .nn.prelu import QPReLU, QRPReLU, RPReLU
from .nn.lut import TABLE_MODULES, QTable, table_function
from .nn.softmax import QSoftmax
from .qconfig import QConfig

__all__ = ["QConfig", "quantize_model", "UnsupportedOperationError", "SUPPORTED_MODULES", "SUPPORTED_FUNCTIONS"]

class UnsupportedOperationError(TypeError):
    """A module or function :func:`quantize_model` cannot convert; the message says which and where."""


#: Float module classes quantize_model converts (nn.Dropout and nn.Identity are kept as they are).
SUPPORTED_MODULES: tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.PReLU, RPReLU,
    *TABLE_MODULES, nn.Softmax, nn.LogSoftmax)

#: Functions and methods quantize_model converts, by their spelling in the error message.
SUPPORTED_FUNCTIONS = ("operator.add (a + b of two tensors)", "torch.add(a, b)", "F.relu", "torch.relu",
                       "F.relu6", "F.leaky_relu",
                       "torch.flatten(x, 1)", "x.flatten(1)", "x.view(x.size(0), -1)", "x.reshape(N, -1)",
                       "x.size()/x.shape (feeding a flatten)",
                       "torch.sigmoid, torch.tanh, torch.exp, torch.reciprocal, F.silu, F.gelu, F.elu, F.softplus, "
                       "F.hardsigmoid, F.hardswish and the methods .sigmoid(), .tanh(), .exp(), .reciprocal() "
                       "(lookup tables)", "F.softmax(x, dim=...)", "F.log_softmax(x, dim=...)", "x.softmax(dim=...)")

# A qfx layer is already converted: the tracer must not look inside it.
_PASSTHROUGH = (nn.Identity, nn.Dropout, QFlatten)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantizedLayer, RPReLU)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx`` trace of ``model`` with qfx layers (and torch's own) as leaves."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    name = model.__class__.__name__
    return fx.GraphModule(tracer.root, graph, name)


def _unsupported(what: str, node: fx.Node, module_path: Optional[str] = None, detail: str = "") -> UnsupportedOperationError:
    where = f"node '{node.name}'" + (f", module path '{module_path}'" if module_path else "")
    return UnsupportedOperationError(
        f"quantize_model: unsupported {what} at {where}{detail}; the ops qfx converts are listed in docs/ops.md "
        "(an elementwise function can be given as a lookup table, qfx.nn.QTable)")


def _describe_target(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"method '.{t}()'"
    for space in (torch, torch.nn.functional, torch.fft, torch.linalg, torch.special):  # as the user wrote it
        name = next((k for k, v in vars(space).items() if v is t and not k.startswith("_")), None)
        if name:
            return f"function '{space.__name__}.{name}'"
    module = getattr(t, "__module__", None) or ""
    return f"function '{module + '.' if module else ''}{getattr(t, '__name__', repr(t))}'"


def _describe_module(module: nn.Module) -> str:
    """``nn.LSTM`` for a class of ``torch.nn``, else its full dotted name."""
    cls = type(module)
    if getattr(nn, cls.__name__, None) is cls:
        return f"module nn.{cls.__name__}"
    return f"module {cls.__module__}.{cls.__name__}"


def _is_size_of(arg: Any) -> bool:
    """``arg`` is ``x.size(0)``, ``x.shape[0]`` or an int: a batch dimension in a flatten."""
    if isinstance(arg, int):
        return True
    if not isinstance(arg, fx.Node):
        return False
    if arg.op == "call_method" and arg.target == "size" and len(arg.args) == 2 and arg.args[1] == 0:
        return True
    if arg.op == "call_function" and arg.target is operator.getitem and arg.args[1] == 0:
        base = arg.args[0]
        return (isinstance(base, fx.Node) and ((base.op == "call_function" and base.target is getattr
                                                 and base.args[1] == "shape")
                                                or (base.op == "call_method" and base.target == "size"
                                                    and len(base.args) == 1)))
    return False


def _flatten_dims(node: fx.Node) -> Optional[tuple[int, int]]:
    """``(start_dim, end_dim)`` when ``node`` flattens all but the batch dimension, else ``None``."""
    args, kwargs = node.args, node.kwargs
    if node.op == "call_function" and node.target is torch.flatten or (node.op == "call_method"
                                                                      and node.target == "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return (start, end) if start == 1 and end == -1 else None
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if len(shape) == 2 and shape[1] == -1 and _is_size_of(shape[0]):
            return (1, -1)
    if node.op == "call_function" and node.target is torch.reshape and len(args) == 2:
        shape = tuple(args[1])
        if len(shape) == 2 and shape[1] == -1 and _is_size_of(shape[0]):
            return (1, -1)
    return None


_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_SOFTMAX_CALLS = (F.log_softmax, torch.log_softmax, "log_softmax", F.softmax, torch.softmax, "softmax")
_ADD_FUNCTIONS = (operator.add, torch.add)


def _is_shape_helper(node: fx.Node) -> bool:
    """``x.size(...)``, ``x.shape`` and indexing into them: shape arithmetic, not data."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        base = node.args[0]
        return isinstance(base, fx.Node) and _is_shape_helper(base)
    return False


def _fold_batchnorm(gm: fx.GraphModule) -> None:
    """Fold every BatchNorm that alone consumes a Conv/Linear output into that layer (eval statistics)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            fuse = fuse_conv_bn_eval
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fuse = fuse_linear_bn_eval
        else:
            continue
        modes = layer.training, bn.training
        layer.eval(), bn.eval()
        fused = fuse(layer, bn)
        fused.train(modes[0])
        _set_submodule(gm, prev.target, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)


#: Modules that pass their input's format on: a role looks through them (a BatchNorm, max pooling, a ReLU).
_FORMAT_KEEPING = (nn.Identity, nn.Dropout, nn.Flatten, QFlatten, nn.MaxPool1d, nn.MaxPool2d, QMaxPool2d)


def _role(node: fx.Node, module: Optional[nn.Module], modules: dict) -> Optional[str]:
    """The role of ``node``'s output that decides its format (:meth:`QConfig.for_role`): a ReLU's own output,
    or the input of the only user, a BatchNorm or a ReLU (through layers that keep the format, such as max
    pooling)."""
    if isinstance(module, (nn.ReLU, nn.ReLU6, QReLU, QReLU6)):
        return "relu"
    while True:
        if len(node.users) != 1:
            return None
        user = next(iter(node.users))
        if not (user.op == "call_module" and isinstance(modules.get(user.target), _FORMAT_KEEPING)):
            break
        node = user
    used_by = modules.get(user.target) if user.op == "call_module" else None
    if isinstance(used_by, (nn.BatchNorm1d, nn.BatchNorm2d, QBatchNorm1d, QBatchNorm2d)):
        return "pre_batchnorm"
    if isinstance(used_by, (nn.ReLU, nn.ReLU6, QReLU, QReLU6)) or \
            (user.op == "call_function" and user.target in _RELU_FUNCTIONS):
        return "pre_relu"
    return None


def _set_submodule(gm: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _fresh_name(gm: nn.Module, base: str) -> str:
    name, i = base.replace(".", "_"), 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


def _binarize_input(gm: fx.GraphModule, node: fx.Node, modules: dict[str, nn.Module]) -> None:
    """A binary layer reads ``±1``: put a ``QSign`` (named ``<layer>_sign``) before it unless its input is binary."""
    arg = node.args[0]
    if arg.op == "call_module" and isinstance(gm.get_submodule(arg.target), (QSign, QThermometer)):
        return
    name = _fresh_name(gm, f"{node.target}_sign")
    gm.add_submodule(name, QSign())
    with gm.graph.inserting_before(node):
        sign = gm.graph.call_module(name, (arg,))
    node.replace_input_with(arg, sign)


def _output_width(layer: nn.Module, input_width: int) -> int:
    if isinstance(layer, (QSign, QThermometer, QBinaryLinear, QBinaryConv1d, QBinaryConv2d)):
        return layer.formats()["output"].width
    q = getattr(layer, "output_quantizer", None)
    return input_width if q is None else q.base_type.width


_FROM_FLOAT: dict[type, type] = {
    nn.Linear: QLinear, nn.Conv1d: QConv1d, nn.Conv2d: QConv2d, nn.BatchNorm1d: QBatchNorm1d,
    nn.BatchNorm2d: QBatchNorm2d, nn.LeakyReLU: QLeakyReLU, nn.AvgPool2d: QAvgPool2d,
    nn.AdaptiveAvgPool2d: QAdaptiveAvgPool2d, nn.ReLU: QReLU, nn.ReLU6: QReLU6,
    nn.PReLU: QPReLU, RPReLU: QRPReLU,
}
_WITH_INPUT_WIDTH = (QLinear, QConv1d, QConv2d, QBatchNorm1d, QBatchNorm2d, QLeakyReLU, QAvgPool2d,
                     QAdaptiveAvgPool2d, QPReLU, QRPReLU)


_BINARY: dict[type, type] = {nn.Linear: QBinaryLinear, nn.Conv1d: QBinaryConv1d, nn.Conv2d: QBinaryConv2d}


def _convert_module(module: nn.Module, cfg: LayerQConfig, input_width: int) -> nn.Module:
    if cfg.binary:
        if type(module) not in _BINARY:
            raise ValueError("binary=True applies to nn.Linear, nn.Conv1d and nn.Conv2d only")
        return _BINARY[type(module)].from_float(module, cfg)
    structural = convert_rules.convert_module(module, cfg, input_width)
    if structural is not None:
        return structural
    for float_type, qtype in _FROM_FLOAT.items():
        if type(module) is float_type:
            if qtype in _WITH_INPUT_WIDTH:
                return qtype.from_float(module, cfg, input_width=input_width)
            return qtype.from_float(module, cfg)
    if type(module) is nn.MaxPool2d:
        return QMaxPool2d.from_float(module, None)  # the maximum keeps the input's format: no cast
    if type(module) is nn.Flatten:
        return QFlatten.from_float(module)
    if type(module) in TABLE_MODULES:
        return QTable.from_float(module, cfg)
    if type(module) in (nn.Softmax, nn.LogSoftmax):
        return QSoftmax.from_float(module, cfg)
    raise KeyError(type(module))


def _qfx_type(module: nn.Module) -> Optional[type]:
    structural = convert_rules.module_type(module)
    if structural is not None:
        return structural
    if type(module) is nn.MaxPool2d:
        return QMaxPool2d
    if type(module) is nn.Flatten:
        return QFlatten
    if type(module) in TABLE_MODULES:
        return QTable
    if type(module) in (nn.Softmax, nn.LogSoftmax):
        return QSoftmax
    return _FROM_FLOAT.get(type(module))


def quantize_model(model: nn.Module, config: Optional[QConfig] = None, example_input: Any = None, *,
                   fold_batchnorm: bool = False) -> fx.GraphModule:
    """The fixed-point equivalent of the float ``model``, as a ``torch.fx.GraphModule``.

    The model is copied (the float model is left untouched) and traced with
    ``torch.fx.symbolic_trace`` semantics (qfx layers already present are
    leaves).  Then:

    * each graph input gets a :class:`~qfx.nn.QInput` (``config.input``),
      named ``<input>_quant``;
    * each supported module is replaced, under the same qualified name, by its
      qfx layer built with ``from_float`` (weights, biases and BatchNorm
      statistics copied) and the :class:`~qfx.nn.LayerQConfig` that
      ``config.resolve`` gives for that name and type;
    * residual adds (``a + b``, ``torch.add``) become :class:`~qfx.nn.QAdd`
      ``F.relu``/``torch.relu`` :class:`~qfx.nn.QReLU` and ``F.leaky_relu``
      :class:`~qfx.nn.QLeakyReLU`, as new submodules named after the node
      (``add``, ``add_1``, ``relu``...);
    * flattens to ``(N, -1)`` (``torch.flatten(x, 1)``, ``x.flatten(1)``,
      ``x.view(x.size(0), -1)``, ``x.reshape(...)``) become :class:`~qfx.nn.QFlatten`;
    * ``nn.MaxPool2d`` keeps its input's format (no cast), ``nn.Dropout`` is
      kept (active in training, the identity in eval) and ``nn.Identity`` too;
    * every layer's ``input_width`` is its producer's output width;
    * a Linear/Conv whose resolved config has ``binary=True`` becomes
      :class:`~qfx.nn.QBinaryLinear`/``QBinaryConv1d``/``QBinaryConv2d``
      (no bias; padding with ``-1``), with a :class:`~qfx.nn.QSign` named
      ``<layer>_sign`` before it unless its input is already binary (a
      ``QSign`` or a :class:`~qfx.nn.QThermometer`).

    Anything else raises :class:`UnsupportedOperationError` naming the
    operation, its node and module path, and what is supported.

    ``fold_batchnorm=True`` first folds each BatchNorm that directly follows
    a Conv/Linear (its only user) into that layer's weight and bias, using
    the running statistics: this changes the numerics (one quantized weight
    instead of a quantized weight, an activation cast and a quantized
    scale/shift) and makes the BatchNorm untrainable as such; it is what
    most hardware does.  Without it, BatchNorm becomes :class:`~qfx.nn.QBatchNorm2d`.

    ``example_input`` (a tensor, or a tuple for several inputs), when given,
    is run through the result once in eval mode: tensor shapes are recorded
    in the graph (``node.meta["tensor_meta"]``), which :func:`qfx.bit_cost`
    and :func:`qfx.summary` use, and global average pools learn their window.
    The result is in the training mode of ``model``; its binary points are
    the configuration's starting ones until :func:`qfx.calibrate` or
    training moves them.
    """
    config = config or QConfig()
    model = copy.deepcopy(model)
    try:
        gm = trace(model)
    except Exception as error:  # data-dependent control flow and the like
        raise UnsupportedOperationError(f"quantize_model: torch.fx could not trace {type(model).__name__}: "
                                        f"{error}") from error
    if fold_batchnorm:
        _fold_batchnorm(gm)
    graph = gm.graph
    modules = dict(gm.named_modules())
    width: dict[fx.Node, int] = {}

    def input_width_of(node: fx.Node, arg: Any) -> int:
        if not isinstance(arg, fx.Node) or arg not in width:
            raise _unsupported("input (not the output of a converted layer)", node,
                               detail=f": its argument {arg!r} has no fixed-point format")
        return width[arg]

    def insert_module(node: fx.Node, name: str, layer: nn.Module, args: tuple) -> fx.Node:
        name = _fresh_name(gm, name)
        gm.add_submodule(name, layer)
        with graph.inserting_after(node):
            new = graph.call_module(name, args)
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        return new

    for node in list(graph.nodes):
        if node.op == "placeholder":
            cfg = config.resolve(node.name, None, QInput, is_input=True)
            new = insert_module(node, f"{node.name}_quant", QInput(cfg), (node,))
            width[new] = cfg.output.width
        elif node.op == "output":
            continue
        elif node.op == "get_attr":
            raise _unsupported(f"attribute access '{node.target}' (a parameter or buffer used directly)", node)
        elif node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, QuantizedLayer) or isinstance(module, _PASSTHROUGH):
                first = node.args[0] if node.args else None
                out = input_width_of(node, first) if isinstance(module, _PASSTHROUGH) else None
                if isinstance(module, QuantizedLayer) and not isinstance(module, QFlatten):
                    out = _output_width(module, input_width_of(node, first))
                width[node] = out
                continue
            qtype = _qfx_type(module)
            if qtype is None:
                raise _unsupported(_describe_module(module), node, node.target)
            if len(node.args) != 1 or node.kwargs:
                raise _unsupported(f"call of nn.{type(module).__name__} with {len(node.args)} arguments", node,
                                   node.target)
            in_width = input_width_of(node, node.args[0])
            cfg = config.resolve(node.target, type(module), qtype, role=_role(node, module, modules))
            try:
                layer = _convert_module(module, cfg, in_width)
            except (TypeError, ValueError) as error:
                raise UnsupportedOperationError(f"quantize_model: cannot convert nn.{type(module).__name__} at "
                                                f"node '{node.name}', module path '{node.target}': {error}") from error
            _set_submodule(gm, node.target, layer)
            width[node] = _output_width(layer, in_width)
            if cfg.binary:
                _binarize_input(gm, node, modules)
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if _is_shape_helper(node):
                continue  # removed with the flatten it feeds; refused if anything else uses it
            dims = _flatten_dims(node)
            if dims is not None:
                in_width = input_width_of(node, node.args[0])
                new = insert_module(node, node.name, QFlatten(*dims), (node.args[0],))
                graph.erase_node(node)
                width[new] = in_width
            elif _structure(node, config, input_width_of, insert_module, width):
                pass
            elif node.op == "call_function" and target in _ADD_FUNCTIONS:
                a, b = (node.args + (None, None))[:2]
                alpha = node.kwargs.get("alpha", 1)
                extra = set(node.kwargs) - {"alpha"}
                if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or alpha != 1 or extra \
                        or len(node.args) != 2:
                    raise _unsupported(f"{_describe_target(node)} with arguments {node.args} {dict(node.kwargs)}",
                                       node, detail=" (only the sum of two tensors is supported)")
                input_width_of(node, a), input_width_of(node, b)  # both must carry a format
                cfg = config.resolve(node.name, None, QAdd, role=_role(node, None, modules))
                new = insert_module(node, node.name, QAdd(cfg), (a, b))
                graph.erase_node(node)
                width[new] = cfg.output.width
            elif node.op == "call_function" and target is F.leaky_relu:
                in_width = input_width_of(node, node.args[0])
                slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
                if not isinstance(slope, (int, float)):
                    raise _unsupported(f"F.leaky_relu with negative_slope {slope!r}", node,
                                       detail=" (the slope must be a number)")
                cfg = config.resolve(node.name, nn.LeakyReLU, QLeakyReLU)
                new = insert_module(node, node.name, QLeakyReLU(float(slope), cfg=cfg, input_width=in_width),
                                    (node.args[0],))
                graph.erase_node(node)
                width[new] = cfg.output.width
            elif table_function(target, node.kwargs) is not None and len(node.args) == 1:
                input_width_of(node, node.args[0])
                cfg = config.resolve(node.name, None, QTable)
                name, function = table_function(target, node.kwargs)
                new = insert_module(node, node.name, QTable(function, name, cfg), (node.args[0],))
                graph.erase_node(node)
                width[new] = cfg.output.width
            elif target in _SOFTMAX_CALLS:
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
                if not isinstance(dim, int) or len(node.args) > 2 or node.kwargs.get("dtype") is not None \
                        or set(node.kwargs) - {"dim", "dtype", "_stacklevel"}:
                    raise _unsupported(f"{_describe_target(node)} with arguments {node.args[1:]} {dict(node.kwargs)}",
                                       node, detail=" (give an integer dim, no dtype)")
                input_width_of(node, node.args[0])
                cfg = config.resolve(node.name, None, QSoftmax)
                layer = QSoftmax(dim, target in _SOFTMAX_CALLS[:3], cfg)
                new = insert_module(node, node.name, layer, (node.args[0],))
                graph.erase_node(node)
                width[new] = cfg.output.width
            elif node.op == "call_function" and target in _RELU_FUNCTIONS:
                in_width = input_width_of(node, node.args[0])
                cfg = config.resolve(node.name, nn.ReLU, QReLU, role="relu")
                new = insert_module(node, node.name, QReLU(cfg), (node.args[0],))
                graph.erase_node(node)
                width[new] = cfg.output.width
            else:
                raise _unsupported(_describe_target(node), node)
        else:  # pragma: no cover - fx has no other ops
            raise _unsupported(f"graph operation {node.op!r}", node)

    graph.eliminate_dead_code()
    for node in graph.nodes:  # a shape helper still used by something that is not a flatten
        if _is_shape_helper(node) and not all(u.op == "call_module" for u in node.users):
            user = next(iter(node.users))
            raise _unsupported(_describe_target(user), user, detail=f" (it uses the shape '{node.name}')")
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    _pair_layers(gm)
    gm.train(model.training)
    for name, module in gm.named_modules():  # errors in training name the quantizer's module path
        if hasattr(module, "int_bits_range"):
            module.path = name
            if config.learn_widths and module.learn_int_bits and getattr(module, "k", None) is None:
                module.learn_width()
    if example_input is not None:
        record_shapes(gm, example_input)
        _refuse_token_wise_dense(gm)
    return gm


def _pair_layers(gm: fx.GraphModule) -> None:
    """Pair each layer whose output, at every call, only one reader of a fused kind reads with that reader:
    a BatchNorm or a residual add with its ReLU (:meth:`QuantizedLayer.pair_with_relu`), a convolution or
    dense layer with its BatchNorm (:meth:`QuantizedLayer.pair_with_batchnorm`).  Training then casts both
    outputs, or the output and the statistics, in one pass each way."""
    modules = dict(gm.named_modules())
    kinds = (((QBatchNorm1d, QBatchNorm2d, QAdd), QReLU, "pair_with_relu"),
             ((QConv1d, QConv2d, QLinear), (QBatchNorm1d, QBatchNorm2d), "pair_with_batchnorm"))
    for producers, reader_type, pair in kinds:
        readers: dict[nn.Module, set] = {}
        for node in gm.graph.nodes:
            producer = modules.get(node.target) if node.op == "call_module" else None
            if not isinstance(producer, producers):
                continue
            users = list(node.users)
            reader = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
            qualifies = isinstance(reader, reader_type) and users[0].args == (node,) and not users[0].kwargs
            readers.setdefault(producer, set()).add(reader if qualifies else None)
        for producer, found in readers.items():
            if len(found) == 1 and None not in found:
                getattr(producer, pair)(found.pop())


def _refuse_token_wise_dense(gm: fx.GraphModule) -> None:
    """Refuse an ``nn.Linear`` applied to each position of an (N, L, C) input: no back end computes it yet."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), QLinear):
            continue
        meta = getattr(node.args[0], "meta", {}).get("tensor_meta")
        if meta is not None and len(meta.shape) != 2:
            raise _unsupported(f"nn.Linear on an input of shape {tuple(meta.shape)}", node, node.target,
                               detail=" (dense layers take (N, features) inputs; a layer applied to each position "
                                      "of an (N, L, C) input is not supported by the back ends: flatten first)")


def _structure(node: fx.Node, config: QConfig, input_width_of, insert_module, width: dict) -> bool:
    """Convert ``node`` by a rule of :mod:`qfx.convert_rules` (cat, -, *, constants, clamp, mean, pad...)."""
    try:
        rule = convert_rules.function_rule(node)
    except ValueError as error:
        raise _unsupported(_describe_target(node), node, detail=f" ({error})") from error
    if rule is None:
        return False
    widths = [input_width_of(node, a) for a in rule.inputs]
    cfg = config.resolve(node.name, rule.float_type, rule.qtype)
    layer = rule.build(cfg, widths)
    new = insert_module(node, node.name, layer, tuple(rule.inputs))
    node.graph.erase_node(node)
    q = getattr(layer, "output_quantizer", None)
    width[new] = widths[0] if q is None else q.base_type.width
    return True


def record_shapes(gm: fx.GraphModule, example_input: Any) -> None:
    """Run ``example_input`` once through ``gm`` in eval mode and record every node's tensor shape."""
    from torch.fx.passes.shape_prop import ShapeProp
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except RuntimeError as error:  # ShapeProp wraps a layer's own error (a format too wide, say): raise that one
        if isinstance(error.__cause__, (ValueError, TypeError)):
            raise error.__cause__.with_traceback(None) from None
        raise
    finally:
        gm.train(training)

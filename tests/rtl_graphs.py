"""Small graphs for the RTL tests: a hand-built one that exercises every rounding and overflow mode."""

from __future__ import annotations

import numpy as np

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value

#: Output formats of the branches of :func:`every_mode_graph`: each rounding mode, each overflow mode,
#: saturation bits, unsigned formats, and binary points outside the word.
BRANCH_TYPES = [
    FixedType(7, 3, rounding=q, overflow="SAT") for q in ("RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV",
                                                          "TRN", "TRN_ZERO")
] + [
    FixedType(5, 1, rounding="RND", overflow="SAT_ZERO"),
    FixedType(5, 2, rounding="TRN", overflow="SAT_SYM"),
    FixedType(1, 1, rounding="TRN", overflow="SAT_SYM"),
    FixedType(5, 2, signed=False, rounding="RND", overflow="SAT_SYM"),
    FixedType(5, 1, rounding="RND_CONV", overflow="WRAP"),
    FixedType(6, 1, rounding="TRN", overflow="WRAP", sat_bits=2),
    FixedType(5, 1, signed=False, rounding="RND", overflow="WRAP", sat_bits=2),
    FixedType(5, 1, rounding="TRN", overflow="WRAP_SM"),
    FixedType(5, 1, rounding="RND", overflow="WRAP_SM", sat_bits=1),
    FixedType(6, 1, rounding="TRN_ZERO", overflow="WRAP_SM", sat_bits=3),
    FixedType(4, 6, rounding="RND_INF", overflow="SAT"),  # binary point right of the word
    FixedType(4, -1, rounding="RND_MIN_INF", overflow="WRAP"),  # binary point left of the word
    FixedType(5, 3, signed=False, rounding="RND_ZERO", overflow="SAT"),
]


def every_mode_graph(channels: int = 4) -> Graph:
    """``x -> scale_shift`` once per format of :data:`BRANCH_TYPES`, the branches summed by exact adds.

    Each branch multiplies by per-channel constants (some negative) and
    adds a shift, so its cast drops bits and overflows on part of the
    inputs; the adds are wide enough to be exact, so any wrong bit in a
    branch changes the output.
    """
    x = Value("x", (channels,), FixedType(7, 3))
    rng = np.random.default_rng(7)
    scale_type, shift_type = FixedType(4, 1), FixedType(6, 2)
    nodes, branches = [], []
    for k, t in enumerate(BRANCH_TYPES):
        scale = rng.integers(scale_type.code_min, scale_type.code_max, channels, endpoint=True)
        shift = rng.integers(shift_type.code_min, shift_type.code_max, channels, endpoint=True)
        node = Node(f"branch {k}", "scale_shift", ("x",), Value(f"branch {k}", (channels,), t),
                    constants={"scale": Constant(scale, (scale_type,)), "shift": Constant(shift, (shift_type,))})
        nodes.append(node)
        branches.append(node.output)
    total = branches[0]
    for k, branch in enumerate(branches[1:]):
        t = total.type.add_type(branch.type)
        node = Node(f"sum.{k}", "add", (total.name, branch.name), Value(f"sum.{k}", (channels,), t))
        nodes.append(node)
        total = node.output
    return Graph("every mode", [x], nodes, [total.name]).check()


def khot_mlp_graph() -> tuple[Graph, np.ndarray]:
    """A two-layer MLP with 2-hot weights from PyTorch; returns the graph and golden input codes."""
    import torch
    from torch import nn

    import qfx
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(300, 6) * 2
    qm = qfx.quantize_model(model, qfx.QConfig(multiplier_free="khot:2", weight_granularity="channel"),
                            example_input=x)
    qfx.calibrate(qm, [x])
    qm.eval()
    graph = qfx.export(qm, x, name="khot mlp")
    _check_torch_agrees(graph, qm, x)
    return graph, qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)


def conv_graph() -> tuple[Graph, np.ndarray]:
    """Conv 3x3, BatchNorm, LeakyReLU, pointwise conv with a residual add, ReLU6, flatten, dense (PyTorch)."""
    import torch
    from torch import nn

    import qfx

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.act = nn.LeakyReLU(0.125)
            self.pw = nn.Conv2d(3, 3, 1)
            self.act6 = nn.ReLU6()
            self.fc = nn.Linear(27, 4)

        def forward(self, x):
            y = self.act(self.bn(self.conv(x)))
            y = self.act6(self.pw(y) + y)
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(1)
    model = Net()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(256, 1, 3, 3) * 2
    config = qfx.QConfig(weight=6, overrides={"fc": {"rounding": "RND", "overflow": "WRAP"},
                                              "pw": {"accum": 12}})
    qm = qfx.quantize_model(model, config, example_input=x)
    qfx.calibrate(qm, [x])
    qm.eval()
    graph = qfx.export(qm, x, name="conv net")
    _check_torch_agrees(graph, qm, x)
    return graph, qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)


def softmax_graph() -> Graph:
    """A dense layer and a softmax head: the softmax is an op the Verilog back ends do not take."""
    import torch
    from torch import nn

    import qfx
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    model = qfx.quantize_model(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), qfx.QConfig(), example_input=x)
    qfx.calibrate(model, [x])
    return qfx.export(model.eval(), x[:1])


def _check_torch_agrees(graph: Graph, model, x) -> None:
    """The interpreter's outputs equal the PyTorch model's, so the vectors are PyTorch's golden outputs."""
    import qfx
    golden = model(x).detach().double().numpy()
    assert (qfx.ir.run(graph, x.numpy()) == golden).all()


# ------------------------------------------------------- streaming designs

def _conv(name, x, cout, k, rng, stride=1, pad=1, t=FixedType(8, 3, rounding="RND", overflow="SAT"), bias=True,
          khot=False, dims=2):
    """A random conv node (K-hot weights: at most two CSD digits each)."""
    cin = x.shape[0]
    if khot:
        from qfx.rtl import csd_digits

        allowed = [c for c in range(-64, 64) if len(csd_digits(c)) <= 2]
        w = rng.choice(allowed, size=(cout, cin) + (k,) * dims)
    else:
        w = rng.integers(-100, 100, size=(cout, cin) + (k,) * dims)
    consts = {"weight": Constant(w, (FixedType(8, 1),))}
    if bias:
        consts["bias"] = Constant(rng.integers(-50, 50, size=cout), (FixedType(8, 2),))
    sp = [(n + 2 * pad - k) // stride + 1 for n in x.shape[1:]]
    attrs = {"stride": [stride] * dims, "padding": [[pad, pad]] * dims, "dilation": [1] * dims, "groups": 1}
    return Node(name, f"conv{dims}d", (x.name,), Value(name, (cout, *sp), t), attrs, consts)

def stream_cnn(h=8, w=8, khot=False, seed=0):
    """conv 3x3 (pad 1), ReLU, maxpool 2x2, conv 3x3, global average pooling, flatten, dense: random weights."""
    rng = np.random.default_rng(seed)
    x = Value("x", (2, h, w), FixedType(6, 2))
    n1 = _conv("c1", x, 4, 3, rng, khot=khot)
    r1 = Node("r1", "relu", ("c1",), Value("r1", n1.output.shape, FixedType(7, 3, signed=False)))
    oh, ow = h // 2, w // 2
    p1 = Node("p1", "maxpool2d", ("r1",), Value("p1", (4, oh, ow), r1.output.type),
              {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False})
    n2 = _conv("c2", p1.output, 6, 3, rng, khot=khot)
    n2.constants["weight"] = Constant(n2.constants["weight"].codes, tuple(FixedType(8, 1 + o % 3) for o in range(6)))
    divisor = Constant(np.array(1), (FixedType(8, 2 - (oh * ow).bit_length()),))  # 1 / (oh * ow) for powers of 2
    g = Node("g", "global_avgpool2d", ("c2",), Value("g", (6, 1, 1), FixedType(8, 3, rounding="RND")),
             constants={"divisor": divisor})
    f = Node("f", "flatten", ("g",), Value("f", (6,), g.output.type))
    wd = rng.integers(-60, 60, size=(3, 6)) if not khot else rng.choice([1, 2, -4, 6, -3, 0], size=(3, 6))
    d = Node("d", "dense", ("f",), Value("d", (3,), FixedType(9, 4, rounding="RND_CONV", overflow="SAT")),
             constants={"weight": Constant(wd, (FixedType(7, 1),)),
                        "bias": Constant(rng.integers(-9, 9, 3), (FixedType(6, 2),))})
    return Graph("small cnn", [x], [n1, r1, p1, n2, g, f, d], ["d"]).check()


def stream_residual(seed=1, khot=False):
    """A ResNet-style block (conv, BatchNorm, ReLU, conv, add) and a strided block with a 1x1 shortcut conv."""
    rng = np.random.default_rng(seed)
    t = FixedType(8, 3, rounding="RND", overflow="SAT")
    x = Value("x", (3, 6, 6), FixedType(6, 2))
    a = _conv("stem", x, 4, 3, rng, khot=khot)
    ra = Node("stem relu", "relu", ("stem",), Value("stem relu", a.output.shape, FixedType(7, 3, signed=False)))
    b = _conv("b1", ra.output, 4, 3, rng, khot=khot)
    bn = Node("bn", "scale_shift", ("b1",), Value("bn", b.output.shape, t),
              constants={"scale": Constant(rng.integers(-20, 20, 4), (FixedType(6, 1),)),
                         "shift": Constant(rng.integers(-20, 20, 4), (FixedType(6, 2),))})
    rb = Node("b1 relu", "relu", ("bn",), Value("b1 relu", b.output.shape, FixedType(7, 3, signed=False)))
    c = _conv("b2", rb.output, 4, 3, rng, khot=khot)
    add = Node("add", "add", ("b2", "stem relu"),
               Value("add", c.output.shape, FixedType(9, 4, rounding="RND", overflow="SAT")))
    down = _conv("down", add.output, 4, 1, rng, stride=2, pad=0, khot=khot)
    main = _conv("main", add.output, 4, 3, rng, stride=2, pad=1, khot=khot)
    add2 = Node("add2", "add", ("main", "down"), Value("add2", main.output.shape, FixedType(9, 4)))
    g = Node("g", "global_avgpool2d", ("add2",), Value("g", (4, 1, 1), FixedType(8, 3, rounding="RND")),
             constants={"divisor": Constant(np.array(7), (FixedType(8, 6),))})
    f = Node("f", "flatten", ("g",), Value("f", (4,), g.output.type))
    d = Node("d", "dense", ("f",), Value("d", (5,), FixedType(9, 4, rounding="RND_CONV", overflow="SAT")),
             constants={"weight": Constant(rng.integers(-60, 60, size=(5, 4)), (FixedType(7, 1),))})
    return Graph("residual net", [x], [a, ra, b, bn, rb, c, add, down, main, add2, g, f, d], ["d"]).check()


def stream_cnn1d(seed=2):
    """conv1d, ReLU, 1-d maxpool (between reshapes), conv1d without padding, 1-d avgpool, flatten, dense."""
    rng = np.random.default_rng(seed)
    x = Value("x", (2, 20), FixedType(6, 2))
    a = _conv("c1", x, 4, 3, rng, dims=1)
    r = Node("r", "relu", ("c1",), Value("r", a.output.shape, FixedType(7, 3, signed=False)))
    w2 = Node("r 2d", "flatten", ("r",), Value("r 2d", (4, 1, 20), r.output.type))
    p = Node("p", "maxpool2d", ("r 2d",), Value("p", (4, 1, 10), r.output.type),
             {"kernel": [1, 2], "stride": [1, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False})
    back = Node("p 1d", "flatten", ("p",), Value("p 1d", (4, 10), r.output.type))
    b = _conv("c2", back.output, 4, 3, rng, dims=1, pad=0)
    ap = Node("b 2d", "flatten", ("c2",), Value("b 2d", (4, 1, 8), b.output.type))
    avg = Node("avg", "avgpool2d", ("b 2d",), Value("avg", (4, 1, 4), FixedType(8, 3)),
               {"kernel": [1, 2], "stride": [1, 2], "padding": [0, 0]},
               {"divisor": Constant(np.array(1), (FixedType(2, 0),))})
    f = Node("f", "flatten", ("avg",), Value("f", (16,), avg.output.type))
    d = Node("d", "dense", ("f",), Value("d", (3,), FixedType(10, 5, rounding="RND")),
             constants={"weight": Constant(rng.integers(-60, 60, size=(3, 16)), (FixedType(7, 1),)),
                        "bias": Constant(rng.integers(-9, 9, 3), (FixedType(6, 2),))})
    return Graph("cnn1d", [x], [a, r, w2, p, back, b, ap, avg, f, d], ["d"]).check()


def stream_depthwise(seed=3):
    """A depthwise conv2d with dilation 2 down the rows and asymmetric padding, on a 7x9 image."""
    rng = np.random.default_rng(seed)
    x = Value("x", (4, 7, 9), FixedType(6, 2))
    attrs = {"stride": [1, 1], "padding": [[1, 0], [2, 1]], "dilation": [2, 1], "groups": 4}
    n = Node("dw", "conv2d", ("x",), Value("dw", (4, 4, 10), FixedType(8, 4)), attrs,
             {"weight": Constant(rng.integers(-9, 9, size=(4, 1, 3, 3)), (FixedType(5, 1),))})
    return Graph("depthwise", [x], [n], ["dw"]).check()

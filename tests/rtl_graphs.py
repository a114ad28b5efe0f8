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


def _check_torch_agrees(graph: Graph, model, x) -> None:
    """The interpreter's outputs equal the PyTorch model's, so the vectors are PyTorch's golden outputs."""
    import qfx
    golden = model(x).detach().double().numpy()
    assert (qfx.ir.run(graph, x.numpy()) == golden).all()

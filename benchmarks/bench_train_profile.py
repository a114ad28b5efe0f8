"""Where a qfx training step's time goes, next to the float step's: the profile behind ``bench_train.py``.

The two ResNet-20 models of ``bench_train.py`` (float, and qfx with every op
quantized and every binary point learned) are built once and measured in
this one process, interleaved round by round (medians over ``--rounds``),
so that a change in the machine's load hits both alike:

1. **phases**: wall time per step of the forward pass with the loss, the
   backward pass and the SGD step;
2. **convolutions in the network**: the PyTorch profiler's time per step in
   the convolutions' forward (``aten::mkldnn_convolution``) and backward
   (``aten::convolution_backward``) kernels, and the number of ATen
   operations a step dispatches; then the wall clock without the profiler,
   whose own work between the operations changes what surrounds them: each
   convolution's forward call (the function wrapped), layer by layer in call
   order, and the backward pass node by node (a hook before and after every
   node of the step's graph), summed per kind of node;
3. **the same convolutions alone**: every ``aten::convolution`` of one
   step, captured with its operands, run again one by one outside the
   network (timed by the profiler as in 2); a difference that exists in the network and not alone comes
   from what surrounds the convolutions (the working set, the code between
   them), not from the convolutions;
4. **fixed cost per block**: one convolution (16 to 16 channels, 3x3),
   BatchNorm and ReLU, quantized as above, on a 2x16x4x4 input, where every
   kernel takes microseconds, on one thread: forward and backward, the cost
   a layer pays whatever the batch;
5. **one small operation**: a multiplication of 64 values timed right
   after every convolution layer of a step (a forward hook), then the same
   multiplication once more, and in a loop.  The first pays for code and
   data the convolution has just pushed out of the caches; the second and
   the loop do not.  Each different small operation a quantized layer adds
   (per-channel bookkeeping, allocations, kernel calls) pays that once per
   layer, which a loop over one operation never shows.

Nothing here asserts on time.  Run::

    python benchmarks/bench_train_profile.py                  # batch 8, 9 rounds
    python benchmarks/bench_train_profile.py --batch 64 --rounds 5
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bench_train import build, data, log, make_step  # noqa: E402

MODELS = ("float", "qfx")
CONV_KEYS = {"forward": "aten::mkldnn_convolution", "backward": "aten::convolution_backward"}


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def row(label: str, per_model: dict[str, list[float]], ratios: list[float]) -> None:
    print(f"{label:<34} {median_ms(per_model['float']):10.2f} {median_ms(per_model['qfx']):10.2f} "
          f"{statistics.median(ratios):9.2f}x")


def header(title: str) -> None:
    print(f"\n{title}\n{'':<34} {'float ms':>10} {'qfx ms':>10} {'qfx/float':>10}")


# ------------------------------------------------------------------ phases
def phases(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, rounds: int) -> None:
    """Forward with the loss, backward and SGD step, each timed per step."""
    optimizers = {v: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for v, m in models.items()}
    names = ("forward", "backward", "optimizer", "step")
    times = {name: {v: [] for v in models} for name in names}
    for _ in range(rounds):
        for v, model in models.items():
            t0 = time.perf_counter()
            optimizers[v].zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            optimizers[v].step()
            t3 = time.perf_counter()
            for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                times[name][v].append(seconds)
    header("phases of one step (wall)")
    for name in names:
        row(name, times[name], [q / f for q, f in zip(times[name]["qfx"], times[name]["float"])])
    params = {v: sum(1 for _ in m.parameters()) for v, m in models.items()}
    print(f"parameters the optimizer steps: float {params['float']}, qfx {params['qfx']}")


# ------------------------------------------------------------ convolutions
def in_network(steps: dict[str, Callable[[], None]], rounds: int) -> None:
    """The profiler's convolution time per step, and the ATen operations a step dispatches."""
    conv = {key: {v: [] for v in steps} for key in CONV_KEYS}
    ops = {v: 0.0 for v in steps}
    for _ in range(rounds):
        for v, step in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as p:
                step()
            events = {e.key: e for e in p.key_averages()}
            for key, name in CONV_KEYS.items():
                conv[key][v].append(events[name].cpu_time_total / 1e6 if name in events else 0.0)
            ops[v] = sum(e.count for e in events.values() if e.key.startswith("aten::"))
    header("convolutions in the network (profiler, per step)")
    for key in CONV_KEYS:
        row(key, conv[key], [q / f for q, f in zip(conv[key]["qfx"], conv[key]["float"])])
    print(f"ATen operations per step (profiler, nested ones included): float {ops['float']:.0f}, "
          f"qfx {ops['qfx']:.0f}")


def per_layer(steps: dict[str, Callable[[], None]], rounds: int) -> None:
    """Each convolution's call timed by the wall clock in the network, layer by layer in call order.

    The function both models call (``F.conv2d``, which ``nn.Conv2d`` looks up at each call and
    ``QConv2d`` holds as ``_conv``) is wrapped for the measurement: no profiler, whose own work between
    the operations would change what surrounds them."""
    from qfx.nn.linear import QConv2d

    original, held = F.conv2d, QConv2d.__dict__["_conv"]
    calls: list[float] = []

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        calls.append(time.perf_counter() - t0)
        return out

    times: dict[str, list[list[float]]] = {v: [] for v in steps}
    F.conv2d, QConv2d._conv = timed, staticmethod(timed)
    try:
        for _ in range(rounds):
            for v, step in steps.items():
                calls.clear()
                step()
                times[v].append(list(calls))
    finally:
        F.conv2d, QConv2d._conv = original, held
    layers = range(len(times["float"][0]))
    each = {v: [statistics.median(r[i] for r in times[v]) for i in layers] for v in steps}
    header("convolutions in the network, each call's wall time (forward; no profiler)")
    row(f"all {len(layers)}, summed", {v: [sum(r) for r in times[v]] for v in steps},
        [sum(q) / sum(f) for q, f in zip(times["qfx"], times["float"])])
    print("qfx/float per layer, in call order: " + " ".join(f"{q / f:.2f}" for q, f in zip(each["qfx"], each["float"])))


def _graph_nodes(root) -> list:
    """Every node of the autograd graph below ``root``."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(f for f, _ in node.next_functions)
    return list(seen)


def backward_nodes(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, rounds: int) -> None:
    """The backward pass node by node: a hook before and after every node of the step's graph, the wall time
    between them summed per kind of node (the hooks' own cost, a few microseconds a node, included)."""
    optimizers = {v: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for v, m in models.items()}
    sums: dict[str, dict[str, list[float]]] = {v: {} for v in models}
    counts: dict[str, dict[str, int]] = {v: {} for v in models}
    for _ in range(rounds):
        for v, model in models.items():
            optimizers[v].zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            spent: dict[str, float] = {}
            started: dict = {}
            handles = []
            counts[v] = {}
            for node in _graph_nodes(loss.grad_fn):
                kind = node.name().rpartition("::")[2]
                counts[v][kind] = counts[v].get(kind, 0) + 1
                handles.append(node.register_prehook(
                    lambda grads, node=node: started.__setitem__(node, time.perf_counter())))
                handles.append(node.register_hook(lambda inputs, outputs, node=node, kind=kind: spent.__setitem__(
                    kind, spent.get(kind, 0.0) + time.perf_counter() - started[node])))
            loss.backward()
            for handle in handles:  # a parameter's AccumulateGrad node outlives the step
                handle.remove()
            optimizers[v].step()
            for kind, seconds in spent.items():
                sums[v].setdefault(kind, []).append(seconds)
    per_kind = {kind: {v: median_ms(sums[v][kind]) if kind in sums[v] else 0.0 for v in models}
                for kind in {kind for v in models for kind in sums[v]}}
    print("\nbackward by node (wall; hooks before and after each node), per step")
    print(f"{'':<34} {'float ms':>10} {'qfx ms':>10} {'nodes':>10}")
    for kind, ms in sorted(per_kind.items(), key=lambda item: -max(item[1].values())):
        if max(ms.values()) >= 0.05:
            nodes = "/".join(str(counts[v].get(kind, 0)) for v in models)
            print(f"{kind:<34} {ms['float']:10.2f} {ms['qfx']:10.2f} {nodes:>10}")
    print(f"{'all, summed':<34} " + " ".join(f"{sum(ms[v] for ms in per_kind.values()):10.2f}" for v in models))


class _Capture(TorchDispatchMode):
    """Every ``aten.convolution`` of one step, with detached copies of its operands."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.calls.append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
        return func(*args, **(kwargs or {}))


def alone(steps: dict[str, Callable[[], None]], rounds: int) -> None:
    """Each model's convolutions of one step run again, one by one, outside the network (forward only)."""
    captured = {}
    for v, step in steps.items():
        with _Capture() as capture:
            step()
        captured[v] = capture.calls
    times: dict[str, list[float]] = {v: [] for v in steps}
    with torch.no_grad():
        for _ in range(rounds):
            for v, calls in captured.items():
                with profile(activities=[ProfilerActivity.CPU]) as p:
                    for args in calls:
                        torch.ops.aten.convolution.default(*args)
                events = {e.key: e for e in p.key_averages()}
                times[v].append(events[CONV_KEYS["forward"]].cpu_time_total / 1e6)
    header(f"the same convolutions alone ({len(captured['qfx'])} per step, forward; profiler, as above)")
    row("forward", times, [q / f for q, f in zip(times["qfx"], times["float"])])


# --------------------------------------------------------------- one block
def block_cost(rounds: int) -> None:
    """Forward and backward of one conv + BatchNorm + ReLU on a tiny input, one thread."""
    import qfx

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))

    def block() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())

    quantized = qfx.quantize_model(block(), qfx.QConfig(weight=8, activation=8, learn_int_bits=True),
                                   example_input=x)
    qfx.calibrate(quantized, [x])
    models = {"float": block().train(), "qfx": quantized.train()}
    times = {phase: {v: [] for v in models} for phase in ("forward", "backward")}
    for model in models.values():
        for _ in range(20):
            model(x).sum().backward()
    for _ in range(rounds * 20):
        for v, model in models.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = model(x).sum()
            t1 = time.perf_counter()
            out.backward()
            t2 = time.perf_counter()
            times["forward"][v].append(t1 - t0)
            times["backward"][v].append(t2 - t1)
    torch.set_num_threads(threads)
    header("fixed cost of one conv + BatchNorm + ReLU block (2x16x4x4, one thread)")
    for phase, samples in times.items():
        row(phase, samples, [q / f for q, f in zip(samples["qfx"], samples["float"])])


# ------------------------------------------------------- one small operation
def small_operation(models: dict[str, nn.Module], steps: dict[str, Callable[[], None]], rounds: int) -> None:
    """One small PyTorch operation (64 values times 0.5) timed right after every convolution layer of a step,
    twice in a row, and the same operation in a loop: what a small operation costs where a quantized layer
    runs its own, right after a convolution, against what a loop over it shows."""
    probe = torch.ones(64)
    samples: dict[str, list[float]] = {}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        t0 = time.perf_counter()
        probe.mul(0.5)
        t1 = time.perf_counter()
        probe.mul(0.5)
        t2 = time.perf_counter()
        samples.setdefault("first", []).append(t1 - t0)
        samples.setdefault("second", []).append(t2 - t1)

    times = {key: {v: [] for v in models} for key in ("first", "second", "loop")}
    for _ in range(rounds):
        for v, model in models.items():
            handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__.endswith("Conv2d")]
            samples.clear()
            steps[v]()
            for handle in handles:
                handle.remove()
            for key in ("first", "second"):
                times[key][v].append(statistics.median(samples[key]))
            t0 = time.perf_counter()
            for _ in range(1000):
                probe.mul(0.5)
            times["loop"][v].append((time.perf_counter() - t0) / 1000)
    print("\none small operation (64 values x 0.5), median per call (wall)")
    print(f"{'':<34} {'float us':>10} {'qfx us':>10}")
    labels = {"first": "after a convolution layer", "second": "right after that one", "loop": "in a loop"}
    for key, label in labels.items():
        print(f"{label:<34} {1e6 * statistics.median(times[key]['float']):10.1f} "
              f"{1e6 * statistics.median(times[key]['qfx']):10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per measurement (default 9)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = data(args.batch)
    log(f"building float and qfx at batch {args.batch}")
    models = {v: build(v, x) for v in MODELS}
    steps = {v: make_step(m, x, y) for v, m in models.items()}
    log("warm-up: 4 steps each")
    for step in steps.values():
        for _ in range(4):
            step()
    print(f"ResNet-20 training step, batch {args.batch}, {args.threads} threads, torch {torch.__version__}; "
          f"medians of {args.rounds} interleaved rounds; qfx/float is the median of the rounds' own ratios")
    log("phases")
    phases(models, x, y, args.rounds)
    log("convolutions in the network")
    in_network(steps, args.rounds)
    per_layer(steps, args.rounds)
    backward_nodes(models, x, y, args.rounds)
    log("convolutions alone")
    alone(steps, args.rounds)
    log("one block")
    block_cost(args.rounds)
    log("one small operation")
    small_operation(models, steps, args.rounds)
    load = os.getloadavg()
    print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

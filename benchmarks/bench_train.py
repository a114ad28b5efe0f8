"""Training-step time of ResNet-20: float, qfx (every op quantized, binary points learned) and Brevitas.

One training step is forward, cross-entropy loss, backward and an SGD step
(momentum 0.9) on a random batch of CIFAR-shaped images
(3x32x32, 10 classes).  Four models of the same ResNet-20 (the one in
``examples/resnet20_cifar10.py``: 3 stages of 3 basic blocks, 16/32/64
channels, 1x1 convolution + BatchNorm shortcuts) are timed in this one
process, interleaved, for each batch size of ``--batch`` (64 and 8 by default:
at 8 the fixed per-call cost of every layer weighs most):

* **float**: the plain PyTorch model.
* **compiled**: the float model under ``torch.compile`` (Inductor, its default
  mode), for reference: what compilation alone gains; compiled during
  warm-up, not measured for memory.
* **qfx**: ``qfx.quantize_model(model, QConfig(weight=8, activation=8,
  learn_int_bits=True))``, calibrated once (``qfx.calibrate``) as QAT
  starts: input, every convolution's weights and output, every BatchNorm's
  scale, shift and output, every ReLU, every residual add, the pooling and
  the linear layer's weights, bias and output are cast to 8-bit
  ``ap_fixed`` (16-bit bias), each with a learned binary point.  The casts
  run through qfx's fused native kernels (``qfx.fused``), compiled on first
  use, during warm-up; ``QFX_FUSED_KERNELS=0`` times the PyTorch fallback.
* **brevitas**: the same network from Brevitas layers with 8-bit
  power-of-two fixed point: ``QuantIdentity`` on the input, ``QuantConv2d``
  with ``Int8WeightPerTensorFixedPoint`` weights and
  ``Int8ActPerTensorFixedPoint`` outputs, BatchNorm followed by a
  ``QuantIdentity``, ``QuantReLU`` with ``Uint8ActPerTensorFixedPoint``, a
  ``QuantIdentity`` after every residual add and after the pooling, and a
  ``QuantLinear`` with 8-bit weights and outputs (its bias stays float).
  Brevitas's activation quantizers first collect runtime statistics (300
  training steps by default, a percentile per step) and only then train
  their radix point; here that phase is cut to 2 steps
  (``collect_stats_steps=2``) and passed during warm-up, so the timing
  sees its steady state, as it does for qfx.

Timing: ``torch.set_num_threads(--threads)`` (default 2),
``OMP_WAIT_POLICY=PASSIVE``; ``--warmup`` steps per model, then
``--repeats`` rounds, each timing ``--steps`` consecutive steps of every
model in turn (round-robin, so a change in machine load hits them all
alike).  The table gives the median wall time per step and the ratios
qfx/float, qfx/compiled and qfx/brevitas (the ratio of the medians, and the
median of each round's own ratio, which a load that changes between rounds
moves less), and the same for the process's CPU time
(``time.process_time``, all threads summed), which other processes on a
shared machine disturb much less than the wall time, and the minor page
faults per step (memory the allocator handed back to the system between
steps and touched again); the load average is printed with the table.
Models timed in one process share glibc's heap, and one model's step can
leave it trimmed for the next (thousands of faults per step for qfx at
batch 64 in some runs, none when qfx runs alone); ``--fixed-malloc`` fixes
glibc's mmap threshold at 32 MiB and its trim threshold at 1 GiB
(``mallopt``) for the timing process, every model alike, to time them
without that.

Memory: each model is also trained for a few steps in a fresh subprocess
of its own, which reports its peak resident set size (``VmHWM`` of
``/proc/self/status``: the most the process ever held in RAM at once, the
torch libraries included; unlike ``getrusage``'s ``ru_maxrss`` it is not
inherited from the parent across ``exec``) and, to separate the training
working set from the libraries and the model, the growth of that peak
over the resident size (``VmRSS``) just before the first step.

Where the time goes (phases, convolutions in the network and alone, the
backward pass node by node, the fixed cost of one block, one small
operation after a convolution): ``benchmarks/bench_train_profile.py``.

Nothing here asserts on time.  Run::

    python benchmarks/bench_train.py                     # batches 64 and 8, 5 steps x 7 repeats
    python benchmarks/bench_train.py --steps 2 --repeats 3 --batch 32 --variants float,qfx
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from resnet20_cifar10 import ResNet20  # noqa: E402

VARIANTS = ("float", "compiled", "qfx", "brevitas")
NUM_CLASSES = 10


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ models
def build_qfx(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """ResNet-20 with every op quantized to 8 bits, binary points learned, calibrated on ``x``."""
    import qfx

    qmodel = qfx.quantize_model(model, qfx.QConfig(weight=8, activation=8, learn_int_bits=True),
                                example_input=x[:2])
    qfx.calibrate(qmodel, [x])
    return qmodel


def build_brevitas(model: nn.Module) -> nn.Module:
    """The Brevitas ResNet-20 described in the module docstring, with ``model``'s weights."""
    import brevitas.nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint,
                                Uint8ActPerTensorFixedPoint)

    # Statistics phase cut from 300 steps to 2 (see the module docstring).
    act = Int8ActPerTensorFixedPoint.let(collect_stats_steps=2)
    uact = Uint8ActPerTensorFixedPoint.let(collect_stats_steps=2)

    def conv(c: nn.Conv2d) -> nn.Module:
        q = qnn.QuantConv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False,
                            weight_quant=Int8WeightPerTensorFixedPoint, output_quant=act)
        q.weight.data.copy_(c.weight.data)
        return q

    def bn(b: nn.BatchNorm2d) -> nn.Module:
        return nn.Sequential(b, qnn.QuantIdentity(act_quant=act))

    class Block(nn.Module):
        def __init__(self, block: nn.Module) -> None:
            super().__init__()
            self.conv1, self.bn1, self.relu1 = conv(block.conv1), bn(block.bn1), qnn.QuantReLU(act_quant=uact)
            self.conv2, self.bn2 = conv(block.conv2), bn(block.bn2)
            self.shortcut = (nn.Sequential(conv(block.shortcut[0]), bn(block.shortcut[1]))
                             if isinstance(block.shortcut, nn.Sequential) else nn.Identity())
            self.add = qnn.QuantIdentity(act_quant=act)
            self.relu2 = qnn.QuantReLU(act_quant=uact)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu2(self.add(out + self.shortcut(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input = qnn.QuantIdentity(act_quant=act)
            self.conv1, self.bn1, self.relu = conv(model.conv1), bn(model.bn1), qnn.QuantReLU(act_quant=uact)
            self.layers = nn.Sequential(*[Block(b) for stage in (model.layer1, model.layer2, model.layer3)
                                          for b in stage])
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), qnn.QuantIdentity(act_quant=act))
            self.fc = qnn.QuantLinear(64, NUM_CLASSES, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                                      output_quant=act)
            self.fc.weight.data.copy_(model.fc.weight.data)
            self.fc.bias.data.copy_(model.fc.bias.data)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn1(self.conv1(self.input(x))))
            return self.fc(torch.flatten(self.pool(self.layers(x)), 1))

    return Net()


def build(variant: str, x: torch.Tensor) -> nn.Module:
    """The model of ``variant`` in training mode (same float weights for all, seed 0)."""
    torch.manual_seed(0)
    model = ResNet20(NUM_CLASSES)
    if variant == "qfx":
        model = build_qfx(model, x)
    elif variant == "brevitas":
        model = build_brevitas(model)
    model.train()
    return torch.compile(model) if variant == "compiled" else model


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step (forward, loss, backward, SGD) of ``model`` on ``(x, y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (batch,), generator=g)


# ------------------------------------------------------------------ memory
def _status_bytes(field: str) -> int:
    """A size field of ``/proc/self/status`` (Linux; ``VmRSS`` now, ``VmHWM`` the peak), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(variant: str, batch: int, steps: int) -> dict:
    """Peak RSS of a process that trains only ``variant`` for ``steps`` steps (run in a subprocess)."""
    x, y = data(batch)
    step = make_step(build(variant, x), x, y)
    before = _status_bytes("VmRSS")
    for _ in range(steps):
        step()
    peak = _status_bytes("VmHWM")
    return {"variant": variant, "peak_rss": peak, "rss_before_training": before, "training_growth": peak - before}


def measure_memory(variant: str, batch: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--memory-of", variant, "--batch", str(batch),
               "--threads", str(args.threads), "--memory-steps", str(args.memory_steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ timing
def time_batch(batch: int, variants: list[str], args: argparse.Namespace) -> None:
    """Build, warm up and time every variant at one batch size, then print its table."""
    x, y = data(batch)
    steps = {}
    for v in variants:
        log(f"batch {batch}: building {v}")
        steps[v] = make_step(build(v, x), x, y)
    for v in variants:  # Brevitas's statistics phase (2 steps) and torch.compile's compilation end here too
        log(f"batch {batch}: warm-up {v}: {max(args.warmup, 3)} steps")
        for _ in range(max(args.warmup, 3)):
            steps[v]()
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    faults: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants:
            start, start_cpu = time.perf_counter(), time.process_time()
            start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(args.steps):
                steps[v]()
            times[v].append((time.perf_counter() - start) / args.steps)
            cpu[v].append((time.process_time() - start_cpu) / args.steps)
            faults[v].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults) / args.steps)
        log(f"batch {batch}, repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{v} {1e3 * times[v][-1]:.1f} ms" for v in variants))
    memory = {} if args.no_memory else {v: measure_memory(v, batch, args) for v in variants if v != "compiled"}

    median = {v: statistics.median(t) for v, t in times.items()}
    median_cpu = {v: statistics.median(t) for v, t in cpu.items()}
    load = os.getloadavg()
    print(f"ResNet-20 training step, batch {batch}, 3x32x32, SGD; torch {torch.__version__}, "
          f"{args.threads} threads; median of {args.repeats} x {args.steps} steps, round-robin")
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print("allocator: " + ("glibc's mmap and trim thresholds fixed (--fixed-malloc)" if args.fixed_malloc
                           else "the C library's defaults"))
    if "qfx" in variants:
        from qfx.fused import native
        print("qfx casts: " + ("fused native kernels" if native.library() is not None else "PyTorch fallback"))
    header = (f"{'model':<9} {'median ms/step':>14} {'min':>8} {'max':>8} {'vs float':>8} "
              f"{'CPU ms/step':>11} {'vs float':>8} {'faults/step':>11}")
    if memory:
        header += f" {'peak RSS MiB':>12} {'training growth MiB':>19}"
    print(header)
    print("-" * len(header))
    for v in variants:
        line = (f"{v:<9} {1e3 * median[v]:14.1f} {1e3 * min(times[v]):8.1f} {1e3 * max(times[v]):8.1f} "
                f"{median[v] / median['float'] if 'float' in median else float('nan'):7.2f}x "
                f"{1e3 * median_cpu[v]:11.1f} "
                f"{median_cpu[v] / median_cpu['float'] if 'float' in median_cpu else float('nan'):7.2f}x "
                f"{statistics.median(faults[v]):11.0f}")
        if v in memory:
            line += f" {memory[v]['peak_rss'] / 2**20:12.0f} {memory[v]['training_growth'] / 2**20:19.0f}"
        print(line)
    if "qfx" in median:
        for peer in ("float", "compiled", "brevitas"):
            if peer in median:
                rounds = statistics.median(q / f for q, f in zip(times["qfx"], times[peer]))
                print(f"qfx / {peer}: {median['qfx'] / median[peer]:.2f}x wall, "
                      f"{median_cpu['qfx'] / median_cpu[peer]:.2f}x CPU; median of the rounds' own ratios "
                      f"{rounds:.2f}x wall")
    print()


def fix_malloc() -> None:
    """glibc's mmap threshold fixed at 32 MiB (its largest) and its trim threshold at 1 GiB: freed memory stays
    in the heap for the next step, whichever model freed it (``SystemExit`` where the C library has no
    ``mallopt``)."""
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or not (mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30)):
        raise SystemExit("--fixed-malloc: this C library has no glibc mallopt to fix the thresholds with")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="consecutive steps per timed sample (default 5)")
    p.add_argument("--repeats", type=int, default=7, help="timed samples per model (default 7)")
    p.add_argument("--batch", default="64,8", help="images per step, comma-separated: one table each (default 64,8)")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per model first (default 4, at least 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of float,compiled,qfx,brevitas")
    p.add_argument("--memory-steps", type=int, default=4, help="steps of each memory subprocess (default 4)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--fixed-malloc", action="store_true",
                   help="fix glibc's mmap and trim thresholds for the timing (see the module docstring)")
    p.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # the memory subprocess itself
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",") if b]
    if args.memory_of:
        print(json.dumps(memory_child(args.memory_of, batches[0], args.memory_steps)))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")

    if args.fixed_malloc:
        fix_malloc()
    for batch in batches:
        time_batch(batch, variants, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

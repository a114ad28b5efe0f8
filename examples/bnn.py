"""A FracBNN-style binarized network on the digits: fixed-point, multiplier-free element-wise layers.

    python examples/bnn.py [--out out/bnn] [--epochs 40] [--qat-epochs 20] [--qat-lr 5e-3] [--channels 32] [--levels 8]
                           [--seed 0] [--quick] [--no-synth] [--no-hls] [--force]

The network (after FracBNN, FPGA 2021): a thermometer encoding of the input
(8 levels per pixel, 8 binary channels), a binary 3x3 convolution, then
binary 3x3 convolutions with BatchNorm, RPReLU and residual shortcuts,
average pooling, and a fixed-point classifier (8-bit weights and logits).
Binary layers compute ``2 * popcount(xnor) - N``; the element-wise layers (BatchNorm, RPReLU,
the shortcut adds, pooling) are where a binarized accelerator spends its
multipliers, and what this example quantizes:

1. trains the binarized network with float element-wise layers (the reference);
2. for 8, 6 and 4 bits of BatchNorm/RPReLU constants and activations:
   PTQ (convert, calibrate) and QAT (learned binary points, from PTQ);
3. at 4 bits, K-hot (K = 1, 2) BatchNorm scales and RPReLU slopes (QAT):
   shift-add only;
4. per row: test accuracy, bit-operations, and the LUT/DSP48E2 count Yosys
   (``synth_xilinx -family xcup``) gives for the element-wise layers with
   constants (BatchNorm, RPReLU) on qfx's RTL back end, one pixel (all
   channels in parallel) per layer;
5. the chosen row (QAT, 4-bit, K = 1) exported to the IR and run in the
   C++ emulator on every test image: bit-exact with PyTorch or exit 1;
6. the Vitis HLS project of the chosen row for the Ultra96-V2 (io_stream:
   binary convolutions on packed words with a line buffer), C-simulated on
   every test image against PyTorch's codes (``--out``/hls; exit 1 on any
   mismatch).

Prints the table and writes ``metrics.json`` and ``bnn.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import qfx  # noqa: E402
import qfx.hls  # noqa: E402
from digits import accuracy, atomic_write, load_data, prepare_out, split_validation, train  # noqa: E402
from qfx.boards import load_board  # noqa: E402
from qfx.ir import Graph, Value  # noqa: E402
from qfx.nn import QBinaryConv2d, QSign, QThermometer, RPReLU  # noqa: E402

#: The element-wise layers with constant multipliers (BatchNorm, RPReLU), counted with Yosys.  The shortcut
#: adds have none; the RTL top takes one input tensor, so they are not synthesized alone.
ELEMENTWISE_OPS = ("scale_shift", "prelu")
QAT_LR = 5e-3


class FracBNN(nn.Module):
    """Thermometer -> binary conv -> BN -> RPReLU; two residual binary blocks around an average pool; FC head."""

    def __init__(self, channels: int = 32, levels: int = 8) -> None:
        super().__init__()
        c = channels
        self.thermo = QThermometer(levels)  # 1 channel -> `levels` binary channels
        self.conv0 = QBinaryConv2d(levels, c, 3, padding=1)
        self.bn0, self.act0 = nn.BatchNorm2d(c), RPReLU(c)
        self.sign1, self.conv1 = QSign(), QBinaryConv2d(c, c, 3, padding=1)
        self.bn1, self.act1 = nn.BatchNorm2d(c), RPReLU(c)
        self.pool = nn.AvgPool2d(2)
        self.sign2, self.conv2 = QSign(), QBinaryConv2d(c, c, 3, padding=1)
        self.bn2, self.act2 = nn.BatchNorm2d(c), RPReLU(c)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv0(self.thermo(x))))
        x = self.act1(self.bn1(self.conv1(self.sign1(x))) + x)
        x = self.pool(x)
        x = self.act2(self.bn2(self.conv2(self.sign2(x))) + x)
        return self.fc(self.flatten(self.gap(x)))


#: The fixed-point classifier's weights and logits: 8 bits whatever the element-wise width.  Logits of 4 bits
#: tie (the top two codes equal) on about one test image in six, and a tie is read as the first class.
CLASSIFIER_BITS = 8


def qconfig(bits: int, khot, learn: bool) -> qfx.QConfig:
    """``bits`` for BatchNorm scale/shift, RPReLU slopes and shifts and every element-wise activation; the
    classifier's weights and logits at :data:`CLASSIFIER_BITS`."""
    return qfx.QConfig(weight=CLASSIFIER_BITS, bias=16, activation=bits, input="ap_ufixed<8,1>", scale=bits,
                       shift=bits, multiplier_free=None if khot is None else {"batchnorm": f"khot:{khot}"},
                       learn_int_bits=learn, overrides={"fc": {"activation": CLASSIFIER_BITS}})


# ----------------------------------------------------------------------------- hardware counts
def elementwise_graphs(graph: Graph) -> list[Graph]:
    """Each element-wise node of ``graph`` alone, on one pixel (its channels in parallel)."""
    values = graph.values()
    found = []
    for node in graph.nodes:
        if node.op not in ELEMENTWISE_OPS:
            continue
        inputs = [Value(f"{name}_pixel", (values[name].shape[0],) + (1,) * (len(values[name].shape) - 1),
                        values[name].type) for name in node.inputs]
        output = Value(node.name, (node.output.shape[0],) + (1,) * (len(node.output.shape) - 1), node.output.type)
        single = type(node)(name=node.name, op=node.op, inputs=tuple(v.name for v in inputs), output=output,
                            attrs=node.attrs, constants=node.constants, formats=node.formats, label=node.label)
        found.append(Graph(f"{graph.name}_{node.name}", inputs, [single], [node.name]).check())
    return found


def synthesize_elementwise(graph: Graph) -> dict:
    """LUT and DSP48E2 summed over the element-wise layers (one pixel each), from Yosys on the RTL back end."""
    import qfx.rtl
    from qfx.rtl.synth import synthesize
    total = {"LUT": 0, "DSP48E2": 0, "layers": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for k, g in enumerate(elementwise_graphs(graph)):
            directory = pathlib.Path(tmp) / f"layer{k}"
            qfx.rtl.generate(g, directory)
            for res in synthesize(directory, per_layer=False).values():
                total["LUT"] += int(res.lut)
                total["DSP48E2"] += int(res.dsp)
            total["layers"] += 1
    return total


def hls_check(graph: Graph, x: torch.Tensor, expected: np.ndarray, target: pathlib.Path) -> dict:
    """The Ultra96-V2 io_stream project of ``graph`` at ``target``, C-simulated on ``x``; its golden output codes
    (from ``qfx.ir``) compared with PyTorch's outputs ``expected``."""
    inputs = qfx.hls.float_inputs(graph, x.numpy())
    project = qfx.hls.write_project(qfx.hls.generate(graph, load_board("ultra96v2"), "stream", inputs), target,
                                    force=True)
    report = qfx.hls.run_csim(project)
    output = graph.output_values[0]
    golden_path = project / "tb" / "data" / f"{qfx.hls.project.safe_names(graph)[output.name]}.txt"
    golden = np.loadtxt(golden_path, dtype=np.int64, ndmin=2) * 2.0 ** -output.type.frac_bits
    return {"project": str(project), "ok": report.ok, "mismatches": report.mismatches, "samples": report.samples,
            "summary": report.summary(), "equals_pytorch": bool(np.array_equal(golden, expected.reshape(len(x), -1)))}


# ----------------------------------------------------------------------------- output
def plot(path: pathlib.Path, metrics: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics["rows"]
    columns = ["row", "test acc", "bit-ops", "LUT (elem.)", "DSP48E2 (elem.)"]
    cells = [[r["row"], f"{100 * r['accuracy']:.2f}%", f"{r['bit_ops'] / 1e6:.2f}M" if r["bit_ops"] else "-",
              str(r["lut"]) if r["lut"] is not None else "-", str(r["dsp"]) if r["dsp"] is not None else "-"]
             for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="center")
    table.scale(1, 1.4)
    ax.set_title("FracBNN-style binarized network on digits: element-wise layers in fixed point")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bnn", help="output directory (default out/bnn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40, help="training epochs of the float-element-wise network")
    parser.add_argument("--qat-epochs", type=int, default=20, help="QAT epochs per row")
    parser.add_argument("--qat-lr", type=float, default=QAT_LR, help="QAT learning rate of the weights")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--levels", type=int, default=8, help="thermometer levels per pixel")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4], help="element-wise widths")
    parser.add_argument("--quick", action="store_true", help="fast smoke run (few epochs, small model)")
    parser.add_argument("--no-synth", action="store_true", help="skip the Yosys counts")
    parser.add_argument("--no-hls", action="store_true", help="skip the HLS project and its C simulation")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.qat_epochs, args.channels = min(args.epochs, 2), min(args.qat_epochs, 1), 8
    out = pathlib.Path(args.out)
    prepare_out(out, args.force)
    synth = not args.no_synth and shutil.which("yosys") is not None

    start = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    if args.quick:
        x_tr, y_tr, x_te, y_te = x_tr[:200], y_tr[:200], x_te[:60], y_te[:60]
    x_tr, y_tr, x_val, y_val = split_validation(x_tr, y_tr, args.seed)
    example = x_te[:2]
    print(f"digits: {len(y_tr)} train / {len(y_val)} validation / {len(y_te)} test images; "
          f"{args.channels} channels, {args.levels} thermometer levels; seed {args.seed}")

    model = FracBNN(args.channels, args.levels)
    train(model, x_tr, y_tr, epochs=args.epochs, lr=5e-3, seed=args.seed, batch_size=64, desc="float",
          quiet=True, validation=(x_val, y_val))
    float_acc = accuracy(model, x_te, y_te)
    rows = [{"row": "float element-wise", "bits": None, "method": "float", "khot": None, "accuracy": float_acc,
             "bit_ops": None, "lut": None, "dsp": None}]
    print(f"float element-wise: {100 * float_acc:.2f}%")

    def ptq_model(bits: int, khot, learn: bool) -> nn.Module:
        q = qfx.quantize_model(model, qconfig(bits, khot, learn), example)
        qfx.calibrate(q, [x_tr])
        return q

    def qat_model(bits: int, khot) -> nn.Module:
        q = ptq_model(bits, khot, learn=True)
        torch.manual_seed(args.seed)
        train(q, x_tr, y_tr, epochs=args.qat_epochs, lr=args.qat_lr, seed=args.seed + 1,
              batch_size=64, desc=f"QAT {bits}", quiet=True, validation=(x_val, y_val))
        return q

    def record(name: str, q: nn.Module, bits: int, method: str, khot) -> dict:
        q.eval()
        row = {"row": name, "bits": bits, "method": method, "khot": khot, "accuracy": accuracy(q, x_te, y_te),
               "bit_ops": float(qfx.bit_cost(q, example).detach()), "lut": None, "dsp": None}
        if synth:
            counts = synthesize_elementwise(qfx.export(q, example))
            row["lut"], row["dsp"] = counts["LUT"], counts["DSP48E2"]
        rows.append(row)
        print(f"{name}: {100 * row['accuracy']:.2f}%")
        return row

    chosen = None
    for bits in args.bits:
        record(f"PTQ {bits}-bit", ptq_model(bits, None, learn=False), bits, "PTQ", None)
        record(f"QAT {bits}-bit", qat_model(bits, None), bits, "QAT", None)
    low = min(args.bits)
    for k in (1, 2):
        q = qat_model(low, k)
        record(f"QAT {low}-bit K-hot K={k}", q, low, "QAT", k)
        if k == 1:
            chosen = q

    # The chosen row on every test image: PyTorch eval = the C++ emulator, code for code.
    graph = qfx.export(chosen, example)
    torch_out = chosen(x_te).detach().double().numpy()
    emulated = qfx.emulator.emulate(graph, x_te.numpy())
    mismatches = int((emulated != torch_out).sum())
    emulated_acc = float((emulated.argmax(1) == y_te.numpy()).mean())
    hls = None if args.no_hls else hls_check(graph, x_te, torch_out, out / "hls")

    print()
    header = f"{'row':<24} {'test acc':>9} {'bit-ops':>12} {'LUT (elem.)':>12} {'DSP48E2 (elem.)':>16}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lut = "-" if r["lut"] is None else str(r["lut"])
        dsp = "-" if r["dsp"] is None else str(r["dsp"])
        ops = "-" if r["bit_ops"] is None else f"{r['bit_ops']:,.0f}"
        print(f"{r['row']:<24} {100 * r['accuracy']:8.2f}% {ops:>12} {lut:>12} {dsp:>16}")
    print("\nelement-wise LUT/DSP48E2: Yosys synth_xilinx -family xcup of the RTL back end's BatchNorm and RPReLU "
          "layers, one pixel each (all channels in parallel)" if synth else
          "\nelement-wise LUT/DSP48E2: not counted (--no-synth or no yosys)")
    print(f"chosen row (QAT {low}-bit K-hot K=1) in the C++ emulator on all {len(y_te)} test images: "
          f"{mismatches} mismatching codes, accuracy {100 * emulated_acc:.2f}%"
          + (" - bit-exact" if mismatches == 0 else " - NOT bit-exact"))
    if hls is not None:
        print(f"chosen row as an Ultra96-V2 HLS project ({hls['project']}, io_stream), C-simulated on all "
              f"{len(y_te)} test images: {hls['summary']}; outputs equal PyTorch's: "
              f"{'yes, every code' if hls['equals_pytorch'] else 'NO'}")

    by = {r["row"]: r for r in rows}
    qat_low, ptq_low = by[f"QAT {low}-bit"], by[f"PTQ {low}-bit"]
    targets = {
        f"qat_{low}bit_within_1pt_of_float": qat_low["accuracy"] >= float_acc - 0.01,
        f"qat_{low}bit_ge_ptq": qat_low["accuracy"] >= ptq_low["accuracy"],
        "khot_rows_0_dsp": (all(r["dsp"] == 0 for r in rows if r["khot"]) if synth else None),
        "chosen_row_bit_exact_in_emulator": mismatches == 0,
        "chosen_row_bit_exact_in_hls_csim": None if hls is None else hls["ok"] and hls["equals_pytorch"],
    }
    elapsed = time.perf_counter() - start
    print("\ntargets:" + "".join(f"\n  {k:<36} {'ok' if v else ('n/a' if v is None else 'MISSED')}"
                                 for k, v in targets.items()))
    print(f"\nruntime {elapsed:.1f} s, load average {os.getloadavg()[0]:.2f} at the end; wrote "
          f"{out / 'metrics.json'} and {out / 'bnn.png'}")
    metrics = {"seed": args.seed, "epochs": args.epochs, "qat_epochs": args.qat_epochs, "channels": args.channels,
               "levels": args.levels, "quick": args.quick, "n_train": len(y_tr), "n_test": len(y_te),
               "rows": rows, "emulator_mismatches": mismatches, "emulator_accuracy": emulated_acc, "hls": hls,
               "load_average": os.getloadavg()[0],
               "targets": targets, "runtime_s": elapsed, "torch": torch.__version__}

    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")

    atomic_write(out / "metrics.json", write_json)
    plot(out / "bnn.png", metrics)
    return 0 if mismatches == 0 and targets["chosen_row_bit_exact_in_hls_csim"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())

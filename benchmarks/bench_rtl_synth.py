"""``qfx report --synth``'s two routes side by side: the whole top flattened against each layer in its place.

Designs: the digits CNN of ``make demo`` as streaming Verilog with 8-bit
weights (products as ``*``, DSP48E2) and with 2-hot weights (shift-add),
trained briefly and quantized by PTQ (``benchmarks/bench_rtl_stream.py``'s
``digits_graphs``), and a small unrolled design (dense 16->16, ReLU, dense
16->10, 2-hot weights).  For each design, interleaved:

* ``whole``: ``synthesize(route="whole", per_layer=False)``, one Yosys process over the flat top;
* ``report``: what ``qfx report --synth`` runs, the whole top beside the layers' runs, ``--jobs`` at once;
* ``serial``: ``route="modules"`` with one Yosys process at a time;
* ``parallel``: ``route="modules"`` with ``--jobs`` processes;
* ``rerun``: the parallel route again after one layer's file changed (a
  comment appended), with the cache of the previous run: only that layer's
  run is redone.

None but ``rerun`` reads a cache.  Each row gives the wall time, its ratio
to the whole route's, and the totals with their difference from the whole
route's (LUT includes LUTRAM).

    python benchmarks/bench_rtl_synth.py [--jobs N] [--epochs 3] [--designs digits,digits-khot,unrolled]
                                         [--routes whole,report,serial,parallel,rerun] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from qfx.format import FixedType  # noqa: E402
from qfx.ir import Constant, Graph, Node, Value  # noqa: E402
from qfx.rtl import csd_digits, generate  # noqa: E402
from qfx.rtl.design import read_design  # noqa: E402
from qfx.rtl.stream import generate_stream  # noqa: E402
from qfx.rtl.synth import default_jobs, synthesize  # noqa: E402

ROUTES = ("whole", "report", "serial", "parallel", "rerun")


def unrolled_graph() -> Graph:
    """Dense 16->16, ReLU, dense 16->10 with 2-hot weights: a small multiplier-free unrolled design."""
    rng = np.random.default_rng(7)
    two_hot = [c for c in range(-64, 64) if len(csd_digits(c)) <= 2]
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    w1 = Constant(rng.choice(two_hot, size=(16, 16)), (FixedType(7, 2),))
    w2 = Constant(rng.choice(two_hot, size=(10, 16)), (FixedType(7, 2),))
    nodes = [Node("fc1", "dense", ("x",), Value("fc1", (16,), t), constants={"weight": w1}),
             Node("relu", "relu", ("fc1",), Value("relu", (16,), t)),
             Node("fc2", "dense", ("relu",), Value("fc2", (10,), t), constants={"weight": w2})]
    return Graph("small unrolled", [Value("x", (16,), FixedType(8, 3))], nodes, ["fc2"]).check()


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="Yosys processes of the parallel route")
    parser.add_argument("--epochs", type=int, default=3, help="float epochs of the digits CNN (default 3)")
    parser.add_argument("--designs", default="digits,digits-khot,unrolled", help="which designs (comma-separated)")
    parser.add_argument("--routes", default=",".join(ROUTES), help="which routes (comma-separated)")
    parser.add_argument("--keep", type=pathlib.Path, default=None, help="keep the designs in this folder")
    args = parser.parse_args()
    names, routes = args.designs.split(","), [r for r in ROUTES if r in args.routes.split(",")]
    work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="bench-rtl-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load()}; {os.cpu_count()} cores, parallel route with {args.jobs} jobs", flush=True)
    graphs = {"unrolled": unrolled_graph()} if "unrolled" in names else {}
    if any(n.startswith("digits") for n in names):
        from bench_rtl_stream import digits_graphs
        graphs.update({n: g for n, (g, _) in digits_graphs(args.epochs).items() if n in names})
    rows = []
    for name in names:
        folder = work / name
        if name == "unrolled":
            generate(graphs[name], folder, pipeline=1, force=True)
        else:
            generate_stream(graphs[name], folder, vectors=2, force=True)
        cache = work / f"{name}-cache"
        shutil.rmtree(cache, ignore_errors=True)
        found = {}
        for route in routes:
            os.environ["QFX_CACHE_DIR"] = str(cache)
            if route == "rerun":
                design = read_design(folder)
                with open(folder / design.source(design.layers[0]), "a") as f:
                    f.write(f"// changed {time.time()}\n")
            start = time.perf_counter()
            flat = route in ("whole", "report")
            result = synthesize(folder, per_layer=route != "whole", route="whole" if flat else "modules",
                                jobs=1 if route == "serial" else args.jobs, cache=route in ("parallel", "rerun"))
            wall = time.perf_counter() - start
            redone = sum(not r.cached for key, r in result.items() if key != "total") + flat
            found[route] = (wall, result["total"], redone)
            print(f"{name} {route}: {wall:.0f} s, {redone} runs not cached (load {load()})", flush=True)
        for route, (wall, r, redone) in found.items():
            rows.append((name, route, wall, r, redone, found.get("whole")))
    print(f"\n{'design':<12} {'route':<9} {'wall s':>7} {'x whole':>8} {'LUT':>7} {'dLUT %':>7} {'FF':>6} "
          f"{'CARRY4':>7} {'DSP':>5} {'LUTRAM':>7} {'BRAM18eq':>8} {'redone':>6}")
    for name, route, wall, r, redone, whole in rows:
        ratio = f"{wall / whole[0]:.2f}" if whole else "-"
        delta = f"{100 * (r.lut - whole[1].lut) / whole[1].lut:+.1f}" if whole else "-"
        print(f"{name:<12} {route:<9} {wall:>7.0f} {ratio:>8} {r.lut:>7} {delta:>7} {r.ff:>6} {r.carry4:>7} {r.dsp:>5} "
              f"{r.lutram:>7} {2 * r.bram36 + r.bram18:>8} {redone:>6}")
    print(f"\nload average at end: {load()}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

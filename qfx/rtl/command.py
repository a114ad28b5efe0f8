"""``qfx rtl`` and ``qfx report --synth``: the command-line face of the Verilog back end (called by qfx.cli)."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Optional


from ..files import existing_file, load_array
from ..ir import input_codes, load
from .generate import DEFAULT_VECTORS, generate, random_codes
from .layers import RTLError
from .stream import STREAM_VECTORS, generate_stream
from .stream.plan import DSP_BUDGET, LUT_BUDGET
from .report import format_resources
from .synth import synthesize

__all__ = ["add_arguments", "main", "synth_report", "parse_parallel"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``qfx rtl``."""
    parser.add_argument("graph", metavar="GRAPH", type=existing_file, help="a graph saved by qfx (.json)")
    parser.add_argument("-o", "--output", metavar="DIR", type=pathlib.Path, required=True,
                        help="folder to write the design into")
    parser.add_argument("--arch", choices=("unrolled", "stream"), default="unrolled",
                        help="unrolled: every layer in space, one vector per cycle (default); stream: a pipeline of "
                             "streaming stages (line buffers, folded layers, AXI-Stream ports) for whole CNNs")
    parser.add_argument("--pipeline", metavar="N", type=int, default=0,
                        help="register stages between layers (0: combinational between the input and output "
                             "registers; latency is N + 2 cycles); --arch unrolled only")
    parser.add_argument("--adders", choices=("ternary", "two-term"), default=None,
                        help="--arch unrolled: sum constant products with ternary adders (three terms in one LUT6_2 "
                             "and CARRY8 per bit, UltraScale+ primitives; default) or two-term adders (plain "
                             "Verilog '+', any device)")
    parser.add_argument("--parallel", metavar="NODE=P[:G]", action="append", default=[],
                        help="--arch stream: output channels node NODE computes per step (a divisor of its output "
                             "channels), and for a convolution the G tap groups its window is split into, one a "
                             "step (a divisor of its taps; default 1); repeatable; default: balanced so that no "
                             "layer is the bottleneck")
    parser.add_argument("--dsp-budget", metavar="N", type=int, default=DSP_BUDGET,
                        help=f"--arch stream: the default parallelism keeps multipliers within N DSP48E2 (default "
                             f"{DSP_BUDGET}, the Ultra96-V2's)")
    parser.add_argument("--lut-budget", metavar="N", type=int, default=LUT_BUDGET,
                        help=f"--arch stream: the default parallelism keeps the estimated LUTs of shift-add (K-hot) "
                             f"products within N (default {LUT_BUDGET}, of the Ultra96-V2's 70560)")
    parser.add_argument("--top", metavar="NAME", default=None, help="top module name (default: the graph's name)")
    parser.add_argument("--inputs", metavar="NPY", type=existing_file, default=None,
                        help="float inputs (.npy, batch first) for the test vectors; default: random codes")
    parser.add_argument("--vectors", metavar="COUNT", type=int, default=None,
                        help=f"number of random test vectors when --inputs is not given (default {DEFAULT_VECTORS}, "
                             f"--arch stream {STREAM_VECTORS})")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists")


def main(args: argparse.Namespace) -> int:
    """Run ``qfx rtl``: write the Verilog, test vectors, cocotb test and README; 0 on success.

    Errors propagate: :func:`qfx.cli.main` turns each into one line and exit status 2.
    """
    if args.output.exists() and not args.force:  # before any work, in the command line's words
        raise FileExistsError(f"'{args.output}' exists; pass --force to replace it")
    parallel = parse_parallel(args.parallel)
    if args.arch == "unrolled" and parallel:
        raise RTLError("--parallel applies to --arch stream only")
    if args.arch == "stream" and args.pipeline:
        raise RTLError("--pipeline applies to --arch unrolled only (a streaming design registers every stage)")
    if args.arch == "stream" and args.adders is not None:
        raise RTLError("--adders applies to --arch unrolled only (a streaming design sums shifted digits in its "
                       "compute units)")
    graph = load(args.graph)
    if args.inputs is not None:
        if len(graph.inputs) != 1:
            raise RTLError(f"--inputs gives one array, but graph '{graph.name}' has {len(graph.inputs)} inputs; "
                           "leave it out for random test vectors (--vectors)")
        codes = input_codes(load_array(args.inputs), graph.inputs[0].type)
    else:
        default = STREAM_VECTORS if args.arch == "stream" else DEFAULT_VECTORS
        codes = random_codes(graph, default if args.vectors is None else args.vectors)
    if args.arch == "stream":
        directory = generate_stream(graph, args.output, parallel=parallel, inputs=codes, top=args.top,
                                    force=args.force, dsp_budget=args.dsp_budget,
                                    lut_budget=args.lut_budget)
    else:
        directory = generate(graph, args.output, pipeline=args.pipeline, inputs=codes, top=args.top,
                             force=args.force, ternary=args.adders != "two-term")
    print(f"wrote {directory} (simulate: pytest {directory / 'tb' / 'runner.py'}; resources: qfx report --synth "
          f"{directory})")
    return 0


def parse_parallel(items: list[str]) -> "dict[str, int | tuple[int, int]]":
    """``["conv1=4:3", "fc=2"]`` as ``{"conv1": (4, 3), "fc": 2}``; :class:`RTLError` naming a malformed item."""
    found = {}
    for item in items:
        name, equals, value = item.rpartition("=")
        numbers = value.split(":")
        if not equals or not name or len(numbers) > 2 or not all(n.isdigit() for n in numbers):
            raise RTLError(f"--parallel {item!r:.80}: expected NODE=P or NODE=P:G with P and G positive integers")
        found[name] = int(numbers[0]) if len(numbers) == 1 else (int(numbers[0]), int(numbers[1]))
    return found


def synth_report(directory: pathlib.Path, board: Any, route: str = "whole", jobs: Optional[int] = None,
                 cache: bool = True) -> str:
    """``qfx report --synth DIR``: Yosys per layer and in total, as a table with the share of ``board``.

    ``board`` is a board record (attributes ``lut``, ``ff``, ``dsp``; ``name``
    if present) or a dict with those keys (flat or under ``resources``, as in
    a board TOML).  ``route``, ``jobs`` and ``cache`` as in
    :func:`qfx.rtl.synth.synthesize`; progress goes to stderr, a line as
    each module starts and ends.  Raises :class:`~qfx.rtl.synth.YosysMissing`
    when Yosys is not installed.
    """
    found = synthesize(directory, route=route, jobs=jobs, cache=cache,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    return format_resources(found, board, route=route)

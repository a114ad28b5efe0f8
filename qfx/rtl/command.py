"""``qfx rtl`` and ``qfx report --synth``: the command-line face of the Verilog back end (called by qfx.cli)."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any


from ..files import existing_file, load_array
from ..ir import input_codes, load
from .generate import DEFAULT_VECTORS, generate, random_input_codes
from .report import format_resources
from .synth import synthesize

__all__ = ["add_arguments", "main", "synth_report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``qfx rtl``."""
    parser.add_argument("graph", metavar="GRAPH", type=existing_file, help="a graph saved by qfx (.json)")
    parser.add_argument("-o", "--output", metavar="DIR", type=pathlib.Path, required=True,
                        help="folder to write the design into")
    parser.add_argument("--pipeline", metavar="N", type=int, default=0,
                        help="register stages between layers (0: combinational between the input and output "
                             "registers; latency is N + 2 cycles)")
    parser.add_argument("--top", metavar="NAME", default=None, help="top module name (default: the graph's name)")
    parser.add_argument("--inputs", metavar="NPY", type=existing_file, default=None,
                        help="float inputs (.npy, batch first) for the test vectors; default: random codes")
    parser.add_argument("--vectors", metavar="COUNT", type=int, default=DEFAULT_VECTORS,
                        help=f"number of random test vectors when --inputs is not given (default {DEFAULT_VECTORS})")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists")


def main(args: argparse.Namespace) -> int:
    """Run ``qfx rtl``: write the Verilog, test vectors, cocotb test and README; 0 on success.

    Errors propagate: :func:`qfx.cli.main` turns each into one line and exit status 2.
    """
    if args.output.exists() and not args.force:  # before any work, in the command line's words
        raise FileExistsError(f"'{args.output}' exists; pass --force to replace it")
    graph = load(args.graph)
    if args.inputs is not None:
        codes = input_codes(load_array(args.inputs), graph.inputs[0].type)
    else:
        codes = random_input_codes(graph, args.vectors)
    directory = generate(graph, args.output, pipeline=args.pipeline, inputs=codes, top=args.top, force=args.force)
    print(f"wrote {directory} (simulate: pytest {directory / 'tb' / 'runner.py'}; resources: qfx report --synth "
          f"{directory})")
    return 0


def synth_report(directory: pathlib.Path, board: Any) -> str:
    """``qfx report --synth DIR``: Yosys per layer and in total, as a table with the share of ``board``.

    ``board`` is a board record (attributes ``lut``, ``ff``, ``dsp``; ``name``
    if present) or a dict with those keys (flat or under ``resources``, as in
    a board TOML).  Raises :class:`~qfx.rtl.synth.YosysMissing` when Yosys is
    not installed.
    """
    return format_resources(synthesize(directory), board)

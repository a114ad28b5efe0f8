"""The ``qfx`` command: ``hls``, ``csim``, ``build``, ``report`` and ``rtl``; thin wrappers over the library.

    qfx hls net.json --board ultra96v2 -o net_hls [--io stream] [--force]
    qfx csim net_hls
    qfx build net_hls [--cosim] [--export]
    qfx report net_hls [--synth [-j N] [--route whole|modules] [--no-cache]]
    qfx rtl ...                  (the RTL back end, qfx.rtl.command)

Each command prints its progress to stderr and its result to stdout, and
exits 0 on success, 1 when a check fails (a csim mismatch), 2 on a usage or
input error, with one line on stderr naming the input and the problem, never
a traceback (``QFX_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import subprocess
import sys
import time
from types import ModuleType
from typing import NoReturn, Optional

from .files import existing_file, load_array

__all__ = ["main", "build_parser"]

_RTL_MODULE = "qfx.rtl.command"


class _Progress:
    """``[step/total] what... done (1.2 s)`` lines on stderr for the long steps."""

    open_line = False  #: a step's line is begun but not ended (an error message starts a new line)

    def __init__(self, total: int) -> None:
        self.total, self.step, self.start = total, 0, 0.0

    def begin(self, what: str) -> None:
        self.step += 1
        self.start = time.perf_counter()
        print(f"[{self.step}/{self.total}] {what}...", end="", file=sys.stderr, flush=True)
        _Progress.open_line = True

    def end(self, note: str = "") -> None:
        extra = f", {note}" if note else ""
        print(f" done ({time.perf_counter() - self.start:.1f} s{extra})", file=sys.stderr, flush=True)
        _Progress.open_line = False


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``qfx hls: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """A count on the command line: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the count must be at least 1, got {value}")
    return value


def _rtl_module() -> Optional[ModuleType]:
    """The RTL back end's command module, or ``None`` while it is not installed."""
    try:
        return importlib.import_module(_RTL_MODULE)
    except ModuleNotFoundError as error:
        if error.name in ("qfx.rtl", _RTL_MODULE):
            return None
        raise


def _reuse(text: str) -> tuple[str, int]:
    name, _, value = text.rpartition("=")
    if not name or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected NODE=FACTOR with FACTOR >= 1, got {text!r}")
    return name, int(value)


# ------------------------------------------------------------ commands
def _cmd_hls(args: argparse.Namespace) -> int:
    from . import ir
    from .boards import load_board
    from .hls import default_inputs, float_inputs, generate, write_project
    if args.output.exists() and not args.force:
        raise FileExistsError(f"'{args.output}' exists; pass --force to replace it")
    progress = _Progress(3)
    progress.begin(f"loading {args.graph}")
    graph = ir.load(args.graph)
    board = load_board(args.board)
    progress.end(f"{len(graph.nodes)} nodes")
    if args.inputs is not None:
        floats = load_array(args.inputs)
        inputs = float_inputs(graph, floats)
    else:
        inputs = default_inputs(graph, args.samples, args.seed)
    reuse = dict(args.reuse_layer or [])
    if args.reuse != 1:
        reuse.setdefault("*", args.reuse)
    progress.begin(f"generating the io_{args.io} project for {board.name} ({len(inputs[0])} golden samples)")
    files = generate(graph, board, args.io, inputs, reuse)
    progress.end(f"{len(files)} files")
    progress.begin(f"writing {args.output}")
    path = write_project(files, args.output, force=args.force)
    progress.end()
    print(f"wrote {path} (board {board.name}, part {board.part}); next: qfx csim {path}")
    return 0


def _cmd_csim(args: argparse.Namespace) -> int:
    from .hls import run_csim
    progress = _Progress(1)
    progress.begin(f"compiling and running the testbench of {args.directory} (g++ + ap_types)")
    report = run_csim(args.directory)
    progress.end("compiled binary from cache" if report.cached else f"compile {report.compile_seconds:.1f} s")
    for tensor in report.tensors:
        if tensor.mismatches:
            print(f"  {tensor.name}: {tensor.mismatches} codes differ; first at {tensor.first}")
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_build(args: argparse.Namespace) -> int:
    from .hls.report import load_manifest
    from .hls.toolchain import vitis_command
    directory = pathlib.Path(args.directory)
    load_manifest(directory)
    command = vitis_command("build.tcl")
    options = f"csim={int(not args.no_csim)} synth=1 cosim={int(args.cosim)} export={int(args.export)}"
    print(f"running {' '.join(command)} in {directory} with QFX_BUILD_OPTIONS='{options}'", file=sys.stderr,
          flush=True)
    environment = {**os.environ, "QFX_BUILD_OPTIONS": options}
    return subprocess.run(command, cwd=directory, env=environment).returncode


def _cmd_report(args: argparse.Namespace) -> int:
    from .boards import load_board
    from .hls.report import format_report, load_manifest
    directory = pathlib.Path(args.directory)
    if args.synth:
        rtl = _rtl_module()
        if rtl is None:
            print(f"qfx report --synth: the RTL back end ({_RTL_MODULE}) is not installed in this qfx",
                  file=sys.stderr)
            return 2
        board_name = args.board or (load_manifest(directory)["board"] if (directory / "qfx.json").is_file()
                                    else "ultra96v2")
        options = {"route": args.route} if args.route else {}
        if args.jobs is not None:
            options["jobs"] = args.jobs
        if args.no_cache:
            options["cache"] = False
        print(rtl.synth_report(directory, load_board(board_name), **options))
        return 0
    print(format_report(directory, load_board(args.board) if args.board else None), end="")
    return 0


def _cmd_rtl(args: argparse.Namespace) -> int:
    rtl = _rtl_module()
    if rtl is None:
        print(f"qfx rtl: the RTL back end ({_RTL_MODULE}) is not installed in this qfx; use `qfx hls` for now",
              file=sys.stderr)
        return 2
    return int(rtl.main(args))


# -------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qfx`` and its subcommands."""
    from .boards import board_names
    parser = _Parser(prog="qfx", description="qfx: PyTorch models to FPGAs in fixed point, "
                                     "bit-exact with Vitis HLS ap_fixed.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hls = commands.add_parser("hls", help="generate a Vitis HLS project from a saved IR graph",
                              description="Generate a Vitis HLS project (firmware, testbench with golden codes, "
                                          "build and block-design Tcl, PYNQ driver) from a graph saved with "
                                          "qfx.ir.save(graph, 'net.json').")
    hls.add_argument("graph", type=existing_file, help="the IR graph (.json, with its .npz beside it)")
    hls.add_argument("--board", default="ultra96v2", choices=board_names(),
                     help="target board: sets the part, board part, clock and block design (default: ultra96v2)")
    hls.add_argument("-o", "--output", type=pathlib.Path, required=True,
                     help="project directory to create (refused if it exists, unless --force)")
    hls.add_argument("--io", choices=("parallel", "stream"), default="parallel",
                     help="parallel: partitioned arrays with AXI-Lite/m_axi; stream: hls::stream with AXI-Stream "
                          "and dataflow (default: parallel)")
    hls.add_argument("--force", action="store_true",
                     help="replace the output directory if it holds an earlier qfx project")
    hls.add_argument("--inputs", type=existing_file, metavar="FILE.npy",
                     help="float inputs (N, ...) for the testbench's golden vectors (default: random codes)")
    hls.add_argument("--samples", type=_count, default=256,
                     help="random golden samples when --inputs is not given (default: 256)")
    hls.add_argument("--seed", type=int, default=0, help="seed of the random golden samples (default: 0)")
    hls.add_argument("--reuse", type=_count, default=1, metavar="II",
                     help="initiation interval of every layer's pipelined loop: 1 is fully parallel, larger "
                          "values share multipliers (default: 1)")
    hls.add_argument("--reuse-layer", type=_reuse, action="append", metavar="NODE=II",
                     help="the same for one node (by its name in the graph); may be repeated")
    hls.set_defaults(run=_cmd_hls)

    csim = commands.add_parser("csim", help="C-simulate a project with g++ and compare every layer with qfx.ir",
                               description="Compile the firmware and testbench with g++ against the ap_types "
                                           "headers ($XILINX_HLS/include, else the hls4ml wheel), run every "
                                           "golden sample, and report bit-exact agreement; on a mismatch, the "
                                           "first differing layer.  Exit 1 on any mismatch.")
    csim.add_argument("directory", type=pathlib.Path, help="a project written by qfx hls")
    csim.set_defaults(run=_cmd_csim)

    build = commands.add_parser("build", help="run Vitis HLS on a project (csim, csynth, cosim, export)",
                                description="Run build.tcl under vitis-run (Vitis 2023.2+) or vitis_hls.")
    build.add_argument("directory", type=pathlib.Path, help="a project written by qfx hls")
    build.add_argument("--no-csim", action="store_true", help="skip Vitis C simulation")
    build.add_argument("--cosim", action="store_true", help="also run C/RTL co-simulation")
    build.add_argument("--export", action="store_true", help="also export the IP for the block design")
    build.set_defaults(run=_cmd_build)

    report = commands.add_parser("report", help="formats, bit operations and synthesis results of a project")
    report.add_argument("directory", type=pathlib.Path, help="a project written by qfx hls (or qfx rtl with --synth)")
    report.add_argument("--synth", action="store_true", help="the RTL back end's Yosys synthesis report")
    report.add_argument("--board", choices=board_names(), help="compare with this board's resources")
    report.add_argument("-j", "--jobs", metavar="N", type=_count, default=None,
                        help="--synth: Yosys processes at once (default: one per core, fewer where memory is short)")
    report.add_argument("--route", choices=("whole", "modules"), default=None,
                        help="--synth: the total from the whole top flattened as one netlist (whole, the default), "
                             "or the sum of each layer in its place with the other layers black boxes (modules: "
                             "parallel and faster on large designs, but no optimisation across layers, which "
                             "counted 17-26%% more LUT on the digits CNN)")
    report.add_argument("--no-cache", action="store_true",
                        help="--synth: run Yosys again instead of reusing the counts cached for the same files")
    report.set_defaults(run=_cmd_report)

    rtl_help = "generate Verilog from a saved IR graph (the RTL back end)"
    rtl = commands.add_parser("rtl", help=rtl_help, description=rtl_help)
    module = _rtl_module()
    if module is not None:
        module.add_arguments(rtl)
    else:
        rtl.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    rtl.set_defaults(run=_cmd_rtl)
    return parser


def _input_of(args: argparse.Namespace) -> Optional[str]:
    """The file or folder a command reads, to name in an error."""
    for name in ("graph", "directory"):
        if getattr(args, name, None) is not None:
            return str(getattr(args, name))
    return None


def describe_error(error: BaseException, source: Optional[str] = None) -> str:
    """One line naming ``source`` (the input) and what is wrong with it, for any exception."""
    if isinstance(error, OSError) and error.strerror and (error.filename or source):
        text = f"'{error.filename or source}': {error.strerror}"
        source = None  # the file named is the subject
    elif isinstance(error, MemoryError):
        text = "not enough memory to read or process it (the input is too large)"
    elif isinstance(error, RecursionError):
        text = "nested too deeply to read"
    elif isinstance(error, (ValueError, OSError, LookupError, RuntimeError)) and str(error):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    if source and source not in text:
        text = f"{source}: {text}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``qfx`` with ``argv`` (default: the command line); returns the exit status.

    Any error becomes one line on stderr and exit status 2; ``QFX_DEBUG=1``
    raises it instead, with its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, its one line already printed)
        return int(stop.code or 0)
    try:
        return args.run(args)
    except (Exception, KeyboardInterrupt) as error:
        if os.environ.get("QFX_DEBUG"):
            raise
        start = "\n" if _Progress.open_line else ""
        _Progress.open_line = False
        if isinstance(error, KeyboardInterrupt):
            print(f"{start}qfx {args.command}: interrupted", file=sys.stderr)
            return 130
        print(f"{start}qfx {args.command}: error: {describe_error(error, _input_of(args))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

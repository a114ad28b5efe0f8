"""``qfx report``: formats per tensor, bit operations per layer, and Vitis synthesis results when they exist.

Reads the project's ``qfx.json`` (written by ``qfx hls``) and, after
``csynth``, ``<top>_prj/solution1/syn/report/csynth.xml``.
"""

from __future__ import annotations

import json
import pathlib
import xml.etree.ElementTree as ElementTree
from typing import Optional

from ..boards import Board, load_board
from ..render.escape import ident

__all__ = ["load_manifest", "synthesis_results", "format_report"]


def load_manifest(directory: pathlib.Path) -> dict:
    """The project's ``qfx.json``; a clear error if ``directory`` is not a qfx HLS project."""
    path = pathlib.Path(directory) / "qfx.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"'{directory}' holds no qfx.json: it is not a project written by `qfx hls`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"'{path}' is not valid JSON ({error}); generate the project again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "qfx-hls":
        raise ValueError(f"'{path}' is not a qfx HLS manifest; generate the project again with `qfx hls`")
    _check_fields(manifest, _PROJECT, path, "")
    for key, fields in (("tensors", _TENSOR), ("layers", _LAYER)):
        for k, item in enumerate(manifest[key]):
            _check_fields(item, fields, path, f"{key}[{k}].")
    try:
        ident(manifest["top"])
    except ValueError:
        raise ValueError(f"'{path}': 'top' is {manifest['top']!r:.80}, not a C identifier; generate the project "
                         "again with `qfx hls`") from None
    return manifest


#: The fields ``qfx report`` reads, and their JSON types.
_PROJECT = {"top": str, "board": str, "io": str, "samples": int, "tensors": list, "layers": list}
_TENSOR = {"name": str, "type": str, "shape": list}
_LAYER = {"name": str, "op": str, "type": str, "multiplies": int, "bitops": int, "khot_digits": int}


def _check_fields(item: object, fields: dict[str, type], path: pathlib.Path, where: str) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"'{path}': {where.rstrip('.') or 'the manifest'} must be an object; generate the project "
                         "again with `qfx hls`")
    for name, kind in fields.items():
        value = item.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"'{path}': field '{where}{name}' must be {kind.__name__}, got {value!r:.60}; "
                             "generate the project again with `qfx hls`")


def _text(root: ElementTree.Element, path: str) -> Optional[str]:
    found = root.find(path)
    return found.text.strip() if found is not None and found.text else None


def synthesis_results(directory: pathlib.Path, top: str) -> Optional[dict[str, str]]:
    """Latency, interval, clock and resources from ``csynth.xml``, or ``None`` before synthesis."""
    path = pathlib.Path(directory) / f"{top}_prj" / "solution1" / "syn" / "report" / "csynth.xml"
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    perf = "PerformanceEstimates"
    results = {
        "estimated clock (ns)": _text(root, f"{perf}/SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "latency (cycles)": _text(root, f"{perf}/SummaryOfOverallLatency/Worst-caseLatency"),
        "interval (cycles)": _text(root, f"{perf}/SummaryOfOverallLatency/Interval-max"),
    }
    for name, tags in (("lut", ("LUT",)), ("ff", ("FF",)), ("bram18", ("BRAM_18K",)), ("dsp", ("DSP", "DSP48E"))):
        for tag in tags:
            value = _text(root, f"AreaEstimates/Resources/{tag}")
            if value is not None:
                results[name] = value
                break
    return results


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_report(directory: pathlib.Path, board: Optional[Board] = None) -> str:
    """The report of the project in ``directory`` as text tables."""
    manifest = load_manifest(directory)
    board = board or load_board(manifest["board"])
    parts = [f"project {manifest['top']}: board {board.name} ({board.part}), io_{manifest['io']}, "
             f"{manifest['samples']} golden samples", "",
             _table(["tensor", "format", "shape"],
                    [[t["name"], t["type"], "x".join(map(str, t["shape"]))] for t in manifest["tensors"]]), ""]
    layers = manifest.get("layers", [])
    parts.append(_table(["layer", "op", "output format", "multiplies", "bit operations", "multiplier"],
                        [[l["name"], l["op"], l["type"], f"{l['multiplies']:,}", f"{l['bitops']:,}",
                          f"shift-add ({l['khot_digits']} digits)" if l["khot_digits"] else
                          ("multiply" if l["multiplies"] else "-")] for l in layers]))
    parts.append(f"total bit operations: {sum(l['bitops'] for l in layers):,}")
    synth = synthesis_results(pathlib.Path(directory), manifest["top"])
    parts.append("")
    if synth is None:
        parts.append("no synthesis results yet (run `qfx build DIR`)")
    else:
        rows = [[k, v or "?", ""] for k, v in synth.items() if k not in board.resources]
        for key, available in board.resources.items():
            used = synth.get(key)
            share = f"{100 * int(used) / available:.1f}% of {available:,}" if used and used.isdigit() else ""
            rows.append([key, used or "?", share])
        parts.append(_table(["synthesis (csynth)", "value", board.name], rows))
    return "\n".join(parts) + "\n"

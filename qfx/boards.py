"""Boards as data: ``boards/*.toml`` (shipped as ``qfx._data.boards``) read into validated :class:`Board` records.

A board file names the FPGA part, the Vivado board part, the processing
system family (which decides the block design), the default clock and the
resources that reports compare against.  Every string that reaches a Tcl
script is checked against a strict pattern here, so no board file can
inject Tcl.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import re
import tomllib
from typing import Iterator

__all__ = ["Board", "BoardError", "load_board", "board_names", "FAMILIES"]

#: Processing-system families the block-design template knows: family -> Vivado PS IP.
FAMILIES = {"zynquplus": "zynq_ultra_ps_e", "zynq": "processing_system7"}

_NAME = re.compile(r"^[a-z0-9_]{1,40}$")
_PART = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
_RESOURCES = ("lut", "ff", "bram18", "dsp")


class BoardError(ValueError):
    """A board that does not exist or a board file that breaks the schema; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Board:
    """One FPGA board: part, board part, PS family, default clock, AXI HP width and resources."""

    name: str
    description: str
    family: str
    part: str
    board_part: str
    clock_period_ns: float
    axi_hp_width: int
    resources: dict[str, int]

    @property
    def ps_ip(self) -> str:
        """The Vivado IP of the processing system (``zynq_ultra_ps_e`` or ``processing_system7``)."""
        return FAMILIES[self.family]


def _data_dir() -> pathlib.Path:
    """The board files: the installed data package, else ``boards/`` beside the package (a source checkout)."""
    try:
        return pathlib.Path(str(importlib.resources.files("qfx._data.boards")))
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent / "boards"


def _paths() -> Iterator[pathlib.Path]:
    return iter(sorted(_data_dir().glob("*.toml")))


def board_names() -> list[str]:
    """Names of the boards that ship with qfx."""
    return [p.stem for p in _paths()]


def _field(doc: dict, key: str, kind: type, source: str) -> object:
    if key not in doc:
        raise BoardError(f"{source}: field '{key}' is missing")
    value = doc[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BoardError(f"{source}: field '{key}' must be {kind.__name__}, got {value!r}")
    return value


def parse_board(doc: dict, source: str) -> Board:
    """A :class:`Board` from a parsed TOML document; :class:`BoardError` names ``source`` and the field."""
    name = _field(doc, "name", str, source)
    if not _NAME.match(name):
        raise BoardError(f"{source}: name {name!r} must be lower-case letters, digits and '_'")
    family = _field(doc, "family", str, source)
    if family not in FAMILIES:
        raise BoardError(f"{source}: family {family!r} is not one of {', '.join(sorted(FAMILIES))}")
    part, board_part = _field(doc, "part", str, source), _field(doc, "board_part", str, source)
    for key, value in (("part", part), ("board_part", board_part)):
        if not _PART.match(value):
            raise BoardError(f"{source}: {key} {value!r} may only hold letters, digits and '_.:-'")
    clock = _field(doc, "clock_period_ns", float, source)
    if not 0.5 <= clock <= 1000:
        raise BoardError(f"{source}: clock_period_ns must lie in [0.5, 1000], got {clock}")
    width = _field(doc, "axi_hp_width", int, source)
    if width not in (32, 64, 128):
        raise BoardError(f"{source}: axi_hp_width must be 32, 64 or 128, got {width}")
    resources = _field(doc, "resources", dict, source)
    for key in _RESOURCES:
        _field(resources, key, int, f"{source} [resources]")
    extra = sorted(set(resources) - set(_RESOURCES))
    if extra:
        raise BoardError(f"{source}: unknown resource '{extra[0]}' (known: {', '.join(_RESOURCES)})")
    description = str(doc.get("description", name))
    return Board(name, description, family, part, board_part, clock, width, {k: resources[k] for k in _RESOURCES})


def load_board(name: str) -> Board:
    """The board called ``name`` (a file ``boards/<name>.toml``), validated."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BoardError(f"board name {name!r} must be lower-case letters, digits and '_'; "
                         f"known boards: {', '.join(board_names())}")
    path = _data_dir() / f"{name}.toml"
    if not path.is_file():
        raise BoardError(f"unknown board '{name}'; known boards: {', '.join(board_names())}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise BoardError(f"{path}: not valid TOML: {error}") from None
    board = parse_board(doc, str(path))
    if board.name != name:
        raise BoardError(f"{path}: the file is named '{name}' but declares name = '{board.name}'")
    return board

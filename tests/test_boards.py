"""Board files: the shipped boards load with the right data, and broken files are refused by name."""

from __future__ import annotations

import tomllib

import pytest

from qfx.boards import FAMILIES, Board, BoardError, board_names, load_board, parse_board

ULTRA96 = {"name": "ultra96v2", "description": "Ultra96", "family": "zynquplus", "part": "xczu3eg-sbva484-1-i",
           "board_part": "avnet.com:ultra96v2:part0:1.2", "clock_period_ns": 10.0, "axi_hp_width": 128,
           "resources": {"lut": 70560, "ff": 141120, "bram18": 432, "dsp": 360}}


def test_ultra96v2_data() -> None:
    board = load_board("ultra96v2")
    assert board.part == "xczu3eg-sbva484-1-i"
    assert board.board_part == "avnet.com:ultra96v2:part0:1.2"
    assert board.clock_period_ns == 10.0
    assert board.axi_hp_width == 128
    assert board.resources == {"lut": 70560, "ff": 141120, "bram18": 432, "dsp": 360}
    assert board.ps_ip == "zynq_ultra_ps_e"


def test_a_second_family_ships() -> None:
    assert {"ultra96v2", "pynq_z2"} <= set(board_names())
    pynq = load_board("pynq_z2")
    assert pynq.part == "xc7z020clg400-1" and pynq.ps_ip == "processing_system7"
    assert {load_board(name).family for name in board_names()} == set(FAMILIES)


def test_every_shipped_board_is_valid() -> None:
    for name in board_names():
        assert isinstance(load_board(name), Board)


def test_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(BoardError, match="known boards: .*ultra96v2"):
        load_board("zcu104")
    with pytest.raises(BoardError, match="lower-case"):
        load_board("../etc/passwd")


@pytest.mark.parametrize("field,value,message", [
    ("part", "xczu3eg; exec rm", "may only hold"),
    ("board_part", "a b", "may only hold"),
    ("family", "virtex", "not one of"),
    ("clock_period_ns", 0.0, r"\[0.5, 1000\]"),
    ("axi_hp_width", 96, "32, 64 or 128"),
    ("name", "Ultra 96", "lower-case"),
    ("resources", {"lut": 1, "ff": 1, "bram18": 1}, "'dsp' is missing"),
    ("resources", {"lut": 1, "ff": 1, "bram18": 1, "dsp": 1, "uram": 2}, "unknown resource 'uram'"),
    ("axi_hp_width", "128", "must be int"),
])
def test_broken_board_documents_are_refused(field: str, value: object, message: str) -> None:
    doc = dict(ULTRA96, **{field: value})
    with pytest.raises(BoardError, match=message):
        parse_board(doc, "broken.toml")


def test_missing_field_names_the_file() -> None:
    doc = {k: v for k, v in ULTRA96.items() if k != "part"}
    with pytest.raises(BoardError, match="broken.toml: field 'part' is missing"):
        parse_board(doc, "broken.toml")


def test_board_toml_round_trip() -> None:
    text = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in ULTRA96.items() if k != "resources")
    text += "\n[resources]\nlut = 70560\nff = 141120\nbram18 = 432\ndsp = 360\n"
    assert parse_board(tomllib.loads(text), "t.toml") == parse_board(ULTRA96, "d")

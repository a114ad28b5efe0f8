"""qfx.render: every back end rendered from a graph whose every string is hostile; the escaping functions."""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np
import pytest

import qfx
import qfx.hls
from qfx.boards import load_board
from qfx.emulator.codegen import generate as emulator_source
from qfx.format import FixedType
from qfx.ir import Constant, Graph, IRError, Node, Value
from qfx.onnx import to_onnx
from qfx.render import environment, escape
from qfx.rtl import render as rtl_files

#: What a hostile file puts in a string field: line breaks, Verilog directives and system tasks, C/Tcl/Python
#: and shell syntax, a Jinja expression, a terminal escape, DEL, a Unicode line separator.
ATTACK = ('x\n`ifdef Q\ninitial $system("touch /tmp/qfx_pwned");\n`include "/etc/passwd"\n`endif\r'
          '"; exec touch /tmp/qfx_pwned; # {{ 7*7 }} [exec id] $env(HOME) */ """ \\\n\x1b[31m\x7f\u2028\u202e ü')
#: The same without the characters a tensor name may not hold (names are printable).
NAME_ATTACK = ('x `ifdef Q initial $system("touch /tmp/qfx_pwned"); `include "/etc/passwd" '
               '"; exec touch; # {{ 7*7 }} [exec id] $env(HOME) */ """ \\ ü')


def _hostile_graph(attack: str = ATTACK, name_attack: str = NAME_ATTACK) -> Graph:
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    weight = Constant(np.array([[1, -2], [3, 4]]), (FixedType(6, 2),))
    x = Value(name_attack + " in", (2,), t)
    dense = Node(name_attack, "dense", (x.name,), Value(name_attack, (2,), t), constants={"weight": weight},
                 label=attack)
    relu = Node(name_attack + "2", "relu", (dense.name,), Value(name_attack + "2", (2,), t), label=attack + "2")
    return Graph(attack, [x], [dense, relu], [relu.name]).check()


def _loaded(tmp_path: pathlib.Path, attack: str = ATTACK, name_attack: str = NAME_ATTACK) -> Graph:
    """The hostile graph as a file would give it: saved, then loaded."""
    return qfx.ir.load(qfx.ir.save(_hostile_graph(attack, name_attack), tmp_path / "hostile.json"))


def _every_generated_file(graph: Graph) -> dict[str, bytes]:
    files = {}
    board = load_board("ultra96v2")
    for io in ("parallel", "stream"):
        files.update({f"hls_{io}/{k}": v.encode() for k, v in qfx.hls.generate(graph, board, io).items()})
    files.update({f"rtl/{k}": v.encode() for k, v in rtl_files(graph, pipeline=1).items()})
    files["emulator.cpp"] = emulator_source(graph).encode()
    files["model.onnx"] = to_onnx(graph).SerializeToString()
    return files


def test_no_generated_file_holds_a_string_from_the_file_raw(tmp_path: pathlib.Path) -> None:
    files = _every_generated_file(_loaded(tmp_path))
    assert any(p.endswith(".tcl") for p in files) and any(p.endswith("README.md") for p in files)
    for attack in (ATTACK, ATTACK + "2", NAME_ATTACK):
        for path, text in files.items():
            # ONNX keeps the IR's tensor names (printable, checked at load) as protobuf data, never as code
            if not (path.endswith(".onnx") and attack == NAME_ATTACK):
                assert attack.encode() not in text, path
    # rtl/qfx_add.v is one fixed text for every graph, whose directives (`ifndef SYNTHESIS) are qfx's own
    assert files["rtl/rtl/qfx_add.v"] == environment().get_template("rtl/qfx_add.v.j2").render(ternary=True).encode()
    for path, text in files.items():
        if path.endswith((".v", ".cpp", ".h", ".tcl", ".py", ".md")):
            lines = text.decode().split("\n")
            fixed = path.endswith(".md") or path == "rtl/rtl/qfx_add.v"
            assert fixed or not any(line.lstrip().startswith("`") for line in lines), path
            assert not set("\x1b\x7f\u2028\u202e\r") & set(text.decode()), path


def test_the_export_name_cannot_open_a_module(tmp_path: pathlib.Path) -> None:
    model = qfx.quantize_model(torch_model(), qfx.QConfig())
    graph = qfx.export(model.eval(), np_input(), name="net\nmodule evil; endmodule\n// ")
    for text in rtl_files(graph).values():
        assert not any(line.startswith("module evil") for line in text.split("\n"))


def torch_model():
    import torch
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())


def np_input():
    import torch
    return torch.zeros(1, 3)


def test_a_label_cannot_include_files_into_the_verilog(tmp_path: pathlib.Path) -> None:
    files = rtl_files(_loaded(tmp_path, 'net\n`include "/etc/passwd"\n', 'x `include "/etc/passwd"'))
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    sources = sorted(str(p) for p in (tmp_path / "rtl").glob("*.v"))
    result = subprocess.run(["iverilog", "-E", "-o", str(tmp_path / "pre.v")] + sources, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "root:" not in (tmp_path / "pre.v").read_text()


def test_names_with_control_characters_are_refused() -> None:
    t = FixedType(8, 3)
    for bad in ("a\x7fb", "a\u2028b", "a\x85b", "a\ud800b", "a\u202eb"):
        with pytest.raises(IRError, match="printable"):
            Graph("g", [Value(bad, (2,), t)], [Node("r", "relu", (bad,), Value("r", (2,), t))], ["r"]).check()


# ------------------------------------------------------------- escaping
def test_comment_text_keeps_printable_characters_only() -> None:
    for clean in (escape.printable, escape.cpp_comment, escape.verilog_comment, escape.python_text,
                  escape.tcl_comment, escape.markdown):
        text = clean(ATTACK)
        assert text.isprintable() and "\n" not in text and "\\\n" not in text
        assert "ü" in clean("ü\n")
        assert clean("layer1.0.conv1") in ("layer1.0.conv1", "layer1\\.0\\.conv1")
    assert "`" not in escape.verilog_comment(ATTACK) and "*/" not in escape.verilog_comment("a*/b")
    assert "\\" not in escape.cpp_comment(ATTACK) and "*/" not in escape.cpp_comment("a*/b")
    assert not set('"\\') & set(escape.python_text(ATTACK))
    assert not set("[]{}$\\;\"") & set(escape.tcl_comment(ATTACK))
    assert escape.markdown("a_b*c`d<e>") == "a\\_b\\*c\\`d&lt;e&gt;"
    assert len(escape.printable("x" * 10_000)) <= escape.MAX_TEXT


def test_identifiers_and_words_are_checked_not_rewritten() -> None:
    assert escape.ident("conv_1") == "conv_1"
    assert escape.yosys_word("rtl/net_fc.v") == "rtl/net_fc.v"
    for bad in ("a b", "1a", "a;b", "a\nb", "", "x" * 200, "é"):
        with pytest.raises(ValueError):
            escape.ident(bad)
    for bad in ("a b", "a;exec", "-flag", "a\nb", "a#b", "$x", "../x"):
        with pytest.raises(ValueError):
            escape.yosys_word(bad)
    with pytest.raises(ValueError):
        escape.verilog_ident("module")
    with pytest.raises(ValueError):
        escape.tcl_word("a[exec id]")

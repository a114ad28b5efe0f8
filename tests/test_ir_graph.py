"""The IR's graph checks, its file format (save, load, validation of malformed files) and C identifiers."""

from __future__ import annotations

import copy
import json
import random
import re

import numpy as np
import pytest

import qfx
from ir_zoo import CNN, MLP, inputs, quantized
from qfx.ir import Constant, IRError, c_identifier
from qfx.ir.serialize import from_document, to_document


@pytest.fixture(scope="module")
def cnn():
    x = inputs((2, 10, 6), batch=16)
    return qfx.export(quantized(CNN, x), x), x


def test_save_load_round_trip_is_identical(cnn, tmp_path):
    graph, x = cnn
    path = qfx.ir.save(graph, tmp_path / "net.json")
    assert (tmp_path / "net.npz").exists()
    loaded = qfx.ir.load(path)
    assert to_document(loaded)[0] == to_document(graph)[0]
    assert np.array_equal(qfx.ir.run(loaded, x.numpy()), qfx.ir.run(graph, x.numpy()))
    qfx.ir.save(loaded, tmp_path / "again.json")
    doc = json.loads((tmp_path / "again.json").read_text())
    assert doc["arrays"] == "again.npz" and doc["format"] == "qfx-ir" and doc["version"] == 1


def test_save_refuses_to_overwrite_without_force(cnn, tmp_path):
    graph, _ = cnn
    qfx.ir.save(graph, tmp_path / "net.json")
    before = (tmp_path / "net.json").read_bytes()
    with pytest.raises(FileExistsError, match="force"):
        qfx.ir.save(graph, tmp_path / "net.json")
    assert (tmp_path / "net.json").read_bytes() == before
    qfx.ir.save(graph, tmp_path / "net.json", force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    with pytest.raises(ValueError, match=".json"):
        qfx.ir.save(graph, tmp_path / "net.txt")


def _mutations():
    """(description, change to the document or arrays, text the error must contain)."""
    def node(i):
        return lambda d, a: d["nodes"][i]

    return [
        ("format", lambda d, a: d.update(format="onnx"), "qfx graph file"),
        ("version", lambda d, a: d.update(version=2), "version 2"),
        ("unknown op", lambda d, a: node(2)(d, a).update(op="warp_drive"), "unknown op 'warp_drive'"),
        ("bad type", lambda d, a: node(0)(d, a)["output"].update(type="float"), "cannot parse 'float'"),
        ("bad mode", lambda d, a: node(0)(d, a)["output"].update(type="ap_fixed<8,3,AP_RND,AP_CLAMP>"),
         "node 'conv1'"),
        ("wrong shape", lambda d, a: node(0)(d, a)["output"].update(shape=[6, 10, 7]), "output shape"),
        ("negative dim", lambda d, a: node(0)(d, a)["output"].update(shape=[6, -1, 6]), "positive integers"),
        ("order", lambda d, a: d["nodes"].reverse(), "topological order"),
        ("dangling input", lambda d, a: node(1)(d, a).update(inputs=["nowhere"]), "'nowhere'"),
        ("duplicate", lambda d, a: node(1)(d, a).update(name="conv1"), "already used"),
        ("missing field", lambda d, a: node(1)(d, a).pop("op"), "field 'op' is missing"),
        ("field type", lambda d, a: node(1)(d, a).update(inputs="conv1"), "field 'inputs' must be list"),
        ("bad attr", lambda d, a: node(0)(d, a)["attrs"].update(stride=[0, 1]), "'stride'"),
        ("extra attr", lambda d, a: node(0)(d, a)["attrs"].update(color="red"), "unexpected attribute 'color'"),
        ("missing weight", lambda d, a: node(0)(d, a)["constants"].pop("weight"), "constant 'weight' is missing"),
        ("missing array", lambda d, a: a.pop("n0_weight"), "array 'n0_weight'"),
        ("float array", lambda d, a: a.update(n0_weight=a["n0_weight"].astype(float)), "integer codes"),
        ("code range", lambda d, a: a["n0_weight"].__setitem__((0, 0, 0, 0), 1 << 20), "outside the range"),
        ("weight shape", lambda d, a: a.update(n0_weight=a["n0_weight"][:, :1]), "does not fit"),
        ("channel formats", lambda d, a: node(1)(d, a)["constants"]["scale"].update(
            types=["ap_fixed<8,2>"] * 5), "formats"),
        ("no outputs", lambda d, a: d.update(outputs=[]), "no outputs"),
        ("unknown output", lambda d, a: d.update(outputs=["ghost"]), "'ghost'"),
        ("control char", lambda d, a: node(1)(d, a).update(name="a\nb"), "not allowed"),
        ("add shapes", lambda d, a: d["nodes"][5].update(inputs=["relu_1", "conv2"]), "node 'add"),
    ]


@pytest.mark.parametrize("what,change,message", _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_documents_are_refused_with_the_place(cnn, what, change, message):
    graph, _ = cnn
    doc, arrays = to_document(graph)
    doc, arrays = copy.deepcopy(doc), {k: v.copy() for k, v in arrays.items()}
    doc["arrays"] = "net.npz"
    change(doc, arrays)
    with pytest.raises(IRError, match=re.escape(message)):
        from_document(doc, arrays, "net.json")


def test_corrupt_files_raise_clear_errors(cnn, tmp_path):
    graph, _ = cnn
    path = qfx.ir.save(graph, tmp_path / "net.json")
    text = path.read_text()
    rng = random.Random(0)
    for trial in range(60):  # random damage: an IRError (or a missing file), never a crash
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice('{}[]",:0123456789abc-')
        path.write_text("".join(chars))
        try:
            qfx.ir.load(path)
        except (IRError, FileNotFoundError):
            pass
    path.write_text(text)
    npz = tmp_path / "net.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(IRError, match="cannot read the arrays file"):
        qfx.ir.load(path)
    npz.unlink()
    with pytest.raises(IRError, match="missing"):
        qfx.ir.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(IRError, match="UTF-8"):
        qfx.ir.load(path)
    doc = json.loads(text)
    doc["arrays"] = "../elsewhere.npz"
    path.write_text(json.dumps(doc))
    with pytest.raises(IRError, match="beside the graph file"):
        qfx.ir.load(path)


def test_pickled_arrays_are_refused(cnn, tmp_path):
    graph, _ = cnn
    path = qfx.ir.save(graph, tmp_path / "net.json")
    arrays = dict(np.load(tmp_path / "net.npz"))
    arrays["n0_weight"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "net.npz", **arrays)
    with pytest.raises(IRError, match="has dtype object; integer codes"):
        qfx.ir.load(path)


def test_c_identifiers_are_safe_and_unique():
    taken: set[str] = set()
    names = ['"; system("rm -rf /"); //', "layer1.0.conv1", "layer1_0_conv1", "0start", "int", "class",
             "", "Layer1_0_Conv1", "ap_fixed", "x" * 100, "né"]
    ids = [c_identifier(n, taken) for n in names]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,55}", i) for i in ids), ids
    assert len({i.lower() for i in ids}) == len(ids)
    assert ids[1] == "layer1_0_conv1" and ids[2] == "layer1_0_conv1_2"
    assert ids[4] == "t_int" and ids[3] == "t_0start"


def test_graph_c_names_cover_every_tensor(cnn):
    graph, _ = cnn
    names = graph.c_names()
    assert set(names) == set(graph.values()) and len(set(names.values())) == len(names)


def test_constant_formats_per_channel():
    c = Constant(np.array([[1, 2], [3, 4]]), (qfx.FixedType(8, 2), qfx.FixedType(8, 5)))
    assert c.per_channel and list(c.frac_bits()) == [6, 3]
    assert c.frac_bits_along(3, axis=1).shape == (1, 2, 1)


def test_export_refuses_what_has_no_op():
    x = inputs((12,), batch=4)
    with pytest.raises(IRError, match="QInput"):
        qfx.export(MLP(), x)

"""Property-based fuzzing of saved graphs: a mutated graph file either loads and then runs identically in the
interpreter and the emulator, or is refused with an IRError naming the file, within a memory cap and a time limit.

The mutations reach every part of a saved graph: any field of the JSON document (replaced by a number of any size,
a hostile string, a bool, null, a list or a nested list), and the ``.npz`` of codes (a member replaced by an array
of another dtype or shape, a member removed, an unreferenced member added).  The whole search runs in a fresh
interpreter whose address space is capped, so a runaway allocation fails the test instead of the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

FUZZ = textwrap.dedent('''
    import resource
    resource.setrlimit(resource.RLIMIT_AS, ({cap} << 20, {cap} << 20))

    import json, shutil, sys, tempfile, zipfile
    from pathlib import Path

    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import qfx
    from qfx.format import FixedType
    from qfx.ir import Constant, Graph, IRError, Node, Value

    t = FixedType(8, 3, rounding="RND", overflow="SAT")
    w = Constant(np.arange(-24, 24).reshape(16, 3) % 7 - 3, (FixedType(4, 1),))
    graph = Graph("small", [Value("x", (3,), t)], [
        Node("fc", "dense", ("x",), Value("fc", (16,), t), constants={{"weight": w}}),
        Node("image", "flatten", ("fc",), Value("image", (1, 4, 4), t)),
        Node("pool", "maxpool2d", ("image",), Value("pool", (1, 2, 2), t),
             attrs={{"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1],
                     "ceil_mode": False}}),
    ], ["pool"]).check()
    work = Path(tempfile.mkdtemp())
    original = qfx.ir.save(graph, work / "original.json")
    document = json.loads(original.read_text())
    with np.load(original.with_suffix(".npz")) as arrays:
        members = {{name: arrays[name] for name in arrays.files}}

    def paths(doc, prefix=()):
        yield prefix
        if isinstance(doc, dict):
            for key, value in doc.items():
                yield from paths(value, prefix + (key,))
        elif isinstance(doc, list):
            for i, value in enumerate(doc):
                yield from paths(value, prefix + (i,))

    FIELDS = [p for p in paths(document) if p]
    hostile = st.sampled_from(["", "x", "\\n`include \\"/etc/passwd\\"", "a\\u2028b", "\\ud800", "1e999", "-0",
                               "ap_fixed<99999,3>", "ap_fixed<8,3,AP_RND,AP_SAT>", "ap_ufixed<1,0>", "relu",
                               "maxpool2d", "x" * 300])
    numbers = st.one_of(st.integers(-3, 20), st.integers(-2**70, 2**70), st.floats(allow_nan=True))
    leaf = st.one_of(numbers, hostile, st.booleans(), st.none())
    replacement = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
    dtypes = st.sampled_from(["int64", "int32", "uint64", "int8", "float64", "bool", "U3"])
    outcomes = {{"loaded": 0, "refused": 0}}

    @settings(max_examples={examples}, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        doc = json.loads(json.dumps(document))
        arrays = dict(members)
        for _ in range(data.draw(st.integers(1, 3))):
            kind = data.draw(st.sampled_from(["field", "field", "field", "member", "drop", "extra"]))
            if kind == "field":
                path = data.draw(st.sampled_from(FIELDS))
                parent = doc
                try:
                    for key in path[:-1]:
                        parent = parent[key]
                    parent[path[-1]] = data.draw(replacement)
                except (KeyError, IndexError, TypeError):
                    pass  # an earlier mutation removed the path
            elif kind == "member" and arrays:
                name = data.draw(st.sampled_from(sorted(arrays)))
                shape = data.draw(st.lists(st.integers(0, 5), max_size=3))
                arrays[name] = np.zeros(shape, dtype=data.draw(dtypes))
            elif kind == "drop" and arrays:
                arrays.pop(data.draw(st.sampled_from(sorted(arrays))))
            else:
                arrays["unreferenced"] = np.zeros(data.draw(st.integers(0, 1000)), dtype=np.int64)
        case = Path(tempfile.mkdtemp(dir=work)) / "original.json"  # the document names its arrays file
        case.write_text(json.dumps(doc))
        np.savez(case.with_suffix(".npz"), **arrays)
        try:
            loaded = qfx.ir.load(case)
        except IRError as error:
            assert str(case) in str(error), str(error)
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        rng = np.random.default_rng(0)
        inputs = [rng.integers(v.type.code_min, v.type.code_max, (3,) + tuple(v.shape), endpoint=True)
                  for v in loaded.inputs]
        expected = qfx.ir.run_codes(loaded, inputs)
        got = qfx.emulator.run_codes(loaded, inputs)
        for name in loaded.outputs:
            assert np.array_equal(expected[name], got[name]), name

    fuzz()
    shutil.rmtree(work)
    print("outcomes", outcomes)
''')


def test_mutated_graph_files_load_and_run_identically_or_are_refused_naming_the_file() -> None:
    code = FUZZ.format(cap=2500, examples=int(os.environ.get("QFX_FUZZ_EXAMPLES", "200")))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded = int(result.stdout.split("'loaded': ")[1].split(",")[0])
    refused = int(result.stdout.split("'refused': ")[1].split("}")[0])
    assert refused > 0 and loaded > 0, result.stdout

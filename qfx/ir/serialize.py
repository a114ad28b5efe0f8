"""Saving and loading graphs: a JSON document and a ``.npz`` of integer arrays, no pickle.

``save(graph, "net.json")`` writes ``net.json`` and ``net.npz`` beside it.
The JSON (schema ``qfx-ir`` version 1)::

    {"format": "qfx-ir", "version": 1, "name": "Net", "arrays": "net.npz",
     "inputs":  [{"name": "x_quant", "shape": [1, 8, 8], "type": "ap_fixed<8,4,AP_RND_CONV,AP_SAT>"}],
     "nodes":   [{"name": "conv", "op": "conv2d", "label": "features.0", "inputs": ["x_quant"],
                  "output": {"shape": [8, 8, 8], "type": "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"},
                  "attrs": {"stride": [1, 1], "padding": [[1, 1], [1, 1]], "dilation": [1, 1], "groups": 1},
                  "constants": {"weight": {"array": "n0_weight", "types": ["ap_fixed<8,1,AP_RND_CONV,AP_SAT>"]}},
                  "formats": {"accum": "ap_fixed<24,8>"}}],
     "outputs": ["fc"]}

Formats are C++ spellings (modes by name); ``types`` lists one format, or
one per index of dimension 0; arrays are int64 codes.  :func:`load`
validates everything (schema, version, field types, formats, ops,
attributes, shapes, codes inside their formats) and raises
:class:`~qfx.ir.IRError` naming the file and the first offending node.
Nothing in the files is trusted: the limits of :mod:`qfx.ir.limits` (file
size, nesting, digits, members, elements from each ``.npy`` header) are
checked before anything is read into memory, and arrays the graph does not
name are never read.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from ..files import write_atomically
from ..format import FixedType
from . import limits
from .graph import Constant, Graph, IRError, Node, Value

__all__ = ["save", "load", "SCHEMA", "VERSION"]

SCHEMA = "qfx-ir"
VERSION = 1

PathLike = Union[str, os.PathLike]


def _arrays_path(path: Path) -> Path:
    return path.with_suffix(".npz")


# --------------------------------------------------------------- saving
def _value_doc(value: Value) -> dict[str, Any]:
    return {"shape": list(value.shape), "type": str(value.type)}


def to_document(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document and the arrays (by key) that :func:`save` writes."""
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for index, node in enumerate(graph.nodes):
        constants = {}
        for role, c in node.constants.items():
            key = f"n{index}_{role}"
            arrays[key] = c.codes.astype(np.int64)
            constants[role] = {"array": key, "types": [str(t) for t in c.types]}
        nodes.append({"name": node.name, "op": node.op, "label": node.label, "inputs": list(node.inputs),
                      "output": _value_doc(node.output), "attrs": node.attrs, "constants": constants,
                      "formats": {k: str(t) for k, t in node.formats.items()}})
    doc = {"format": SCHEMA, "version": VERSION, "name": graph.name, "arrays": None,
           "inputs": [{"name": v.name, **_value_doc(v)} for v in graph.inputs], "nodes": nodes,
           "outputs": list(graph.outputs)}
    return doc, arrays


def save(graph: Graph, path: PathLike, force: bool = False) -> Path:
    """Write ``graph`` to ``path`` (JSON) and the ``.npz`` beside it; refuse to overwrite unless ``force``.

    Returns the JSON file's path.
    """
    graph.check()
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"save: the graph file must end in .json, got '{path}'")
    arrays_path = _arrays_path(path)
    if not force:
        for p in (path, arrays_path):
            if p.exists():
                raise FileExistsError(f"save: '{p}' exists; pass force=True (or --force) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc, arrays = to_document(graph)
    doc["arrays"] = arrays_path.name
    write_atomically(arrays_path, lambda f: np.savez_compressed(f, **arrays))
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))
    return path


# -------------------------------------------------------------- loading
class _Reader:
    """Field access on the JSON document that names what is wrong and where."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> IRError:
        return IRError(f"{self.source}: {where}: {message}")

    def get(self, obj: Any, key: str, kind: Union[type, tuple[type, ...]], where: str) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected an object, got {type(obj).__name__}")
        if key not in obj:
            raise self.fail(where, f"field '{key}' is missing")
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where, f"field '{key}' must be {names}, got {value!r:.80}")
        return value

    def fixed_type(self, text: Any, where: str) -> FixedType:
        if not isinstance(text, str):
            raise self.fail(where, f"a format must be a C++ spelling such as 'ap_fixed<8,3>', got {text!r:.80}")
        try:
            return FixedType.parse(text)
        except (TypeError, ValueError) as error:
            raise self.fail(where, str(error)) from None

    def shape(self, obj: Any, where: str) -> tuple[int, ...]:
        shape = self.get(obj, "shape", list, where)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape) or len(shape) > 6:
            raise self.fail(where, f"shape must be up to 6 positive integers, got {shape!r:.80}")
        return tuple(shape)

    def value(self, obj: Any, name: str, where: str) -> Value:
        return Value(name, self.shape(obj, where), self.fixed_type(self.get(obj, "type", str, where), where))


def _open_regular(path: Path, source: str, what: str):
    """``path`` opened for reading if it is a regular file within ``MAX_FILE_BYTES`` (checked on the open file)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: {what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise IRError(f"{source}: {what} '{path}' is a directory, not a file") from None
    info = os.fstat(f.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size > limits.MAX_FILE_BYTES:
        f.close()
        problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
                   f"holds {info.st_size} bytes, more than the limit of {limits.MAX_FILE_BYTES}")
        raise IRError(f"{source}: {what} '{path}' {problem}")
    return f


class _Arrays:
    """The members of an ``.npz`` read one at a time, on demand, each checked from its ``.npy`` header first."""

    def __init__(self, path: Path, source: str) -> None:
        self.path, self.source, self.elements = path, source, 0
        try:
            self.file = _open_regular(path, source, "the arrays file")
        except FileNotFoundError:
            raise IRError(f"{source}: the arrays file '{path}' is missing (it is written beside the .json)") from None
        try:
            self.zip = zipfile.ZipFile(self.file)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            self.file.close()
            raise IRError(f"{source}: cannot read the arrays file '{path}': {error}") from None
        if len(infos) > limits.MAX_ARRAY_MEMBERS:
            self.close()
            raise IRError(f"{source}: the arrays file '{path}' has {len(infos)} members, more than the limit of "
                          f"{limits.MAX_ARRAY_MEMBERS}")
        self.members = {info.filename[:-4]: info for info in infos if info.filename.endswith(".npy")}

    def close(self) -> None:
        self.zip.close()
        self.file.close()

    def __contains__(self, key: str) -> bool:
        return key in self.members

    def __getitem__(self, key: str) -> np.ndarray:
        info = self.members[key]
        where = f"{self.source}: array '{key}' of '{self.path}'"
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy version {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f, max_header_size=10000)
                if dtype.kind not in "iu" or dtype.hasobject or dtype.itemsize > 8:
                    raise IRError(f"{where} has dtype {dtype}; integer codes (int64) are required")
                count = math.prod(shape)
                self.elements += count
                if count > limits.MAX_ELEMENTS or self.elements > limits.MAX_CONSTANT_ELEMENTS:
                    raise IRError(f"{where} declares shape {shape}: {count} elements, more than the limit of "
                                  f"{limits.MAX_ELEMENTS} per tensor and {limits.MAX_CONSTANT_ELEMENTS} in all")
                size = count * dtype.itemsize
                if info.file_size < size:
                    raise IRError(f"{where} declares shape {shape} but holds fewer than {size} bytes")
                data = np.frombuffer(f.read(size), dtype=dtype)
        except IRError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, SyntaxError, TypeError) as error:
            raise IRError(f"{where} cannot be read: {error}") from None
        if data.size != count:
            raise IRError(f"{where} is truncated")
        data = data.reshape(shape, order="F" if fortran else "C")
        if dtype.kind == "u" and dtype.itemsize == 8 and data.size and int(data.max()) > np.iinfo(np.int64).max:
            raise IRError(f"{where} holds codes beyond 2**63 - 1 (uint64); codes are int64")
        return data


def _constant(reader: _Reader, doc: Any, arrays: dict[str, np.ndarray], where: str) -> Constant:
    key = reader.get(doc, "array", str, where)
    if key not in arrays:
        raise reader.fail(where, f"array '{key}' is not in the arrays file")
    data = arrays[key]
    if not np.issubdtype(data.dtype, np.integer):
        raise reader.fail(where, f"array '{key}' has dtype {data.dtype}; integer codes are required")
    if data.dtype == np.uint64 and data.size and int(data.max()) > np.iinfo(np.int64).max:
        raise reader.fail(where, f"array '{key}' holds codes beyond 2**63 - 1 (uint64); codes are int64")
    types = reader.get(doc, "types", list, where)
    if not types:
        raise reader.fail(where, "'types' is empty")
    return Constant(data.astype(np.int64), tuple(reader.fixed_type(t, where) for t in types))


def from_document(doc: Any, arrays: "Mapping[str, np.ndarray]", source: str = "graph") -> Graph:
    """A checked :class:`Graph` from a document and its arrays (what :func:`load` reads)."""
    r = _Reader(source)
    if r.get(doc, "format", str, "header") != SCHEMA:
        raise r.fail("header", f"'format' must be '{SCHEMA}', got {doc['format']!r:.80}; is this a qfx graph file?")
    version = r.get(doc, "version", int, "header")
    if version != VERSION:
        raise r.fail("header", f"schema version {version} is not supported (this qfx reads version {VERSION}); "
                               "export the model again with this qfx")
    inputs = []
    for i, item in enumerate(r.get(doc, "inputs", list, "header")):
        name = r.get(item, "name", str, f"input {i}")
        inputs.append(r.value(item, name, f"input '{name}'"))
    nodes = []
    for i, item in enumerate(r.get(doc, "nodes", list, "header")):
        name = r.get(item, "name", str, f"node {i}")
        where = f"node '{name}'"
        label = item.get("label")
        if label is not None and not isinstance(label, str):
            raise r.fail(where, f"'label' must be a string, got {label!r:.80}")
        node_inputs = r.get(item, "inputs", list, where)
        if not all(isinstance(n, str) for n in node_inputs):
            raise r.fail(where, "'inputs' must be a list of tensor names")
        constants = {role: _constant(r, c, arrays, f"{where} constant '{role}'")
                     for role, c in r.get(item, "constants", dict, where).items()}
        formats = {role: r.fixed_type(t, f"{where} format '{role}'")
                   for role, t in r.get(item, "formats", dict, where).items()}
        nodes.append(Node(name=name, op=r.get(item, "op", str, where), inputs=tuple(node_inputs),
                          output=r.value(r.get(item, "output", dict, where), name, f"{where} output"),
                          attrs=r.get(item, "attrs", dict, where), constants=constants, formats=formats,
                          label=label))
    outputs = r.get(doc, "outputs", list, "header")
    if not all(isinstance(o, str) for o in outputs):
        raise r.fail("header", "'outputs' must be a list of tensor names")
    graph = Graph(r.get(doc, "name", str, "header"), inputs, nodes, outputs)
    try:
        return graph.check()
    except IRError as error:
        raise IRError(f"{source}: {error}") from None


def _number(text: str, convert):
    if len(text) > limits.MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text)} characters, more than the limit of {limits.MAX_NUMBER_DIGITS}")
    return convert(text)


def _no_constant(text: str):
    raise ValueError(f"{text} is not a number qfx reads")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in JSON ``text`` (outside strings)."""
    deepest = depth = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m[0] in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_document(data: bytes, source: str) -> Any:
    """The JSON document in ``data``, within the limits on nesting and digits, all strings valid Unicode."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IRError(f"{source} is not UTF-8 text; expected the .json written by qfx") from None
    if _depth(text) > limits.MAX_JSON_DEPTH:
        raise IRError(f"{source}: the JSON nests deeper than the limit of {limits.MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text, parse_int=lambda t: _number(t, int), parse_float=lambda t: _number(t, float),
                         parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise IRError(f"{source} is not valid JSON for qfx: {error}") from None
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise IRError(f"{source}: a string holds a lone surrogate escape (such as \\ud800); names and labels "
                      "must be valid Unicode") from None
    return doc


def load(path: PathLike) -> Graph:
    """Read and validate a graph saved by :func:`save` (``.json`` plus its ``.npz``).

    The graph file must be a regular file within :data:`~qfx.ir.limits.MAX_FILE_BYTES`;
    only the arrays it names are read from the ``.npz``.
    """
    path = Path(path)
    source = f"graph file '{path}'"
    with _open_regular(path, source, "the graph file") as f:
        data = f.read(limits.MAX_FILE_BYTES + 1)
    doc = parse_document(data, source)
    arrays_name = _Reader(source).get(doc, "arrays", str, "header")
    if Path(arrays_name).name != arrays_name or arrays_name in ("", ".", ".."):
        raise IRError(f"{source}: 'arrays' must name a file beside the graph file, got {arrays_name!r:.80}")
    arrays = _Arrays(path.parent / arrays_name, source)
    try:
        return from_document(doc, arrays, source)
    finally:
        arrays.close()

"""The C++ emulator: a graph compiled to a native program that computes its exact codes.

``emulate(graph, x)`` generates one C++ translation unit for the graph
(:mod:`qfx.emulator.codegen`), compiles it once with ``g++ -O3 -march=native`` (cached by
content, :mod:`qfx.emulator.build`), runs it on the batch (split across
threads) and returns exactly what :func:`qfx.ir.run` returns.  The numerics
live in the header-only library ``include/qfx/`` (``cast.h``, ``kernels.h``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .. import cxx
from ..ir.graph import Graph, c_identifier
from ..ir.interpreter import input_codes, values_of
from .build import cache_dir, compile_source, include_dir
from .codegen import EmulatorError, accumulator_bits, generate

__all__ = ["emulate", "run_codes", "compile_graph", "generate", "accumulator_bits", "EmulatorError",
           "include_dir", "cache_dir"]

Inputs = Union[np.ndarray, Sequence[np.ndarray]]

# Below this many samples per thread, starting a thread costs more than it saves.
_SAMPLES_PER_THREAD = 16


# Programs built by this process, by graph fingerprint: generating the source of a large graph costs
# more than running a small batch, so a graph seen before skips straight to its binary.
_BUILT: dict[str, Path] = {}


def _fingerprint(graph: Graph) -> str:
    """A digest of everything the generated program depends on, cheaper to compute than the source."""
    digest = hashlib.sha256(repr((graph.name, graph.inputs, graph.outputs, str(cache_dir()), os.environ.get("CXX")))
                            .encode())
    for node in graph.nodes:
        digest.update(repr((node.name, node.op, node.inputs, node.output, sorted(node.attrs.items()),
                            sorted(node.formats.items()))).encode())
        for role, constant in sorted(node.constants.items()):
            digest.update(repr((role, constant.types, constant.codes.shape)).encode())
            digest.update(np.ascontiguousarray(constant.codes, dtype=np.int64).tobytes())
    return digest.hexdigest()


def compile_graph(graph: Graph) -> Path:
    """The path of the compiled emulator program for ``graph`` (built on first use, then cached)."""
    key = _fingerprint(graph)
    path = _BUILT.get(key)
    if path is None or not cxx.intact(path):  # checked before every run: the cache is not trusted
        graph.check()  # the op rules and limits the interpreter and every back end share, before any work
        path = compile_source(generate(graph), stem=c_identifier(graph.name or "graph", set()))
        _BUILT[key] = path
    return path


def _default_threads(batch: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, batch // _SAMPLES_PER_THREAD))


def run_codes(graph: Graph, inputs: Inputs, *, trace: bool = False,
              threads: Optional[int] = None) -> dict[str, np.ndarray]:
    """The output codes by name (every tensor's with ``trace=True``) for input codes, one array per graph input.

    Mirrors :func:`qfx.ir.run_codes`; ``threads`` defaults to the cores
    available, fewer for small batches.
    """
    arrays = [np.asarray(a) for a in ([inputs] if isinstance(inputs, np.ndarray) else inputs)]
    if len(arrays) != len(graph.inputs):
        raise ValueError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s), got {len(arrays)}")
    batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
    for value, codes in zip(graph.inputs, arrays):
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"input '{value.name}': integer codes expected, got dtype {codes.dtype} (pass float "
                            "values to emulate() without codes=True to have them cast)")
        if codes.ndim == 0 or tuple(codes.shape[1:]) != value.shape or codes.shape[0] != batch:
            raise ValueError(f"input '{value.name}' takes shape (N={batch}, {', '.join(map(str, value.shape))}), "
                             f"got {tuple(codes.shape)}")
        if codes.size and (int(codes.min()) < value.type.code_min or int(codes.max()) > value.type.code_max):
            raise ValueError(f"input '{value.name}' holds codes outside its format {value.type}")
    tensors = list(graph.inputs) + [n.output for n in graph.nodes]
    dumped = tensors if trace else graph.output_values
    if batch == 0:  # an empty batch gives empty tensors, without building or running the program
        return {value.name: np.zeros((0,) + tuple(value.shape), dtype=np.int64) for value in dumped}
    program = compile_graph(graph)
    threads = _default_threads(batch) if threads is None else max(1, int(threads))
    with tempfile.TemporaryDirectory(prefix="qfx-emulate-") as tmp:
        in_path, out_path = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        with open(in_path, "wb") as f:
            for codes in arrays:
                f.write(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
        cmd = [str(program), str(in_path), str(out_path), str(batch), str(threads)] + (["trace"] if trace else [])
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the emulator for graph '{graph.name}' failed (exit code {result.returncode}): "
                               f"{result.stderr.strip()[-2000:]}")
        flat = np.fromfile(out_path, dtype=np.int64)
    found, offset = {}, 0
    for value in dumped:
        count = batch * value.size
        found[value.name] = flat[offset:offset + count].reshape((batch,) + tuple(value.shape))
        offset += count
    return found


def emulate(graph: Graph, x: Inputs, *, codes: bool = False,
            threads: Optional[int] = None) -> Union[np.ndarray, tuple[np.ndarray, ...]]:
    """Run ``graph`` on a batch in the compiled emulator; the same result as :func:`qfx.ir.run`, bit for bit.

    Args:
        graph: the IR graph.
        x: the batch (batch-first), or a sequence of one per graph input; floats are
            cast to the input formats with :func:`qfx.ir.input_codes`,
            integer codes are taken as they are when ``codes=True``.
        codes: take and return integer codes instead of values.
        threads: worker threads (default: the available cores, fewer for small batches).

    Returns the output values as float64 (exact up to 53-bit formats), or the
    output codes; one array, or a tuple for several outputs.
    """
    arrays = [np.asarray(a) for a in ([x] if len(graph.inputs) == 1 else x)]
    if not codes:
        arrays = [input_codes(a, v.type) for a, v in zip(arrays, graph.inputs)]
    found = run_codes(graph, arrays, threads=threads)
    outs = [found[name] if codes else values_of(found[name], v.type)
            for name, v in zip(graph.outputs, graph.output_values)]
    return outs[0] if len(outs) == 1 else tuple(outs)

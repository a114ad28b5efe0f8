"""The Vitis HLS back end: an IR graph to a bit-exact HLS project, and C simulation without Vitis.

    files = qfx.hls.generate(graph, qfx.load_board("ultra96v2"), io="stream")   # {path: text}
    qfx.hls.write_project(files, "out/net_hls")                                 # atomic
    report = qfx.hls.run_csim("out/net_hls")                                    # g++ + ap_types
    assert report.ok, report.summary()

Modules: :mod:`.layers` (each node as a library call, sized to be exact),
:mod:`.project` (the plan: ``{path: text}``, rendered through
:mod:`qfx.render`, which also writes it atomically), :mod:`.csim`
(compile, cache, run, verdict), :mod:`.toolchain` (where headers and tools
are), :mod:`.report` (formats, costs, synthesis results).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Optional

import numpy as np

from ..boards import Board
from ..ir import Graph, input_codes
from .csim import CsimError, CsimReport, TensorResult, run_csim
from .layers import HLSError
from .project import IO_MODES, plan_project
from .toolchain import ToolchainError
from .. import render
from ..render import ForeignFilesError, UnsafePathError

__all__ = ["generate", "default_inputs", "float_inputs", "write_project", "run_csim", "CsimReport",
           "TensorResult", "HLSError", "CsimError", "ToolchainError", "UnsafePathError", "ForeignFilesError", "IO_MODES"]

#: Golden samples the testbench checks when no inputs are given.
DEFAULT_SAMPLES = 256


def default_inputs(graph: Graph, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> list[np.ndarray]:
    """Random codes covering each input format's whole range, reproducible from ``seed``."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise HLSError(f"the number of golden samples (--samples) must be at least 1, got {samples!r}")
    for v in graph.inputs:
        if v.type.width > 63:
            raise HLSError(f"graph '{graph.name}': input '{v.name}' is {v.type.width} bits wide; random golden "
                           "samples are drawn for inputs of at most 63 bits: pass --inputs")
    rng = np.random.default_rng(seed)
    return [rng.integers(v.type.code_min, v.type.code_max, size=(samples,) + v.shape, endpoint=True,
                         dtype=np.int64) for v in graph.inputs]


def float_inputs(graph: Graph, *arrays: np.ndarray) -> list[np.ndarray]:
    """Float inputs (one batch-first array per graph input) as codes, cast as the model's input casts."""
    if len(arrays) != len(graph.inputs):
        raise HLSError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s), got {len(arrays)}")
    return [input_codes(np.asarray(x), v.type) for x, v in zip(arrays, graph.inputs)]


def generate(graph: Graph, board: Board, io: str = "parallel", inputs: Optional[list[np.ndarray]] = None,
             reuse: Optional[dict[str, int]] = None) -> dict[str, str]:
    """The project's files as ``{relative path: text}``; ``inputs`` are codes (default: :func:`default_inputs`)."""
    return plan_project(graph, board, io, inputs if inputs is not None else default_inputs(graph), reuse)


def write_project(files: dict[str, str], directory: "os.PathLike | str", force: bool = False) -> pathlib.Path:
    """Write a plan of :func:`generate` as the folder ``directory``, atomically (see :func:`qfx.render.write_project`).

    With ``force`` an earlier project is replaced, together with what Vitis
    built in it (``<top>_prj/``, its logs), but never a folder holding
    other files.
    """
    try:
        top = json.loads(files.get("qfx.json", "{}")).get("top")
    except (ValueError, AttributeError):
        top = None
    outputs = ("vitis_hls.log", "logs", ".Xil") + ((f"{top}_prj",) if isinstance(top, str) else ())
    return render.write_project(files, directory, force=force, outputs=outputs)

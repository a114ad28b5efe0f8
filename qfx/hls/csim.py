"""C simulation without Vitis: compile the project's firmware and testbench with g++, run, read the verdict.

The binary depends only on the sources (the golden codes are read at run
time), so it is cached by a hash of the sources, compiler and flags under
``$QFX_CACHE_DIR`` or ``~/.cache/qfx/hls``, and checked against its recorded
digest before each run (:func:`qfx.cxx.heal`).  The testbench prints one line
per traced tensor; :class:`CsimReport` holds them, and
:attr:`CsimReport.first_mismatch` names the first layer that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import subprocess
import tempfile
import time
from typing import Optional

from .. import cxx
from .toolchain import ToolchainError, ap_types_include, compiler

__all__ = ["CsimReport", "TensorResult", "CsimError", "compile_testbench", "run_csim", "cache_dir"]

FLAGS = ("-std=c++14", "-O1", "-DQFX_TRACE", "-w")


class CsimError(RuntimeError):
    """The testbench did not compile or did not run to a verdict; the message holds the tool's output."""


@dataclasses.dataclass(frozen=True)
class TensorResult:
    """One traced tensor: how many codes differ, and where the first one is."""

    name: str
    mismatches: int
    first: str


@dataclasses.dataclass(frozen=True)
class CsimReport:
    """The verdict of one C simulation."""

    samples: int
    output_mismatches: int
    tensors: list[TensorResult]
    compile_seconds: float
    run_seconds: float
    cached: bool

    @property
    def mismatches(self) -> int:
        """Codes that differ from qfx.ir, outputs and traced tensors together."""
        return self.output_mismatches + sum(t.mismatches for t in self.tensors)

    @property
    def ok(self) -> bool:
        """Whether every code agrees."""
        return self.samples > 0 and self.mismatches == 0

    @property
    def first_mismatch(self) -> Optional[TensorResult]:
        """The first tensor in graph order with a mismatch: the first layer that differs."""
        return next((t for t in self.tensors if t.mismatches), None)

    def summary(self) -> str:
        """One paragraph for people."""
        if self.ok:
            return f"bit-exact: {self.samples} samples, every code of every layer equals qfx.ir (0 mismatches)"
        first = self.first_mismatch
        where = f"; first differing layer '{first.name}' ({first.mismatches} codes, {first.first})" if first else ""
        return f"MISMATCH: {self.mismatches} codes differ over {self.samples} samples{where}"


def cache_dir() -> pathlib.Path:
    """``$QFX_CACHE_DIR/hls`` or ``~/.cache/qfx/hls``."""
    return cxx.cache_dir("hls")


def _sources(directory: pathlib.Path) -> list[pathlib.Path]:
    files = sorted((directory / "firmware").glob("*.cpp")) + [directory / "tb" / "tb.cpp"]
    missing = [f for f in files if not f.is_file()]
    if missing or not (directory / "firmware").is_dir():
        raise CsimError(f"'{directory}' is not a qfx HLS project (missing {missing[0] if missing else 'firmware/'});"
                        " generate one with `qfx hls GRAPH -o DIR`")
    return files


def compile_testbench(directory: "os.PathLike | str") -> tuple[pathlib.Path, float, bool]:
    """The compiled testbench of the project in ``directory``: (binary, seconds spent compiling, from cache)."""
    directory = pathlib.Path(directory)
    sources = _sources(directory)
    headers = sorted((directory / "firmware").glob("*.h"))
    compiler_path, include = compiler(), ap_types_include()
    digest = hashlib.sha256()
    for part in [compiler_path, str(include), *FLAGS]:
        digest.update(part.encode() + b"\0")
    for path in sources + headers:
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    binary = cache_dir() / digest.hexdigest()[:32] / "tb"
    if cxx.heal(binary):  # checked against its recorded digest: a damaged binary is rebuilt, never run
        return binary, 0.0, True
    binary.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=binary.parent, prefix=".tb.")
    os.close(fd)
    start = time.perf_counter()
    command = [compiler_path, *FLAGS, f"-I{include}", f"-I{directory / 'firmware'}", *map(str, sources), "-o", partial]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(partial)
        raise CsimError(f"compiling the testbench of '{directory}' failed:\n{result.stderr[-4000:]}")
    cxx.install(pathlib.Path(partial), binary)
    return binary, time.perf_counter() - start, False


_TENSOR = re.compile(r"^qfx-csim tensor (\S+) mismatches (\d+)(?: first (.*))?$")


def parse_output(text: str) -> tuple[int, int, list[TensorResult]]:
    """(samples, output mismatches, tensors) from the testbench's ``qfx-csim`` lines."""
    samples = outputs = -1
    tensors = []
    for line in text.splitlines():
        if line.startswith("qfx-csim samples "):
            samples = int(line.split()[-1])
        elif line.startswith("qfx-csim outputs mismatches "):
            outputs = int(line.split()[-1])
        elif (m := _TENSOR.match(line)):
            tensors.append(TensorResult(m[1], int(m[2]), m[3] or ""))
    return samples, outputs, tensors


def run_csim(directory: "os.PathLike | str", timeout: float = 600) -> CsimReport:
    """Compile (or reuse) and run the testbench of the project in ``directory`` on its golden data."""
    directory = pathlib.Path(directory)
    binary, compile_seconds, cached = compile_testbench(directory)
    start = time.perf_counter()
    result = subprocess.run([str(binary), str(directory / "tb" / "data")], capture_output=True, text=True,
                            timeout=timeout)
    run_seconds = time.perf_counter() - start
    samples, outputs, tensors = parse_output(result.stdout)
    if samples < 0 or outputs < 0 or result.returncode not in (0, 1):
        raise CsimError(f"the testbench of '{directory}' stopped without a verdict (exit {result.returncode}):\n"
                        f"{(result.stdout + result.stderr)[-4000:]}")
    return CsimReport(samples, outputs, tensors, compile_seconds, run_seconds, cached)


__all__ += ["ToolchainError", "parse_output"]

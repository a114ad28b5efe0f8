"""Where the outside tools are: the ``ap_types`` headers, a C++ compiler, Vitis HLS.

Each finder returns a path or raises :class:`ToolchainError` saying exactly
what is missing and how to provide it.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil

__all__ = ["ToolchainError", "ap_types_include", "compiler", "vitis_command"]


class ToolchainError(RuntimeError):
    """A tool or header set that a command needs is not installed; the message says what to install."""


def ap_types_include() -> pathlib.Path:
    """The directory holding ``ap_fixed.h``: ``$XILINX_HLS/include``, else the copy in the hls4ml wheel."""
    xilinx = os.environ.get("XILINX_HLS")
    if xilinx and (pathlib.Path(xilinx) / "include" / "ap_fixed.h").is_file():
        return pathlib.Path(xilinx) / "include"
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.origin:
        headers = pathlib.Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
        if (headers / "ap_fixed.h").is_file():
            return headers
    where = f"$XILINX_HLS/include (XILINX_HLS={xilinx})" if xilinx else "$XILINX_HLS (not set)"
    raise ToolchainError(f"the ap_types headers (ap_fixed.h) were found neither in {where} nor in an hls4ml "
                         "installation; source Vitis HLS's settings64.sh, or `pip install hls4ml` (its wheel "
                         "ships Xilinx's Apache-2.0 headers)")


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else ``g++``, if on ``PATH``."""
    name = os.environ.get("CXX", "g++")
    found = shutil.which(name)
    if found is None:
        raise ToolchainError(f"C++ compiler '{name}' not found on PATH; install g++ (e.g. apt-get install g++) "
                             "or set CXX")
    return found


def vitis_command(script: str) -> list[str]:
    """The command line running the Tcl ``script`` under Vitis HLS (``vitis-run``, else ``vitis_hls``)."""
    search = os.environ.get("PATH", "")
    if os.environ.get("XILINX_HLS"):
        search = str(pathlib.Path(os.environ["XILINX_HLS"]) / "bin") + os.pathsep + search
    run = shutil.which("vitis-run", path=search)
    if run:
        return [run, "--mode", "hls", "--tcl", script]
    hls = shutil.which("vitis_hls", path=search)
    if hls:
        return [hls, "-f", script]
    raise ToolchainError("neither vitis-run (Vitis 2023.2 and later) nor vitis_hls was found on PATH or in "
                         "$XILINX_HLS/bin; install AMD Vitis HLS and source its settings64.sh, then run "
                         "`qfx build` again (`qfx csim` needs only g++)")

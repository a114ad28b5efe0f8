"""The Verilog back end: fixed-point networks as hand-style RTL, cocotb cosimulation and Yosys estimates.

``generate(graph, directory, pipeline=N)`` writes synthesisable
Verilog-2005 (one module per layer, a top with valid pipeline), the
test vectors, a cocotb test and its pytest runner;
``simulate(directory, "icarus" | "verilator")`` runs that test;
``synthesize(directory)`` estimates LUT/FF/CARRY/DSP with Yosys.  Constant
products are adder graphs (:mod:`qfx.rtl.adder_graph`); casts follow
:mod:`qfx.ir.integer` in logic (:mod:`qfx.rtl.casts`).
"""

from .adder_graph import AdderGraph, build_adder_graph, csd_digits
from .generate import generate, plan_design, render
from .layers import RTLError
from .simulate import simulate
from .synth import synthesize

__all__ = ["generate", "render", "plan_design", "simulate", "synthesize", "RTLError", "AdderGraph", "build_adder_graph",
           "csd_digits"]

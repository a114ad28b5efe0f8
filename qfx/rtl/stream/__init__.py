"""The streaming Verilog architecture: a pipeline of stages connected by valid/ready pixel streams.

``plan_schedule(graph, parallel)`` gives each node's stream shape,
parallelism, initiation interval and latency (:mod:`.plan`);
``generate_stream(graph, directory, parallel=...)`` writes the design
(:mod:`.generate`): line-buffered convolutions and pooling, folded dense
layers, accumulating global pooling, elementwise stages, joins (add, sub,
mul, channel concat) with FIFOs on their operands, zero insertion and
upsampling, and one AXI-Stream port per graph input and output, with a
cocotb test under random gaps and backpressure.  Simulation and synthesis are :mod:`qfx.rtl.simulate` and
:mod:`qfx.rtl.synth`, shared with the unrolled architecture.
"""

from .generate import STREAM_VECTORS, generate_stream, plan_stream_design, render_stream
from .plan import Layout, Schedule, StagePlan, plan_schedule

__all__ = ["generate_stream", "render_stream", "plan_stream_design", "plan_schedule", "Schedule", "StagePlan",
           "Layout", "STREAM_VECTORS"]

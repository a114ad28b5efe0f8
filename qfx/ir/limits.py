"""What qfx accepts from a file or a name: every limit in one place, each checked before the work it bounds.

Files and names are not trusted (a graph file, its arrays, ``--inputs``
arrays, a generated folder, the compile cache); the installed package is.
A graph that passes :meth:`qfx.ir.Graph.check` stays inside every limit
below, so no back end allocates or loops beyond them; each refusal is an
:class:`~qfx.ir.IRError` naming the file, the node and the limit.

=========================  ====================================================  ==============================
limit                      bounds                                                checked in
=========================  ====================================================  ==============================
``MAX_FILE_BYTES``         a graph file (JSON) or an ``--inputs`` array file     :mod:`qfx.ir.serialize`
``MAX_JSON_DEPTH``         nesting of ``[`` and ``{`` in a graph file             :mod:`qfx.ir.serialize`
``MAX_NUMBER_DIGITS``      digits of one number in a graph file or format        serialize, :mod:`qfx.format`
``MAX_ARRAY_MEMBERS``      members of the arrays file (``.npz``)                 :mod:`qfx.ir.serialize`
``MAX_ELEMENTS``           elements of one tensor: a constant, a tensor per      serialize (from the ``.npy``
                           sample, a padded input                                header, before reading it),
                                                                                 :mod:`qfx.ir.graph`, ops
``MAX_CONSTANT_ELEMENTS``  elements of all constants of a graph together         :mod:`qfx.ir.serialize`
``MAX_WIDTH``              word width of any format in the IR                    :mod:`qfx.ir.graph`
``MAX_INT_BITS``           how far the binary point lies from the word           :mod:`qfx.ir.graph`
``MAX_WORK``               multiply-adds or compares of one node per sample      :mod:`qfx.ir.ops`
``MAX_NODES``              nodes of one graph                                    :mod:`qfx.ir.graph`
=========================  ====================================================  ==============================

Back ends add their own: the emulator's 64-bit codes and 127-bit
accumulators (:mod:`qfx.emulator.codegen`), the HLS back end's 62-bit
tensors (:mod:`qfx.hls.layers`), the RTL back end's design size
(:data:`qfx.rtl.generate.MAX_DESIGN_BITS`) and unrolled taps, and the
K-hot projection's width (:mod:`qfx.khot`).
"""

from __future__ import annotations

__all__ = ["MAX_FILE_BYTES", "MAX_JSON_DEPTH", "MAX_NUMBER_DIGITS", "MAX_ARRAY_MEMBERS", "MAX_ELEMENTS",
           "MAX_CONSTANT_ELEMENTS", "MAX_WIDTH", "MAX_INT_BITS", "MAX_WORK", "MAX_NODES"]

MAX_FILE_BYTES = 256 << 20
MAX_JSON_DEPTH = 32
MAX_NUMBER_DIGITS = 24
MAX_ARRAY_MEMBERS = 1 << 16
MAX_ELEMENTS = 1 << 26
MAX_CONSTANT_ELEMENTS = 1 << 27
MAX_WIDTH = 1024  # ap_int's default AP_INT_MAX_W
MAX_INT_BITS = 4096
MAX_WORK = 1 << 34
MAX_NODES = 1 << 17

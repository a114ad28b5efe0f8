"""Properties of ``qfx.quantize`` at any width and mode, drawn by Hypothesis, against ``reference_fixed``.

Random formats up to 53 bits (float64) or 24 (float32), binary points well
outside the word, inputs on the grid, on ties, scaled near the range or
anywhere: the codes equal the reference's; a cast is idempotent, monotonic
under saturation, and lands in range on the grid.  The exhaustive and
hand-worked checks are in ``test_functional.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import qfx
from qfx import FixedType

import reference_fixed as ref  # tests/ is on sys.path under pytest's default import mode


_MODES = st.sampled_from(ref.ROUNDING_MODES)


@st.composite
def fixed_types(draw, max_width: int, overflow_modes=ref.OVERFLOW_MODES) -> FixedType:
    """Any valid FixedType up to ``max_width`` bits, binary point within 10 bits of either end."""
    width = draw(st.integers(1, max_width))
    int_bits = draw(st.integers(-10, width + 10))
    signed = draw(st.booleans())
    overflow = draw(st.sampled_from([o for o in overflow_modes if signed or o != "WRAP_SM"]))
    sat_bits = draw(st.integers(0, width)) if overflow.startswith("WRAP") else 0
    return FixedType(width, int_bits, signed=signed, rounding=draw(_MODES), overflow=overflow, sat_bits=sat_bits)


@st.composite
def cases(draw, overflow_modes=ref.OVERFLOW_MODES):
    """A (dtype, FixedType, input list) triple: inputs near the range, on ties, or anywhere."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    t = draw(fixed_types(24 if dtype == torch.float32 else 53, overflow_modes))
    f = t.frac_bits
    span = 1 << (t.width + 1)
    on_grid = st.builds(lambda j, q: math.ldexp(j + q / 4, -f), st.integers(-2 * span, 2 * span), st.integers(0, 3))
    bits = 32 if dtype == torch.float32 else 64
    anywhere = st.floats(allow_nan=False, allow_infinity=False, width=bits)
    scaled = st.builds(lambda u: math.ldexp(u, -f), st.floats(-4.0 * span, 4.0 * span, width=bits))
    xs = draw(st.lists(st.one_of(on_grid, scaled, anywhere), min_size=1, max_size=40))
    xs = ref.to_float32(xs) if dtype == torch.float32 else xs
    assume(xs)
    return dtype, t, xs


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_agrees_with_reference_at_any_width(case):
    """Random widths up to 53 (float64) / 24 (float32), all modes: codes equal the reference's."""
    dtype, t, xs = case
    x = torch.tensor(xs, dtype=dtype)
    want = [ref.ap_fixed_code(v, t.width, t.int_bits, t.signed, t.rounding.value, t.overflow.value, t.sat_bits)
            for v in xs]
    assert qfx.to_codes(x, t).tolist() == want


@settings(max_examples=100, deadline=None)
@given(cases())
def test_property_idempotent(case):
    """quantize(quantize(x)) == quantize(x) in every mode: the result is representable."""
    dtype, t, xs = case
    q = qfx.quantize(torch.tensor(xs, dtype=dtype), t)
    assert torch.equal(qfx.quantize(q, t), q)


@settings(max_examples=100, deadline=None)
@given(cases(overflow_modes=("SAT", "SAT_SYM")))
def test_property_monotonic_under_saturation(case):
    """SAT and SAT_SYM casts never reverse the order of two inputs (SAT_ZERO and WRAP may)."""
    dtype, t, xs = case
    x = torch.tensor(sorted(xs), dtype=dtype)
    q = qfx.quantize(x, t)
    assert bool((q[1:] >= q[:-1]).all())


@settings(max_examples=100, deadline=None)
@given(cases())
def test_property_within_range_and_on_the_grid(case):
    """Every result lies in [min, max] and is an integer multiple of lsb."""
    dtype, t, xs = case
    q = qfx.quantize(torch.tensor(xs, dtype=dtype), t)
    assert q.dtype == dtype
    for value in q.tolist():
        assert t.min <= value <= t.max
        code = Fraction(value) / Fraction(2) ** -t.frac_bits
        assert code.denominator == 1
        assert t.code_min <= code <= t.code_max

"""The cast ``qfx.quantize`` / ``qfx.to_codes`` against the independent reference in ``reference_fixed``.

The exhaustive part feeds every format with W in 1..6 (and a sample at 7..8)
every code, every half-LSB tie, points a quarter LSB either side, the floats
next to each code and tie, points a whole wrap period outside the range and
far beyond it, in float64 and float32, and compares codes, values and the
straight-through gradient element by element.  The reference works on the
exact value of each float actually fed, so float32 rounding of an input
cannot hide or fake a mismatch.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pytest
import torch

import qfx
from qfx import FixedType

import reference_fixed as ref  # tests/ is on sys.path under pytest's default import mode


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this module's many small casts on one intra-op thread, restoring the setting afterwards.

    Batches here hold a few thousand elements: waking a thread pool for each
    op costs far more than it saves (milliseconds per op on small machines),
    and the results cannot depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------- formats

def _int_bits_spread(width: int) -> list[int]:
    """Binary points left of the word, at its top, inside it, at its bottom and right of it."""
    return sorted({-3, -1, 0, 1, width // 2, width - 1, width, width + 1, width + 4})


def _overflow_specs(width: int, signed: bool, sat_bits_choices=None) -> list[tuple[str, int]]:
    """Every (overflow mode, N) pair a ``width``-bit format admits (N only for the WRAP modes)."""
    ns = range(width + 1) if sat_bits_choices is None else sorted({n for n in sat_bits_choices if 0 <= n <= width})
    specs = [("SAT", 0), ("SAT_ZERO", 0), ("SAT_SYM", 0)]
    specs += [("WRAP", n) for n in ns]
    if signed:  # ap_ufixed cannot use AP_WRAP_SM
        specs += [("WRAP_SM", n) for n in ns]
    return specs


EXHAUSTIVE_GROUPS = [(w, i, s) for w in range(1, 7) for i in _int_bits_spread(w) for s in (True, False)]
# W = 7 and 8: each binary-point position once per width, alternating signedness
SAMPLED_GROUPS = [(7, -2, True), (7, 3, False), (7, 10, True), (8, -2, False), (8, 4, True), (8, 11, False)]


# ------------------------------------------------------------------ inputs

def _next_floats(values: list[float]) -> tuple[list[float], list[float]]:
    """The float64 and float32 neighbours on either side of each value: one ulp from a tie or a code."""
    next64 = [math.nextafter(v, math.inf) for v in values] + [math.nextafter(v, -math.inf) for v in values]
    v32 = np.asarray(values, dtype=np.float32)
    next32 = np.concatenate([np.nextafter(v32, np.float32(np.inf)), np.nextafter(v32, np.float32(-np.inf))])
    return next64, [float(v) for v in next32]


def _near_inputs(width: int, int_bits: int, signed: bool) -> tuple[list[float], list[float]]:
    """Points in and around the range: a quarter-LSB grid over one wrap period either side, and ulp neighbours.

    The grid holds every code, every tie and the quarter points; a whole
    period beyond each end makes every bit pattern of the dropped bit ``W``
    (which AP_WRAP_SM reads) appear while overflowing.
    """
    f = width - int_bits
    period = 1 << width
    lo, hi = ref.code_min(width, signed) - period - 2, ref.code_max(width, signed) + period + 2
    grid = [math.ldexp(j / 4, -f) for j in range(4 * lo, 4 * hi + 1)]
    # ulp neighbours of the codes and ties near the range: where a sloppy "+0.5" rounds the wrong way
    near = [math.ldexp(j / 2, -f) for j in range(2 * (ref.code_min(width, signed) - 2),
                                                  2 * (ref.code_max(width, signed) + 2) + 1)]
    next64, next32 = _next_floats(near)
    tiny = [math.ldexp(1.0, -f - 30), -math.ldexp(1.0, -f - 30), 0.0, -0.0]
    base = grid + tiny
    return base + next64, ref.to_float32(base) + next32


def _far_inputs(width: int, int_bits: int, signed: bool) -> tuple[list[float], list[float]]:
    """Points far outside the range, with every low-bit pattern that the WRAP modes read, and huge values.

    Kept apart from the near points because qfx takes other paths (exact
    integers beyond the mantissa, folding of huge values) when a tensor holds them.
    """
    f = width - int_bits
    period = 1 << width
    offsets = [0, 0.25, 0.5, 0.75, 1, period / 2 - 0.5, period / 2, period - 1, period - 0.5]
    units = [k * period + r for k in (2, 3, 4, 7, 1 << 10, 1 << 20, 1 << 40) for r in offsets]
    values = [math.ldexp(s * u, -f) for u in units for s in (1, -1)]
    huge = [1e300, -1e300, float(np.finfo(np.float64).max), -float(np.finfo(np.float64).max) / 3,
            float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max), 2.0 ** 100,
            -(2.0 ** 100 + 2.0 ** 60), 5e-324, -5e-324, 2.0 ** -149, -(2.0 ** -149)]
    values += huge
    return values, ref.to_float32(values)


@dataclass
class _Group:
    """Inputs of every format sharing (W, I, signed), with the exact values the reference needs."""

    width: int
    int_bits: int
    signed: bool
    batches: dict[str, torch.Tensor]  # name -> input tensor ("near64", "near32", "far64", "far32")
    where: dict[str, torch.Tensor]  # name -> index of each element in `xs`
    xs: list[float]  # every distinct input value
    v: list[Fraction]  # exact x * 2**F of each
    lead: list[int]  # header's lD of each
    rounded: dict[str, "_Rounded"] = field(default_factory=dict)

    def codes(self, rounding: str) -> "_Rounded":
        """The reference's rounded codes of every input under ``rounding`` (cached)."""
        if rounding not in self.rounded:
            self.rounded[rounding] = _Rounded.build([ref.round_code(v, rounding) for v in self.v], self)
        return self.rounded[rounding]


@dataclass
class _Rounded:
    """Rounded codes R of a group's inputs, and the (R, lD) pairs where an overflow mode may change R.

    "May change" is R outside the range or at code_min (SAT_SYM's extra
    case); elsewhere every mode keeps R.  Many inputs share a pair (the
    quarter points of one code), so each format asks the reference once per
    distinct pair instead of once per input.
    """

    codes: list[int]
    codes_t: torch.Tensor  # codes, int64
    pairs: list[tuple[int, int]]  # distinct (R, lD) needing the overflow mode
    edge: torch.Tensor  # input indices whose R needs the overflow mode
    pair_of: torch.Tensor  # for each of `edge`, its index in `pairs`

    @classmethod
    def build(cls, codes: list[int], group: "_Group") -> "_Rounded":
        """Find the inputs at or beyond the range ends and their distinct (R, lD) pairs."""
        low, high = ref.code_min(group.width, group.signed), ref.code_max(group.width, group.signed)
        edge = [k for k, r in enumerate(codes) if not low < r <= high]
        pair_index: dict[tuple[int, int], int] = {}
        pair_of = [pair_index.setdefault((codes[k], group.lead[k]), len(pair_index)) for k in edge]
        in_int64 = [min(max(r, low - 1), high + 1) for r in codes]  # huge R are all in `edge`, replaced later
        return cls(codes, torch.tensor(in_int64, dtype=torch.int64), list(pair_index),
                   torch.tensor(edge, dtype=torch.int64), torch.tensor(pair_of, dtype=torch.int64))


@functools.lru_cache(maxsize=None)
def _group(width: int, int_bits: int, signed: bool) -> _Group:
    """Build (once) the inputs and exact values of one (W, I, signed) group."""
    near64, near32 = _near_inputs(width, int_bits, signed)
    far64, far32 = _far_inputs(width, int_bits, signed)
    lists = {"near64": near64, "near32": near32, "far64": far64, "far32": far32}
    index: dict[tuple[float, float], int] = {}
    xs: list[float] = []
    where: dict[str, torch.Tensor] = {}
    for name, values in lists.items():
        positions = []
        for x in values:
            key = (x, math.copysign(1.0, x))  # keep -0.0 apart from 0.0
            if key not in index:
                index[key] = len(xs)
                xs.append(x)
            positions.append(index[key])
        where[name] = torch.tensor(positions, dtype=torch.int64)
    batches = {name: torch.tensor(values, dtype=torch.float32 if name.endswith("32") else torch.float64)
               for name, values in lists.items()}
    f = width - int_bits
    v = [ref.scaled(x, f) for x in xs]
    lead = [ref.dropped_lead_bit(s, width) for s in v]
    return _Group(width, int_bits, signed, batches, where, xs, v, lead)


# --------------------------------------------------------------- reporting

class _Mismatches:
    """Collects disagreements with the reference and prints the first few of each kind."""

    def __init__(self) -> None:
        self.count = 0
        self.first: dict[tuple[str, str], str] = {}

    def check(self, kind: str, t: FixedType, xs: torch.Tensor, expected: torch.Tensor, got: torch.Tensor) -> None:
        """Record every element where ``got != expected`` (codes, values or gradients)."""
        bad = (got != expected).nonzero().flatten().tolist()
        self.count += len(bad)
        for k in bad[:2]:
            key = (kind, str(t))
            if key not in self.first:
                x = float(xs[k])
                self.first[key] = (f"{kind} {t} x={x!r} ({x.hex()}): expected {expected[k].item()!r}, "
                                   f"got {got[k].item()!r}")

    def raised(self, kind: str, t: FixedType, x: torch.Tensor, error: Exception) -> None:
        """Record a batch that qfx refused although every element is a finite float the header casts."""
        self.count += x.numel()
        self.first.setdefault((kind, str(t)), f"{kind} {t}: raised {type(error).__name__}: {str(error)[:120]}")

    def assert_none(self) -> None:
        """Fail listing up to 25 examples, one per (kind, format)."""
        if self.count:
            lines = list(self.first.values())
            # no traceback: the message says all there is, and hundreds of failing cases format slowly
            pytest.fail(f"{self.count} mismatches with the ap_fixed reference over {len(lines)} (check, format) "
                        "pairs; first ones:\n  " + "\n  ".join(lines[:25]), pytrace=False)


# -------------------------------------------------------- exhaustive tests

def _check_format(group: _Group, t: FixedType, mismatches: _Mismatches) -> None:
    """Compare every batch of ``group`` under ``t``: codes, float64 and float32 values, and the gradient mask."""
    w, s, o, n = group.width, group.signed, t.overflow.value, t.sat_bits
    rounded = group.codes(t.rounding.value)
    expected_t = rounded.codes_t.clone()
    in_range_t = torch.ones(len(rounded.codes), dtype=torch.float64)
    if rounded.pairs:
        stored = torch.tensor([ref.overflow_code(r, ld, w, s, o, n) for r, ld in rounded.pairs], dtype=torch.int64)
        flagged = torch.tensor([0.0 if ref.overflowed(r, w, s, o) else 1.0 for r, _ in rounded.pairs],
                               dtype=torch.float64)
        expected_t[rounded.edge] = stored[rounded.pair_of]
        in_range_t[rounded.edge] = flagged[rounded.pair_of]
    for name, x in group.batches.items():
        want = expected_t[group.where[name]]
        try:
            if name == "far64":  # the integer entry point, on the batch with exact-integer and folded paths
                mismatches.check("to_codes/" + name, t, x, want, qfx.to_codes(x, t))
                continue
            xg = x.clone().requires_grad_(True)
            q = qfx.quantize(xg, t)
            q.sum().backward()
        except (ValueError, RuntimeError) as error:  # a finite input must never be refused
            mismatches.raised(name, t, x, error)
            continue
        if q.dtype != x.dtype:
            raise AssertionError(f"quantize({x.dtype}) returned {q.dtype} for {t}")
        mismatches.check("quantize/" + name, t, x, want.to(x.dtype) * t.lsb, q.detach())
        mismatches.check("grad/" + name, t, x, in_range_t[group.where[name]].to(x.dtype), xg.grad)


def _run_groups(width: int, int_bits: int, signed: bool, rounding: str, sat_bits_choices=None) -> None:
    """Check every overflow spec of one (W, I, signed, rounding) against the reference."""
    group = _group(width, int_bits, signed)
    mismatches = _Mismatches()
    for overflow, n in _overflow_specs(width, signed, sat_bits_choices):
        t = FixedType(width, int_bits, signed=signed, rounding=rounding, overflow=overflow, sat_bits=n)
        _check_format(group, t, mismatches)
    mismatches.assert_none()


def _group_id(g) -> str:
    w, i, s = g
    return f"{'s' if s else 'u'}W{w}I{i}"


@pytest.mark.parametrize("rounding", ref.ROUNDING_MODES)
@pytest.mark.parametrize("group", EXHAUSTIVE_GROUPS, ids=_group_id)
def test_exhaustive_small_widths(group, rounding):
    """W in 1..6: every overflow mode and every N, every code/tie/quarter point, float64 and float32."""
    _run_groups(*group, rounding)


@pytest.mark.parametrize("rounding", ref.ROUNDING_MODES)
@pytest.mark.parametrize("group", SAMPLED_GROUPS, ids=_group_id)
def test_sampled_widths_7_and_8(group, rounding):
    """W in 7..8, three binary points each, N in {0, 1, 2, W-1, W}."""
    width = group[0]
    _run_groups(*group, rounding, sat_bits_choices=(0, 1, 2, width - 1, width))


@pytest.mark.parametrize("rounding", ref.ROUNDING_MODES)
@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_batches_without_overflow(width, rounding):
    """A batch whose elements all stay in range (qfx's no-overflow shortcut) casts as element-wise."""
    for int_bits, signed in itertools.product((-1, 0, width, width + 2), (True, False)):
        group = _group(width, int_bits, signed)
        rounded = group.codes(rounding).codes
        for overflow, n in _overflow_specs(width, signed, (0, 1, width)):
            t = FixedType(width, int_bits, signed=signed, rounding=rounding, overflow=overflow, sat_bits=n)
            keep = [k for k in group.where["near64"].tolist()
                    if not ref.overflowed(rounded[k], width, signed, overflow)]
            if not keep:
                continue
            x = torch.tensor([group.xs[k] for k in keep], dtype=torch.float64, requires_grad=True)
            q = qfx.quantize(x, t)
            q.sum().backward()
            want = torch.tensor([float(rounded[k]) for k in keep], dtype=torch.float64) * t.lsb
            assert torch.equal(q.detach(), want), str(t)
            assert torch.equal(x.grad, torch.ones_like(x)), str(t)


# ----------------------------------------------- extreme binary points

@pytest.mark.parametrize("dtype, int_bits", [
    pytest.param(torch.float64, -1014, id="f64-F1022"),  # the largest F float64 allows
    pytest.param(torch.float64, -300, id="f64-I-300"),
    pytest.param(torch.float64, 300, id="f64-I300"),
    pytest.param(torch.float64, 1024, id="f64-I1024"),  # max = 127 * 2**1016, below float64's largest power
    pytest.param(torch.float32, -118, id="f32-F126"),  # the largest F float32 allows
    pytest.param(torch.float32, 128, id="f32-I128"),
])
@pytest.mark.parametrize("rounding", ["RND", "RND_CONV", "TRN", "TRN_ZERO", "RND_MIN_INF"])
def test_binary_point_far_from_the_word(dtype, int_bits, rounding):
    """ap_fixed<8, I> with I far from the word: scaling by 2**F stays exact and huge inputs still wrap right."""
    width = 8
    f = width - int_bits
    # a quarter-LSB grid over the range and a little beyond, then ties and codes out to a wrap period away
    units = [j / 4 for j in range(-4 * 136, 4 * 136 + 1)]
    units += [s * (k + h) for k in range(136, 400, 7) for h in (0, 0.5) for s in (1, -1)]
    xs = [math.ldexp(u, -f) for u in units if abs(u) < 2 ** (1024 + f)]  # beyond: not a float64
    if dtype == torch.float64:
        xs += [1e308, -1e308, math.ldexp(1.0, -1022), -math.ldexp(3.0, -1022)]
        # subnormal doubles are read differently by the header: test_subnormal_double_as_the_header_reads_it
        xs = [x for x in xs if math.isfinite(x) and (x == 0 or abs(x) >= math.ldexp(1.0, -1022))]
    else:
        xs = ref.to_float32(xs)
    x = torch.tensor(xs, dtype=dtype)
    v = [ref.scaled(value, f) for value in xs]
    rounded = [ref.round_code(s, rounding) for s in v]
    lead = [ref.dropped_lead_bit(s, width) for s in v]
    mismatches = _Mismatches()
    for overflow, n in _overflow_specs(width, True, (0, 1, 3)):
        t = FixedType(width, int_bits, rounding=rounding, overflow=overflow, sat_bits=n)
        want = torch.tensor([ref.overflow_code(r, ld, width, True, overflow, n) for r, ld in zip(rounded, lead)],
                            dtype=torch.int64)
        mismatches.check("to_codes", t, x, want, qfx.to_codes(x, t))
        mismatches.check("quantize", t, x, want.to(dtype) * t.lsb, qfx.quantize(x, t))
    mismatches.assert_none()


def _widest_inputs(width: int, int_bits: int, dtype: torch.dtype) -> list[float]:
    """Codes and half codes at and around both range ends, a wrap period out, and beyond, as ``dtype`` floats.

    At the widest width a dtype allows, codes one period outside the range
    need one bit more than the mantissa: the bit-pattern modes must still
    see their low W+1 bits right.
    """
    f = width - int_bits
    period = 1 << width
    ends = [-(1 << (width - 1)), (1 << (width - 1)) - 1, 0, (1 << width) - 1]
    centres = [e + k * period for e in ends for k in (-2, -1, 0, 1, 2)]
    units = [c + d for c in centres for d in (-3, -2, -1.5, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 1.5, 2, 3)]
    units += [s * 2.0 ** e + d for e in (width + 3, width + 20, 200) for s in (1, -1) for d in (0, 1, 2 ** (e - 40))]
    values = [math.ldexp(u, -f) for u in units]
    return ref.to_float32(values) if dtype == torch.float32 else values


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV", "TRN_ZERO"])
@pytest.mark.parametrize("dtype, width", [pytest.param(torch.float32, 24, id="f32-W24"),
                                          pytest.param(torch.float64, 53, id="f64-W53")])
def test_widest_formats_each_dtype_allows(dtype, width, rounding, signed):
    """W = 24 on float32 and W = 53 on float64: every overflow mode, N in {0, 1, 2, W-1, W}, at the range ends."""
    int_bits = width // 2
    xs = _widest_inputs(width, int_bits, dtype)
    x = torch.tensor(xs, dtype=dtype)
    mismatches = _Mismatches()
    for overflow, n in _overflow_specs(width, signed, (0, 1, 2, width - 1, width)):
        t = FixedType(width, int_bits, signed=signed, rounding=rounding, overflow=overflow, sat_bits=n)
        want = torch.tensor([ref.ap_fixed_code(v, width, int_bits, signed, rounding, overflow, n) for v in xs],
                            dtype=torch.int64)
        mismatches.check("to_codes", t, x, want, qfx.to_codes(x, t))
        mismatches.check("quantize", t, x, want.to(dtype) * t.lsb, qfx.quantize(x, t))
    mismatches.assert_none()


def test_subnormal_double_as_the_header_reads_it():
    """At F = 1022 a subnormal double is read by ap_fixed_base(double) with its hidden bit set (header quirk).

    ``ap_fixed<8,-1014,AP_RND>(2**-1024)`` is 1 in C++ (the header reads
    1.25 * 2**-1023, i.e. 0.625 LSB), not 0 (0.25 LSB); confirmed with g++.
    """
    xs = [math.ldexp(1.0, -1024), math.ldexp(3.0, -1074), -math.ldexp(1.0, -1024), math.ldexp(1.0, -1023)]
    x = torch.tensor(xs, dtype=torch.float64)
    for rounding in ("RND", "RND_CONV", "RND_INF", "TRN"):
        t = FixedType(8, -1014, rounding=rounding)
        want = [ref.ap_fixed_code(ref.header_reads_double(v), 8, -1014, True, rounding) for v in xs]
        assert qfx.to_codes(x, t).tolist() == want, str(t)


# ----------------------------------------------------------- hand examples

@pytest.mark.parametrize("spelling, x, code", [
    ("ap_fixed<1,1,AP_TRN,AP_SAT_SYM>", -1.0, -1),  # W=1: overflow_adjust's word 1<<0 | 1 is code_min itself
    ("ap_fixed<1,1,AP_TRN,AP_SAT_SYM>", -5.0, -1),
    ("ap_fixed<4,4,AP_TRN,AP_SAT_SYM>", -8.0, -7),  # W>1: never code_min
    ("ap_fixed<4,4,AP_TRN,AP_WRAP_SM>", 9.0, 6),  # lD=0 != new sign 1: invert 1001 -> 0110
    ("ap_fixed<4,4,AP_RND,AP_WRAP_SM>", 15.5, 0),  # lD from the unrounded 01111 is 0 = new sign of 10000: kept
    ("ap_fixed<4,4,AP_TRN,AP_WRAP_SM>", 16.0, -1),  # lD=1, new sign 0: invert 0000 -> 1111
    ("ap_fixed<4,4,AP_TRN,AP_WRAP,2>", 9.0, 5),  # positive overflow: 1001 -> sign 0, next bit 1: 0101
    ("ap_fixed<4,4,AP_TRN,AP_WRAP,2>", -9.0, -5),  # negative: sign 1, next bit 0 over the wrapped 0111
    ("ap_ufixed<4,4,AP_TRN,AP_WRAP,2>", -1.0, 15),  # unsigned underflow also sets the top N bits
    ("ap_ufixed<4,4,AP_TRN,AP_WRAP,2>", 17.0, 13),  # 10001 wraps to 0001, top two bits set: 1101
    # One ulp from a tie is not a tie: every "nearest" mode picks the nearest integer.  v - 0.5 or
    # v + 0.5 computed in floating point can round onto the next integer when it crosses a power of two.
    ("ap_fixed<8,8,AP_RND>", math.nextafter(0.5, 0.0), 0),
    ("ap_fixed<8,8,AP_RND>", math.nextafter(-0.5, -1.0), -1),
    ("ap_fixed<8,8,AP_RND>", math.nextafter(-1.5, -2.0), -2),
    ("ap_fixed<8,8,AP_RND>", math.nextafter(-3.5, -4.0), -4),
    ("ap_fixed<8,8,AP_RND_INF>", -math.nextafter(0.5, 0.0), 0),
    ("ap_fixed<8,8,AP_RND_INF>", math.nextafter(0.5, 0.0), 0),
    ("ap_fixed<8,8,AP_RND_MIN_INF>", -math.nextafter(0.5, 0.0), 0),
    ("ap_fixed<8,8,AP_RND_MIN_INF>", math.nextafter(0.5, 1.0), 1),
    ("ap_fixed<8,8,AP_RND_MIN_INF>", math.nextafter(1.5, 2.0), 2),
    ("ap_fixed<8,8,AP_RND_ZERO>", math.nextafter(0.5, 1.0), 1),
    ("ap_fixed<8,8,AP_RND_ZERO>", math.nextafter(-0.5, -1.0), -1),
    ("ap_fixed<8,8,AP_RND_CONV>", math.nextafter(0.5, 1.0), 1),
    ("ap_fixed<8,8,AP_RND_CONV>", math.nextafter(-2.5, -3.0), -3),
])
def test_hand_worked_corner_cases(spelling, x, code):
    """Corner cases worked by hand from overflow_adjust and quantization_adjust (and checked with g++)."""
    t = FixedType.parse(spelling)
    assert ref.ap_fixed_code(x, t.width, t.int_bits, t.signed, t.rounding.value, t.overflow.value,
                             t.sat_bits) == code
    assert qfx.to_codes(torch.tensor([x], dtype=torch.float64), t).item() == code


# --------------------------------------------------------------- gradient

def test_gradient_is_one_in_range_after_rounding_and_zero_where_it_overflowed():
    """ap_fixed<4,2,AP_RND,AP_SAT>: max + lsb/4 rounds back to max (in range), max + lsb/2 rounds out (overflow)."""
    t = FixedType(4, 2, rounding="RND", overflow="SAT")  # lsb 0.25, range [-2, 1.75]
    x = torch.tensor([1.75 + 0.0625, 1.75 + 0.125, -2.0 - 0.0625, -2.0 - 0.125, 0.3, -2.0],
                     dtype=torch.float64, requires_grad=True)
    qfx.quantize(x, t).backward(torch.full((6,), 3.0, dtype=torch.float64))
    # RND sends -2.125 (a tie) up to -2.0: in range; -2.0625 also rounds to -2.0
    assert x.grad.tolist() == [3.0, 0.0, 3.0, 3.0, 3.0, 3.0]


def test_gradient_zero_at_code_min_under_sat_sym_and_where_wrapped():
    """Signed SAT_SYM flags code_min as underflow; WRAP flags any wrap."""
    x = torch.tensor([-2.0, -1.75, 1.75, 2.0, -2.25], dtype=torch.float64, requires_grad=True)
    qfx.quantize(x, "ap_fixed<4,2,AP_TRN,AP_SAT_SYM>").sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    x.grad = None
    qfx.quantize(x, "ap_fixed<4,2>").sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_gradient_float32_flows_with_the_input_dtype():
    """float32 in: float32 out and float32 gradient."""
    x = torch.linspace(-3, 3, 25, dtype=torch.float32, requires_grad=True)
    q = qfx.quantize(x, FixedType(6, 2, overflow="SAT"))
    q.sum().backward()
    assert q.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert x.grad.tolist() == [float(-2.0 <= v <= 2.0 - 1 / 16) for v in x.tolist()]


# ------------------------------------------------------------- refusals

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fn", [qfx.quantize, qfx.to_codes], ids=["quantize", "to_codes"])
def test_nan_and_inf_refused_with_shape_and_counts(fn, dtype):
    """NaN and Inf raise ValueError naming the tensor's shape, the NaN count and the Inf count."""
    x = torch.tensor([[1.0, math.nan, math.inf], [-math.inf, 2.0, math.nan]], dtype=dtype)
    x[0, 0] = math.inf
    with pytest.raises(ValueError) as info:
        fn(x, FixedType(8, 3))
    message = str(info.value)
    assert "(2, 3)" in message
    assert "2 NaN" in message
    assert "3 infinite" in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16, torch.bfloat16, torch.bool], ids=str)
@pytest.mark.parametrize("fn", [qfx.quantize, qfx.to_codes], ids=["quantize", "to_codes"])
def test_non_float32_64_dtypes_refused(fn, dtype):
    """Only float32 and float64 are cast; others raise TypeError rather than silently converting."""
    with pytest.raises(TypeError):
        fn(torch.zeros(3, dtype=dtype), FixedType(8, 3))


@pytest.mark.parametrize("dtype, ok, too_wide", [pytest.param(torch.float32, 24, 25, id="f32"),
                                                  pytest.param(torch.float64, 53, 54, id="f64")])
def test_widths_beyond_the_mantissa_refused(dtype, ok, too_wide):
    """Width 25 on float32 or 54 on float64 raises ValueError; 24 and 53 work and are exact at the ends."""
    t = FixedType(ok, ok, overflow="SAT")
    x = torch.tensor([2.0 ** (ok - 1) - 1, -2.0 ** (ok - 1), 2.0 ** ok], dtype=dtype)
    assert qfx.to_codes(x, t).tolist() == [2 ** (ok - 1) - 1, -2 ** (ok - 1), 2 ** (ok - 1) - 1]
    for fn in (qfx.quantize, qfx.to_codes):
        with pytest.raises(ValueError, match=str(too_wide)):
            fn(torch.zeros(2, dtype=dtype), FixedType(too_wide, 0))


def test_binary_point_outside_the_exponent_range_refused():
    """F = 1023 on float64 and F = 127 on float32 are refused: 2**-F is not a normal number there."""
    with pytest.raises(ValueError):
        qfx.to_codes(torch.zeros(1, dtype=torch.float64), FixedType(8, -1015))
    with pytest.raises(ValueError):
        qfx.to_codes(torch.zeros(1, dtype=torch.float32), FixedType(8, -119))


def test_output_dtypes():
    """float32 in, float32 out; float64 in, float64 out; codes are int64 either way."""
    for dtype in (torch.float32, torch.float64):
        x = torch.linspace(-3, 3, 7, dtype=dtype)
        assert qfx.quantize(x, "ap_fixed<8,3>").dtype == dtype
        assert qfx.to_codes(x, "ap_fixed<8,3>").dtype == torch.int64
        assert qfx.from_codes(torch.tensor([3]), "ap_fixed<8,3>", dtype=dtype).dtype == dtype


def test_quantize_accepts_a_cpp_spelling():
    """quantize and to_codes take a C++ spelling as well as a FixedType."""
    x = torch.linspace(-5, 5, 41, dtype=torch.float64)
    t = FixedType(6, 2, rounding="RND", overflow="SAT")
    assert torch.equal(qfx.quantize(x, "ap_fixed<6,2,AP_RND,AP_SAT>"), qfx.quantize(x, t))
    assert torch.equal(qfx.to_codes(x, "ap_fixed<6, 2, AP_RND, AP_SAT>"), qfx.to_codes(x, t))


def test_empty_tensor():
    """An empty tensor casts to an empty tensor of the same dtype (codes: int64)."""
    assert qfx.quantize(torch.empty(0, 3), "ap_fixed<8,3>").shape == (0, 3)
    assert qfx.to_codes(torch.empty(0), "ap_fixed<8,3>").dtype == torch.int64


# --------------------------------------------------- to_codes / from_codes

@pytest.mark.parametrize("spelling", ["ap_fixed<5,2>", "ap_ufixed<5,-2>", "ap_fixed<1,0>", "ap_ufixed<1,3>",
                                      "ap_fixed<12,20,AP_RND,AP_SAT>", "ap_fixed<24,1>"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_codes_round_trip(spelling, dtype):
    """from_codes then to_codes is the identity on every code; quantize leaves those values alone."""
    t = FixedType.parse(spelling)
    step = max(1, (t.code_max - t.code_min) // 5000)
    codes = torch.arange(t.code_min, t.code_max + 1, step, dtype=torch.int64)
    codes = torch.cat([codes, torch.tensor([t.code_max])])
    values = qfx.from_codes(codes, t, dtype=dtype)
    assert values.dtype == dtype
    assert torch.equal(values, codes.to(dtype) * t.lsb)
    assert torch.equal(qfx.to_codes(values, t), codes)
    assert torch.equal(qfx.quantize(values, t), values)


def test_from_codes_refuses_out_of_range_and_non_integer_codes():
    """Codes one past either end raise ValueError; float or bool codes raise TypeError; too wide a type ValueError."""
    t = FixedType(4, 1)
    for bad in ([8], [-9], [0, 8], [-9, 0]):
        with pytest.raises(ValueError):
            qfx.from_codes(torch.tensor(bad), t)
    with pytest.raises(ValueError):
        qfx.from_codes(torch.tensor([-1]), FixedType(4, 1, signed=False))
    with pytest.raises(TypeError):
        qfx.from_codes(torch.tensor([1.0]), t)
    with pytest.raises(TypeError):
        qfx.from_codes(torch.tensor([True]), t)
    with pytest.raises(ValueError):
        qfx.from_codes(torch.tensor([1]), FixedType(30, 1), dtype=torch.float32)
    assert qfx.from_codes(torch.tensor([7, -8]), t).tolist() == [0.875, -1.0]


@pytest.mark.parametrize("x, error, fragment", [([1.0, 2.0], TypeError, "got list"),
                                                (np.array([1.0]), TypeError, "got ndarray"),
                                                (torch.empty(3, device="meta"), ValueError, "meta tensor")])
def test_quantize_names_a_wrong_argument(x, error, fragment):
    for function in (qfx.quantize, qfx.functional.to_codes):
        with pytest.raises(error, match=f"argument 'x' .*{fragment}"):
            function(x, "ap_fixed<8,3>")

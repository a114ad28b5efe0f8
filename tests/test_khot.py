"""K-hot quantization (:mod:`qfx.khot`) against references written here.

Nothing in the expected values comes from :mod:`qfx.khot`.  Three independent
ways of counting signed digits are used and checked against each other:

* :func:`bfs_digit_table`: breadth-first search over sums of ``±2**i``; the
  level at which a code is first reached is its minimal number of nonzero
  signed digits (used for every code of the small formats);
* :func:`min_signed_digits`: the textbook recurrence on the lowest digit
  (used for arbitrary, large integers);
* :func:`allowed_by_sums`: every sum of at most ``k`` terms ``±2**i`` (used
  to list the allowed codes of 16- and 24-bit formats).

The nearest allowed code is found with exact :class:`fractions.Fraction`
arithmetic (:func:`nearest_allowed`), ties going to the neighbour of smaller
magnitude.  Small formats (W <= 10, signed and unsigned, several binary
points) are checked exhaustively on a quarter-LSB grid that contains every
code, every tie point and values beyond the range; larger formats on seeded
random data and with hypothesis.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qfx
from qfx import FixedType
from qfx.khot import csd_digits, khot_codes, khot_floor_ceil

# --------------------------------------------------------------- references

#: The BFS table below is exact for every |n| <= 2**BFS_VALID_EXP.
BFS_VALID_EXP = 11


@functools.lru_cache(maxsize=None)
def bfs_digit_table() -> dict[int, int]:
    """Minimal count of ``±2**i`` terms summing to ``n``, for ``|n| <= 2**BFS_VALID_EXP``.

    Breadth-first search from 0, one term ``±2**i`` (``i <= BFS_VALID_EXP + 1``)
    per level, partial sums kept within ``±2**(BFS_VALID_EXP + 2)``.  A minimal
    representation of ``|n| <= 2**E`` never needs a term above ``2**(E+1)``
    nor, adding its terms from the smallest up, a partial sum beyond twice
    ``2**(E+1)``, so the bounds lose nothing (and
    :func:`test_reference_digit_counts_agree` checks it against the recurrence).
    """
    top = BFS_VALID_EXP + 1
    bound = 1 << (top + 1)
    terms = [sign << i for i in range(top + 1) for sign in (1, -1)]
    level_of = {0: 0}
    frontier = [0]
    level = 0
    while frontier:
        level += 1
        reached = []
        for value in frontier:
            for term in terms:
                nxt = value + term
                if abs(nxt) <= bound and nxt not in level_of:
                    level_of[nxt] = level
                    reached.append(nxt)
        frontier = reached
    return {n: d for n, d in level_of.items() if abs(n) <= 1 << BFS_VALID_EXP}


def min_signed_digits(n: int) -> int:
    """Minimal number of nonzero digits in {-1, 0, 1} with ``n = sum d_i 2**i``.

    Recurrence on the lowest digit: it is 0 for even ``n``; for odd ``n`` it
    is ``+1`` or ``-1`` and the rest represents ``(n - 1) / 2`` or ``(n + 1) / 2``.
    """
    n = abs(int(n))

    @functools.lru_cache(maxsize=None)
    def count(m: int) -> int:
        if m == 0:
            return 0
        if m == 1:
            return 1
        if m % 2 == 0:
            return count(m // 2)
        return 1 + min(count((m - 1) // 2), count((m + 1) // 2))

    return count(n)


def code_range(t: FixedType) -> tuple[int, int]:
    """Smallest and largest integer code of ``t``, from its width and signedness only."""
    if t.signed:
        return -(1 << (t.width - 1)), (1 << (t.width - 1)) - 1
    return 0, (1 << t.width) - 1


def allowed_by_table(t: FixedType, k: int) -> list[int]:
    """Sorted codes of ``t`` whose minimal signed-digit count (BFS table) is at most ``k``."""
    lo, hi = code_range(t)
    assert max(-lo, hi) <= 1 << BFS_VALID_EXP, "format too wide for the BFS table"
    table = bfs_digit_table()
    return [c for c in range(lo, hi + 1) if table[c] <= k]


@functools.lru_cache(maxsize=None)
def allowed_by_sums(signed: bool, width: int, k: int) -> tuple[int, ...]:
    """Sorted codes of a ``width``-bit format that are sums of at most ``k`` terms ``±2**i``."""
    lo, hi = code_range(FixedType(width, 0, signed=signed))
    terms = [sign << i for i in range(width + 1) for sign in (1, -1)]
    sums = {0}
    for count in range(1, k + 1):
        sums.update(sum(c) for c in itertools.combinations_with_replacement(terms, count))
    return tuple(sorted(c for c in sums if lo <= c <= hi))


def scaled(x: float, t: FixedType) -> Fraction:
    """``x * 2**F`` exactly: the value in units of the LSB."""
    return Fraction(x) * Fraction(2) ** (t.width - t.int_bits)


def nearest_allowed(v: Fraction, allowed: list[int]) -> int:
    """The allowed code nearest to ``v``; a tie goes to the smaller magnitude.

    Only the two allowed codes around ``v`` can be nearest (beyond the range,
    the end itself), so they are found by bisection and compared exactly.
    """
    i = bisect.bisect_left(allowed, v)
    candidates = allowed[max(i - 1, 0):i + 1]
    return min(candidates, key=lambda a: (abs(a - v), abs(a)))


def nearest_allowed_brute_force(v: Fraction, allowed: list[int]) -> int:
    """As :func:`nearest_allowed`, comparing with every allowed code."""
    return min(allowed, key=lambda a: (abs(a - v), abs(a)))


def quarter_grid(t: FixedType, far_values: bool = True) -> list[Fraction]:
    """Every quarter LSB from 4 LSBs below the range to 4 above, and (optionally) values far beyond it.

    The grid holds every code, every tie point (a midpoint of two codes is a
    multiple of 1/2) and quarter-LSB offsets around them.
    """
    lo, hi = code_range(t)
    grid = [Fraction(q, 4) for q in range(4 * lo - 16, 4 * hi + 17)]
    if not far_values:
        return grid
    far = [Fraction(1 << t.width), Fraction(1 << (t.width + 7)), Fraction(3, 4) * (1 << (t.width + 20))]
    return grid + [lo - d for d in far] + [hi + d for d in far]


def to_float(v: Fraction, t: FixedType) -> float:
    """The float ``v * 2**-F`` (exact for the values used here)."""
    x = math.ldexp(float(v), -(t.width - t.int_bits))
    assert Fraction(x) == v / Fraction(2) ** (t.width - t.int_bits), "test value not exact in float64"
    return x


def codes_of(q: torch.Tensor, t: FixedType) -> list[int]:
    """Integer codes of quantized values, checking each is an exact multiple of the LSB."""
    codes = []
    for value in q.tolist():
        c = scaled(value, t)
        assert c.denominator == 1, f"{value} is not a multiple of the LSB of {t}"
        codes.append(int(c))
    return codes


# ------------------------------------------------------------------ formats

SMALL_FORMATS = [
    FixedType(1, 1),
    FixedType(2, 0),
    FixedType(3, 3),
    FixedType(5, 2, rounding="RND_CONV", overflow="SAT"),
    FixedType(6, -2),
    FixedType(7, 9, rounding="RND", overflow="SAT_SYM"),
    FixedType(8, 3),
    FixedType(8, 8, overflow="SAT_ZERO"),
    FixedType(9, 4, rounding="TRN_ZERO", overflow="WRAP", sat_bits=2),
    FixedType(10, 4),
    FixedType(10, 0, overflow="WRAP_SM"),
    FixedType(1, 1, signed=False),
    FixedType(3, 1, signed=False),
    FixedType(6, 6, signed=False, rounding="RND_INF", overflow="SAT"),
    FixedType(7, -1, signed=False),
    FixedType(10, 5, signed=False),
]
KS = [1, 2, 3, 4]
small_cases = pytest.mark.parametrize("t", SMALL_FORMATS, ids=str)
all_ks = pytest.mark.parametrize("k", KS)


def test_reference_digit_counts_agree():
    """The BFS table and the recurrence agree on every integer they both cover."""
    table = bfs_digit_table()
    assert len(table) == 2 * (1 << BFS_VALID_EXP) + 1
    for n, digits in table.items():
        assert digits == min_signed_digits(n), n
    # Known values: 0, powers of two, 2**j - 1 = 2**j - 2**0, alternating bits 0b10101.
    assert [min_signed_digits(n) for n in (0, 1, -1, 64, 7, 255, 0b10101, 0b1011, -0b1011)] == [0, 1, 1, 1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("t", [t for t in SMALL_FORMATS if t.width <= 7], ids=str)
@all_ks
def test_reference_nearest_matches_brute_force(t, k):
    """Bisection finds the same nearest code as comparing with every allowed code."""
    allowed = allowed_by_table(t, k)
    assert list(allowed_by_sums(t.signed, t.width, k)) == allowed
    for v in quarter_grid(t):
        assert nearest_allowed(v, allowed) == nearest_allowed_brute_force(v, allowed)


# ----------------------------------------------------- exhaustive, small

@small_cases
@all_ks
def test_khot_codes_small_formats(t, k):
    """khot_codes lists exactly the codes with at most k signed digits, sorted, int64."""
    codes = khot_codes(t, k)
    assert codes.dtype == torch.int64
    assert codes.tolist() == allowed_by_table(t, k)


@small_cases
@all_ks
def test_quantize_khot_exhaustive_grid(t, k):
    """Every code, quarter-LSB offset, tie point and out-of-range value against the reference."""
    allowed = allowed_by_table(t, k)
    grid = quarter_grid(t)
    x = torch.tensor([to_float(v, t) for v in grid], dtype=torch.float64)
    got = codes_of(qfx.quantize_khot(x, t, k), t)
    expected = [nearest_allowed(v, allowed) for v in grid]
    mismatches = [(float(v), g, e) for v, g, e in zip(grid, got, expected) if g != e]
    assert not mismatches, f"{t}, k={k}: (value in LSBs, got, expected) {mismatches[:10]}"
    table = bfs_digit_table()
    assert all(table[c] <= k for c in got)


@small_cases
@all_ks
def test_ties_go_toward_zero(t, k):
    """At the exact midpoint of two neighbouring allowed codes the smaller magnitude wins;
    one float step either side of it, the nearer neighbour."""
    allowed = allowed_by_table(t, k)
    pairs = list(zip(allowed, allowed[1:]))
    if not pairs:  # a single allowed code: no tie, everything maps to it
        assert codes_of(qfx.quantize_khot(torch.tensor([-1e9, 0.0, 1e9], dtype=torch.float64), t, k), t) \
            == allowed * 3
        return
    mids = torch.tensor([to_float(Fraction(a + b, 2), t) for a, b in pairs], dtype=torch.float64)
    at = codes_of(qfx.quantize_khot(mids, t, k), t)
    assert at == [a if abs(a) < abs(b) else b for a, b in pairs]
    below = codes_of(qfx.quantize_khot(torch.nextafter(mids, torch.tensor(-math.inf, dtype=torch.float64)), t, k), t)
    above = codes_of(qfx.quantize_khot(torch.nextafter(mids, torch.tensor(math.inf, dtype=torch.float64)), t, k), t)
    assert below == [a for a, _ in pairs]
    assert above == [b for _, b in pairs]


def test_ties_exercise_both_directions():
    """A signed format has ties resolved downward (positive side) and upward (negative side)."""
    t, k = FixedType(8, 8), 1
    x = torch.tensor([3.0, -3.0, 6.0, -6.0, 48.0, -48.0], dtype=torch.float64)  # midpoints of ±2, ±4 ... ±32, ±64
    assert qfx.quantize_khot(x, t, k).tolist() == [2.0, -2.0, 4.0, -4.0, 32.0, -32.0]


@small_cases
@pytest.mark.parametrize("k", [1, 3])
def test_float32_in_float32_out(t, k):
    """float32 input gives float32 output with the same values as float64 input."""
    grid = quarter_grid(t, far_values=False)
    x64 = torch.tensor([to_float(v, t) for v in grid], dtype=torch.float64)
    x32 = x64.float()
    assert torch.equal(x32.double(), x64)
    q32 = qfx.quantize_khot(x32, t, k)
    assert q32.dtype == torch.float32
    assert torch.equal(q32.double(), qfx.quantize_khot(x64, t, k))


@pytest.mark.parametrize("t", [FixedType(8, 3), FixedType(6, 0, signed=False), FixedType(10, 10), FixedType(2, 1)],
                         ids=str)
@all_ks
def test_gradient_mask(t, k):
    """Straight-through gradient between the extreme allowed values (inclusive), 0 outside."""
    allowed = allowed_by_table(t, k)
    grid = quarter_grid(t)
    x = torch.tensor([to_float(v, t) for v in grid], dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(1.0, 2.0, len(grid), dtype=torch.float64)
    (qfx.quantize_khot(x, t, k) * weights).sum().backward()
    inside = torch.tensor([allowed[0] <= v <= allowed[-1] for v in grid])
    assert inside.any() and not inside.all()
    assert torch.equal(x.grad, torch.where(inside, weights, torch.zeros_like(weights)))


def test_gradient_mask_ends_between_allowed_and_range_ends():
    """With k=1 on ap_fixed<8,8> the largest allowed code is 64, below code_max 127:
    the gradient already stops past 64."""
    t = FixedType(8, 8)
    x = torch.tensor([-128.0, -128.25, 64.0, 64.25, 100.0, 127.0], dtype=torch.float64, requires_grad=True)
    q = qfx.quantize_khot(x, t, 1)
    q.sum().backward()
    assert q.tolist() == [-128.0, -128.0, 64.0, 64.0, 64.0, 64.0]
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_modes_of_the_type_play_no_part():
    """Rounding and overflow modes (and sat_bits) do not change a K-hot value."""
    grid = quarter_grid(FixedType(8, 3))
    x = torch.tensor([to_float(v, FixedType(8, 3)) for v in grid], dtype=torch.float64)
    reference = qfx.quantize_khot(x, FixedType(8, 3), 2)
    for modes in [dict(rounding="RND_CONV", overflow="SAT"), dict(rounding="RND_INF", overflow="SAT_SYM"),
                  dict(overflow="SAT_ZERO"), dict(overflow="WRAP", sat_bits=3), dict(overflow="WRAP_SM")]:
        assert torch.equal(qfx.quantize_khot(x, FixedType(8, 3, **modes), 2), reference), modes
    assert torch.equal(qfx.quantize_khot(x, "ap_fixed<8,3,AP_RND,AP_SAT>", 2), reference)


def test_shape_is_kept_and_empty_input():
    t = FixedType(8, 3)
    x = torch.linspace(-20, 20, 60, dtype=torch.float64).reshape(3, 4, 5)
    q = qfx.quantize_khot(x, t, 2)
    assert q.shape == x.shape
    assert torch.equal(q.flatten(), qfx.quantize_khot(x.flatten(), t, 2))
    assert qfx.quantize_khot(torch.empty(0, 3), t, 2).shape == (0, 3)


# ------------------------------------------------------------- csd_digits

def test_csd_digits_every_small_integer():
    for n, digits in bfs_digit_table().items():
        assert csd_digits(n) == digits, n


def test_csd_digits_random_integers():
    rng = random.Random(1234)
    numbers = [rng.randrange(-(1 << bits), 1 << bits) for bits in (8, 16, 31, 53, 64, 100) for _ in range(300)]
    numbers += [(1 << 64) - 1, -(1 << 63), 0xAAAA_AAAA_AAAA_AAAA, 0x5555_5555]
    for n in numbers:
        assert csd_digits(n) == min_signed_digits(n), n


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("k", [0, -1, -5])
def test_k_below_one_is_refused(k):
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="k >= 1"):
        qfx.quantize_khot(x, FixedType(8, 3), k)
    with pytest.raises(ValueError, match="k >= 1"):
        khot_codes(FixedType(8, 3), k)


@pytest.mark.parametrize("k", [2.0, True, "2", None])
def test_k_not_an_integer_is_refused(k):
    with pytest.raises(ValueError):
        qfx.quantize_khot(torch.zeros(3, dtype=torch.float64), FixedType(8, 3), k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused(dtype, bad):
    x = torch.tensor([0.5, bad, 1.0], dtype=dtype)
    with pytest.raises(ValueError, match="NaN"):
        qfx.quantize_khot(x, FixedType(8, 3), 2)


def test_widths_beyond_the_dtype_are_refused():
    with pytest.raises(ValueError):
        qfx.quantize_khot(torch.zeros(2, dtype=torch.float32), FixedType(25, 5), 2)
    with pytest.raises(ValueError):
        qfx.quantize_khot(torch.zeros(2, dtype=torch.float64), FixedType(53, 5), 2)
    with pytest.raises(TypeError):
        qfx.quantize_khot(torch.zeros(2, dtype=torch.int32), FixedType(8, 5), 2)


# --------------------------------------------------- larger formats, random

LARGE_CASES = [
    (FixedType(16, 5), 2),
    (FixedType(16, 16, signed=False), 2),
    (FixedType(16, -3), 2),
    (FixedType(24, 8), 3),
    (FixedType(24, 0, signed=False), 3),
]
large_cases = pytest.mark.parametrize("t,k", LARGE_CASES, ids=lambda p: str(p))


@large_cases
def test_khot_codes_large_formats(t, k):
    """khot_codes equals the independent enumeration of sums of at most k powers of two."""
    assert khot_codes(t, k).tolist() == list(allowed_by_sums(t.signed, t.width, k))


def random_values(t: FixedType, codes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Uniform values over 1.25 times the range, every midpoint of allowed codes and the floats beside them."""
    rng = np.random.default_rng(seed)
    lsb = math.ldexp(1.0, -(t.width - t.int_bits))
    lo, hi = code_range(t)
    span = (hi - lo) * 0.125 * lsb
    uniform = rng.uniform(lo * lsb - span, hi * lsb + span, n)
    mids = (codes[:-1] + codes[1:]) * (0.5 * lsb)
    picked = mids[rng.integers(0, mids.size, min(n, mids.size))]
    return np.concatenate([uniform, mids, np.nextafter(picked, -np.inf), np.nextafter(picked, np.inf)])


@large_cases
def test_nearest_property_large_formats(t, k):
    """On seeded random data the result is the nearer of the allowed neighbours from
    khot_codes (exact comparison of 2v with their sum), ties to the smaller magnitude."""
    codes = khot_codes(t, k).numpy()
    x = random_values(t, codes, 20_000, seed=t.width * 10 + k)
    frac = t.width - t.int_bits
    v = np.ldexp(x, frac)  # exact: multiplying by a power of two
    got = np.ldexp(qfx.quantize_khot(torch.from_numpy(x), t, k).numpy(), frac)
    assert np.all(got == np.round(got)), "results are not whole codes"
    assert np.all(np.isin(got, codes)), "results outside khot_codes"
    upper = np.clip(np.searchsorted(codes, v, side="left"), 1, codes.size - 1)
    hi_n, lo_n = codes[upper].astype(np.float64), codes[upper - 1].astype(np.float64)
    twice = 2 * v  # exact, as are the sums of codes below 2**25
    expected = np.where(twice > lo_n + hi_n, hi_n,
                        np.where(twice < lo_n + hi_n, lo_n, np.where(np.abs(hi_n) < np.abs(lo_n), hi_n, lo_n)))
    expected = np.clip(expected, codes[0], codes[-1])
    expected = np.where(v <= codes[0], codes[0], np.where(v >= codes[-1], codes[-1], expected))
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, f"{t}, k={k}: x={x[bad[:5]]}, got codes {got[bad[:5]]}, expected {expected[bad[:5]]}"


@large_cases
def test_large_formats_against_fraction_reference(t, k):
    """A seeded sample, checked with exact fractions against the independent code list."""
    allowed = list(allowed_by_sums(t.signed, t.width, k))
    x = random_values(t, np.array(allowed), 600, seed=7 + k)
    got = codes_of(qfx.quantize_khot(torch.from_numpy(x), t, k), t)
    for xi, g in zip(x.tolist(), got):
        assert g == nearest_allowed(scaled(xi, t), allowed), (xi, g)
        assert min_signed_digits(g) <= k


def test_float32_24_bit_k3():
    t, k = FixedType(24, 8), 3
    allowed = list(allowed_by_sums(True, 24, k))
    x = torch.from_numpy(random_values(t, np.array(allowed), 2000, seed=3)).float()
    q = qfx.quantize_khot(x, t, k)
    assert q.dtype == torch.float32
    got = codes_of(q, t)
    for xi, g in zip(x.tolist(), got):
        assert g == nearest_allowed(scaled(xi, t), allowed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    int_bits=st.sampled_from([-4, 0, 5, 16, 21]),
    signed=st.booleans(),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=40),
)
def test_hypothesis_16_bit_k2(int_bits, signed, values):
    """Arbitrary finite float64 values (huge and tiny included) on 16-bit, k = 2."""
    t = FixedType(16, int_bits, signed=signed)
    allowed = list(allowed_by_sums(signed, 16, 2))
    got = codes_of(qfx.quantize_khot(torch.tensor(values, dtype=torch.float64), t, 2), t)
    assert got == [nearest_allowed(scaled(v, t), allowed) for v in values]


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(1, 24),
    int_bits=st.integers(-6, 30),
    signed=st.booleans(),
    k=st.integers(1, 3),
    lsbs=st.lists(st.integers(-(1 << 27), 1 << 27), min_size=1, max_size=30),
)
def test_hypothesis_any_width_on_half_lsb_grid(width, int_bits, signed, k, lsbs):
    """Values on a half-LSB grid (ties included) for any width up to 24 and k up to 3."""
    t = FixedType(width, int_bits, signed=signed)
    allowed = list(allowed_by_sums(signed, width, k))
    half = [Fraction(n, 2) for n in lsbs]
    x = torch.tensor([to_float(v, t) for v in half], dtype=torch.float64)
    got = codes_of(qfx.quantize_khot(x, t, k), t)
    assert got == [nearest_allowed(v, allowed) for v in half]


# ------------------------------------------------ every code allowed

@pytest.mark.parametrize("t,k", [(FixedType(24, 4), 13), (FixedType(30, 10, signed=False), 16)], ids=str)
def test_k_allowing_every_code(t, k):
    """When k allows every code (too many to list) the result is the nearest code,
    ties toward zero, saturated at the ends."""
    with pytest.raises(ValueError):
        khot_codes(t, k)
    lo, hi = code_range(t)
    rng = random.Random(5)
    lsb = Fraction(2) ** (t.int_bits - t.width)
    half = [Fraction(rng.randrange(2 * lo - 1000, 2 * hi + 1000), 2) for _ in range(3000)]
    half += [Fraction(lo), Fraction(hi), Fraction(2 * lo - 1, 2), Fraction(2 * hi + 1, 2), Fraction(1, 2), Fraction(-1, 2)]
    x = torch.tensor([float(v * lsb) for v in half], dtype=torch.float64)
    got = codes_of(qfx.quantize_khot(x, t, k), t)

    def nearest_code(v: Fraction) -> int:
        below, above = math.floor(v), math.ceil(v)
        c = min({below, above}, key=lambda a: (abs(a - v), abs(a)))
        return min(max(c, lo), hi)

    assert got == [nearest_code(v) for v in half]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_floor_and_ceil_without_a_table_match_a_brute_force_listing(k) -> None:
    """The table-free neighbours equal those found by listing every integer with at most k CSD digits."""
    allowed = np.array([c for c in range(-2048, 2049) if min_signed_digits(c) <= k])
    n = np.arange(-300, 301, dtype=np.int64)
    floor = khot_floor_ceil(n, k, ceil=False)
    ceil = khot_floor_ceil(n, k, ceil=True)
    for value, lo, hi in zip(n, floor, ceil):
        assert lo == allowed[allowed <= value].max() and hi == allowed[allowed >= value].min(), value


def test_a_wide_word_with_many_digits_projects_without_listing_its_codes() -> None:
    """Width 40, k 6: every result has at most 6 signed digits, and the projection is monotone, as a nearest one is."""
    t = FixedType(40, 20)
    x = torch.linspace(-1000.0, 1000.0, 2001, dtype=torch.float64) + 1 / 3
    q = qfx.quantize_khot(x, t, 6)
    codes = (q * 2.0 ** t.frac_bits).to(torch.int64).tolist()
    assert all(min_signed_digits(c) <= 6 for c in codes)
    assert bool((q[1:] >= q[:-1]).all())

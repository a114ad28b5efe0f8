"""qfx's cast and result types against Xilinx's ``ap_fixed`` headers, bit for bit.

A seeded generator picks about two hundred formats covering every rounding
× overflow pair, signed and unsigned, with the binary point left of, at, inside
and right of the word, and saturation bits for the wrap modes.  For each it
builds inputs aimed at the places where casts go wrong (ties, range edges,
wrap periods, huge and tiny magnitudes, signed zeros) plus random ones:
tens of thousands of casts in all.  The compiled headers
(:mod:`ap_fixed_oracle`) say what ``T y = x;`` stores; qfx must store the
same code, whether it casts all inputs of a format as one tensor or in small
batches.  The result types of ``+``, ``-``, ``*`` are compared for random
pairs of formats.  A Hypothesis test then throws arbitrary doubles at
the same compiled formats (the oracle reads inputs at run time, so it never
recompiles).
"""

from __future__ import annotations

import dataclasses
import math
import random
import struct
from typing import Callable, Optional, Sequence

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import qfx
from qfx import cast_native
from qfx.format import FixedType

from ap_fixed_oracle import OVERFLOWS, ROUNDINGS, CastCase, Oracle, RawFormat

SEED = 20240611
#: Each format costs ~0.15 s of g++ time (its own ap_fixed_base(double) instantiation): 3 per
#: mode triple keeps the cold run (compiling 189 formats) well under a minute on 2 cores.
FORMATS_PER_TRIPLE = 3
N_PAIRS = 200
#: Where the binary point sits relative to the word (see _int_bits).
PLACEMENTS = ("negative", "zero", "inside", "beyond", "anywhere")
#: Mismatches printed per failing test; the count of all of them is printed too.
MAX_REPORTED = 25

# Widths where something changes: 1 bit (sign only), float32's and float64's mantissas and their neighbours.
EDGE_WIDTHS = (1, 2, 3, 23, 24, 25, 52, 53)
#: Formats up to this width get inputs at every code and every tie.
SMALL_WIDTH = 5
#: Inputs per batch in the small-batch tests (see small_batches).
WINDOW = 8


# ------------------------------------------------------------ the formats
def _random_width(rng: random.Random) -> int:
    """A width in 1..53, often one of the edge widths."""
    return rng.choice(EDGE_WIDTHS) if rng.random() < 0.4 else rng.randint(1, 53)


def _int_bits(rng: random.Random, width: int, placement: str) -> int:
    """Integer bits putting the binary point ``placement`` relative to the word."""
    if placement == "negative":  # binary point left of the word: all bits fractional, none at 2**-1
        return rng.randint(-40, -1)
    if placement == "zero":
        return 0
    if placement == "inside":
        return rng.randint(1, width)
    if placement == "beyond":  # binary point right of the word: LSB weighs 2**k, k > 0
        return width + rng.randint(1, 40)
    return rng.randint(-60, width + 60)


def _sat_bits(rng: random.Random, width: int, overflow: str) -> int:
    """Saturation bits N: 0 except for the wrap modes, where 0, 1, 2, W-1, W and random values all occur."""
    if overflow not in ("WRAP", "WRAP_SM"):
        return 0
    return min(width, rng.choice([0, 0, 1, 2, width, width - 1, rng.randint(0, width)]))


def make_formats(rng: random.Random) -> list[RawFormat]:
    """``FORMATS_PER_TRIPLE`` formats for each of the 63 valid (signedness, rounding, overflow) triples.

    The binary point placements rotate over the triples, so each placement
    meets every mode about equally often.
    """
    triples = [(signed, rounding, overflow)
               for signed in (True, False) for rounding in ROUNDINGS for overflow in OVERFLOWS
               if signed or overflow != "WRAP_SM"]  # ap_ufixed aborts at run time on AP_WRAP_SM
    formats: list[RawFormat] = []
    turn = 0
    for signed, rounding, overflow in triples:
        for _ in range(FORMATS_PER_TRIPLE):
            placement = PLACEMENTS[turn % len(PLACEMENTS)]
            turn += 1
            width = _random_width(rng)
            fmt = RawFormat(width, _int_bits(rng, width, placement), signed, rounding, overflow,
                            _sat_bits(rng, width, overflow))
            if fmt not in formats:
                formats.append(fmt)
    return formats


def make_pairs(rng: random.Random, formats: Sequence[RawFormat], count: int) -> list[tuple[RawFormat, RawFormat]]:
    """Random operand pairs; every third one mixes signed and unsigned, in either order."""
    pairs = []
    for k in range(count):
        a = rng.choice(formats)
        b = rng.choice([f for f in formats if f.signed != a.signed] if k % 3 == 0 else formats)
        pairs.append((a, b))
    return pairs


# ------------------------------------------------------------- the inputs
def code_range(fmt: RawFormat) -> tuple[int, int]:
    """Smallest and largest code, computed here rather than taken from qfx."""
    if fmt.signed:
        return -(1 << (fmt.width - 1)), (1 << (fmt.width - 1)) - 1
    return 0, (1 << fmt.width) - 1


def _scaled(numerator: int, fmt: RawFormat, extra_frac_bits: int = 0) -> float:
    """``numerator * LSB / 2**extra_frac_bits`` (rounded to a double when the numerator needs over 53 bits)."""
    return math.ldexp(float(numerator), -fmt.frac_bits - extra_frac_bits)


# Huge magnitudes (beyond most ranges, up to the largest double) and tiny ones (down to the smallest subnormal).
FAR_AND_TINY = (1e30, 1e300, 1.7976931348623157e308, 2.0 ** 1000, 5e-324, 2.2250738585072014e-308, 1e-300)


def random_doubles(rng: random.Random, count: int) -> list[float]:
    """Finite doubles from uniformly random bit patterns: every exponent is equally likely."""
    out: list[float] = []
    while len(out) < count:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(x):
            out.append(x)
    return out


def make_inputs(fmt: RawFormat, rng: random.Random) -> list[float]:
    """Inputs at the interesting places of ``fmt``, then random ones; distinct as bit patterns."""
    lo, hi = code_range(fmt)
    period = 1 << fmt.width
    xs: list[float] = [0.0, -0.0]
    xs += [s * m for m in FAR_AND_TINY for s in (1.0, -1.0)]

    # Codes in range (the edges, around zero, a few random ones) and just outside it.
    codes = {lo, lo + 1, lo + 2, -2, -1, 0, 1, 2, hi - 2, hi - 1, hi, lo - 1, lo - 2, hi + 1, hi + 2}
    codes |= {rng.randint(lo, hi) for _ in range(3)}
    if fmt.width <= SMALL_WIDTH:  # few codes: every one of them, and every tie between them
        codes |= set(range(lo, hi + 1))
    # One and a few wrap periods away: the wrap modes must land on the same low bits.
    codes |= {hi + period, lo - period, rng.randint(lo, hi) + rng.randint(-5, 5) * period}
    for c in sorted(codes):
        exact = _scaled(c, fmt)
        tie_up, tie_down = _scaled(2 * c + 1, fmt, 1), _scaled(2 * c - 1, fmt, 1)
        xs += [exact, tie_up, tie_down, _scaled(4 * c + 1, fmt, 2), _scaled(4 * c - 1, fmt, 2)]
        # The doubles either side of a tie and of an exact code: one ulp decides the rounding.
        xs += [math.nextafter(v, d) for v in (tie_up, exact) for d in (math.inf, -math.inf)]

    # Values a quarter LSB apart around a random code.
    base = rng.randint(lo, hi)
    xs += [_scaled(4 * base + k, fmt, 2) for k in range(-6, 7)]

    # Random values across the range and beyond it, both signs.
    top = _scaled(hi + 1, fmt)
    xs += [rng.uniform(-3 * top, 3 * top) for _ in range(6)]
    xs += [rng.choice((1.0, -1.0)) * 2.0 ** rng.uniform(-fmt.frac_bits - 4, fmt.int_bits + 8) for _ in range(6)]
    # Codes needing more than the 53 bits a double's mantissa has: x * 2**F is then an integer already.
    for k in rng.sample(range(fmt.width - 2, fmt.width + 64), 6):
        mantissa = rng.getrandbits(52) | (1 << 52)
        xs.append(rng.choice((1.0, -1.0)) * math.ldexp(mantissa, k - 52 - fmt.frac_bits))
    xs += random_doubles(rng, 4)
    return list({x.hex(): x for x in xs}.values())


# Float32 values that float64 inputs do not reach once rounded: float32's extremes.
FLOAT32_EXTREMES = (3.4028234663852886e38, 1.1754943508222875e-38, 1.401298464324817e-45)


def to_float32_inputs(xs: Sequence[float]) -> list[float]:
    """Float32 values: the finite roundings of ``xs``, float32's extremes, and each one's float32 neighbours.

    Rounding the float64 inputs loses their one-ulp neighbours of ties and
    codes (float32's ulp is coarser), so those are made again in float32.
    """
    extremes = [s * m for m in FLOAT32_EXTREMES for s in (1.0, -1.0)]
    f32 = torch.tensor(list(xs) + extremes, dtype=torch.float64).float()
    f32 = f32[torch.isfinite(f32)]
    around = torch.cat([f32, torch.nextafter(f32, torch.full_like(f32, math.inf)),
                        torch.nextafter(f32, torch.full_like(f32, -math.inf))])
    values = around[torch.isfinite(around)].double().tolist()
    return list({x.hex(): x for x in values}.values())


def _build_cases() -> tuple[list[RawFormat], list[CastCase], list[CastCase], list[tuple[RawFormat, RawFormat]]]:
    rng = random.Random(SEED)
    formats = make_formats(rng)
    cases64 = [CastCase(fmt, make_inputs(fmt, rng)) for fmt in formats]
    # float32 holds every code of a format up to 24 bits wide; qfx refuses wider ones in float32.
    cases32 = [CastCase(c.fmt, to_float32_inputs(c.inputs), as_float32=True) for c in cases64 if c.fmt.width <= 24]
    return formats, cases64, cases32, make_pairs(rng, formats, N_PAIRS)


FORMATS, CASES64, CASES32, PAIRS = _build_cases()

# Hand-computed answers that check the oracle's plumbing (bits to signed codes, the float path,
# result types) before anything is compared with it: (format, inputs, through float32, codes).
KNOWN_CASTS = [
    (RawFormat(8, 3, True, "RND", "SAT"), [0.3, 1e30, -1e30, -0.0], False, [10, 127, -128, 0]),
    (RawFormat(4, 4, False), [17.0, -1.0, 3.9], False, [1, 15, 3]),
    (RawFormat(4, 4, True), [8.0, -9.0, -0.5], False, [-8, 7, -1]),
    (RawFormat(8, 8, True, "RND_CONV"), [2.5, 3.5, -2.5], True, [2, 4, -2]),
]
# ap_fixed<8,3> op ap_ufixed<6,-2>: the unsigned side needs one more integer bit (RType's plus_i).
KNOWN_PAIR = (RawFormat(8, 3, True), RawFormat(6, -2, False))
KNOWN_PAIR_TYPES = {"+": RawFormat(12, 4, True), "-": RawFormat(12, 4, True), "*": RawFormat(14, 1, True)}


# ------------------------------------------------------------ the oracle
@pytest.fixture(scope="module")
def oracle() -> Oracle:
    """The headers compiled for every format and pair above (cached across runs)."""
    return Oracle([*FORMATS, *(fmt for fmt, *_ in KNOWN_CASTS)], [*PAIRS, KNOWN_PAIR])


@pytest.fixture(scope="module")
def header_codes(oracle: Oracle) -> dict[int, list[int]]:
    """The headers' codes for every case, keyed by ``id(case)``: one run of each program."""
    cases = CASES64 + CASES32
    return {id(case): codes for case, codes in zip(cases, oracle.cast(cases))}


@pytest.fixture(scope="module")
def header_types(oracle: Oracle) -> list[dict[str, RawFormat]]:
    """The headers' result types of ``a + b``, ``a - b``, ``a * b`` for every pair."""
    return oracle.result_types()


# -------------------------------------------------------------- helpers
def fixed_type(fmt: RawFormat) -> FixedType:
    """The code under test's view of a format."""
    return FixedType(fmt.width, fmt.int_bits, signed=fmt.signed, rounding=fmt.rounding,
                     overflow=fmt.overflow, sat_bits=fmt.sat_bits)


def raw_format(t: FixedType) -> RawFormat:
    """A qfx type as template arguments, for comparison with what the headers declare."""
    return RawFormat(t.width, t.int_bits, t.signed, t.rounding.value, t.overflow.value, t.sat_bits)


def _case_id(case: CastCase) -> str:
    return case.fmt.cpp()


def _describe(x: float) -> str:
    return f"{x.hex()} ({x!r})"


def assert_codes_equal(fmt: RawFormat, inputs: Sequence[float], expected: Sequence[int],
                       actual: Sequence[object], what: str) -> None:
    """Fail listing format, input (hex float), header's code and qfx's code for each differing input."""
    bad = [(x, e, a) for x, e, a in zip(inputs, expected, actual) if e != a]
    if not bad:
        return
    lines = [f"{fmt.cpp()} = {fixed_type(fmt)!r}: {what} differs from ap_fixed.h "
             f"on {len(bad)} of {len(inputs)} inputs"]
    lines += [f"  x = {_describe(x)}: header code {e}, qfx code {a}" for x, e, a in bad[:MAX_REPORTED]]
    if len(bad) > MAX_REPORTED:
        lines.append(f"  … and {len(bad) - MAX_REPORTED} more")
    pytest.fail("\n".join(lines), pytrace=False)


def _codes_of_values(values: torch.Tensor, fmt: RawFormat) -> list[object]:
    """``value * 2**F`` as an int when it is one (exact: a power-of-two scale), else the odd value itself."""
    out: list[object] = []
    for v in values.double().tolist():
        code = math.ldexp(v, fmt.frac_bits)
        out.append(int(code) if math.isfinite(code) and code == int(code) else f"non-code value {v!r}")
    return out


def _run_qfx(xs: Sequence[float], fmt: RawFormat, dtype: torch.dtype,
             cast: Callable[[torch.Tensor, FixedType], torch.Tensor]) -> list[object]:
    """qfx's code for each input: ``to_codes`` as is, ``quantize``'s value divided by the LSB."""
    out = cast(torch.tensor(list(xs), dtype=dtype), fixed_type(fmt))
    return out.tolist() if cast is qfx.to_codes else _codes_of_values(out, fmt)


@dataclasses.dataclass(frozen=True)
class _Raised:
    """A qfx call that raised: the error and the inputs of that call."""

    error: str
    inputs: tuple[float, ...]

    def __str__(self) -> str:
        shown = ", ".join(x.hex() for x in self.inputs[:WINDOW])
        more = f", … ({len(self.inputs)} inputs)" if len(self.inputs) > WINDOW else ""
        return f"{self.error} on [{shown}{more}]"


def _run_qfx_bisecting(xs: Sequence[float], fmt: RawFormat, dtype: torch.dtype,
                       cast: Callable[[torch.Tensor, FixedType], torch.Tensor]) -> tuple[list[object], list[_Raised]]:
    """Codes of ``xs`` cast as one tensor, and the calls that raised on the way.

    The header casts every finite double, so an exception is a disagreement
    too; halving a batch that raises keeps one bad input (or a bad batch
    size) from hiding every other result.
    """
    try:
        return _run_qfx(xs, fmt, dtype, cast), []
    except Exception as error:  # noqa: BLE001 - reported, never swallowed
        raised = _Raised(repr(error), tuple(xs))
        if len(xs) == 1:
            return [f"raised {error!r}"], [raised]
        half = len(xs) // 2
        left, left_errors = _run_qfx_bisecting(xs[:half], fmt, dtype, cast)
        right, right_errors = _run_qfx_bisecting(xs[half:], fmt, dtype, cast)
        return left + right, [raised, *left_errors, *right_errors]


def small_batches(xs: Sequence[float], fmt: RawFormat) -> list[list[int]]:
    """Indices of ``xs`` in small batches: sorted runs of ``WINDOW`` neighbours, then some inputs alone.

    qfx decides from a tensor's bounds whether any element can overflow (and
    skips the overflow modes when none can) and whether huge values need
    folding; a large batch always has wide bounds.  Narrow batches, and single
    inputs below one LSB or beyond twice the range, exercise those decisions.
    """
    order = sorted(range(len(xs)), key=lambda k: xs[k])
    batches = [order[start:start + WINDOW] for start in range(0, len(order), WINDOW)]
    lsb, top = math.ldexp(1.0, -fmt.frac_bits), math.ldexp(1.0, fmt.int_bits + 1)
    batches += [[k] for k in order if abs(xs[k]) < lsb or abs(xs[k]) >= top]
    return batches


def _check_case(case: CastCase, expected: Sequence[int], dtype: torch.dtype,
                cast: Callable[[torch.Tensor, FixedType], torch.Tensor], what: str,
                batches: Optional[list[list[int]]] = None) -> None:
    """Compare qfx with the header on every input of ``case``.

    ``batches`` (indices into the inputs) says which inputs qfx casts together;
    by default all of them as one tensor, as users cast.
    """
    batches = [list(range(len(case.inputs)))] if batches is None else batches
    xs: list[float] = []
    codes: list[int] = []
    actual: list[object] = []
    errors: list[_Raised] = []
    for batch in batches:
        part_xs = [case.inputs[k] for k in batch]
        part, part_errors = _run_qfx_bisecting(part_xs, case.fmt, dtype, cast)
        xs += part_xs
        codes += [expected[k] for k in batch]
        actual += part
        errors += part_errors
    if errors:
        smallest = min(errors, key=lambda e: len(e.inputs))
        what += (f" (qfx raised {len(errors)} times, batches halved to go on; the smallest call that raised: "
                 f"{smallest})")
    assert_codes_equal(case.fmt, xs, codes, actual, what)
    if errors:
        pytest.fail(f"{case.fmt.cpp()}: {what} but every code matches ap_fixed.h", pytrace=False)


# ---------------------------------------------------------------- tests
@pytest.fixture(params=["native", "torch"])
def cast_path(request, monkeypatch) -> str:
    """Run a test on the native cast (which must build here) and on the PyTorch ops it falls back to."""
    if request.param == "torch":
        monkeypatch.setattr(cast_native, "library", lambda: None)
    else:
        assert cast_native.library() is not None, "the native cast did not build (is g++ installed?)"
    return request.param


def test_coverage_of_the_generator() -> None:
    """The seeded batch covers what it promises, so a change to the generator cannot quietly shrink it."""
    triples = {(f.signed, f.rounding, f.overflow) for f in FORMATS}
    assert len(triples) == 7 * 5 * 2 - 7
    assert {f.width for f in FORMATS} >= {1, 24, 53}
    assert any(f.int_bits < 0 for f in FORMATS) and any(f.int_bits == 0 for f in FORMATS)
    assert any(f.int_bits > f.width for f in FORMATS)
    assert {f.sat_bits for f in FORMATS if f.overflow in ("WRAP", "WRAP_SM")} >= {0, 1, 2}
    assert any(f.sat_bits == f.width > 1 for f in FORMATS)
    assert any(a.signed != b.signed for a, b in PAIRS)
    assert sum(len(c.inputs) for c in CASES64 + CASES32) > 5000


def test_oracle_known_answers(oracle: Oracle, header_types: list[dict[str, RawFormat]]) -> None:
    """The oracle itself, on answers worked out by hand from the ap_fixed semantics."""
    cases = [CastCase(fmt, xs, as_float32) for fmt, xs, as_float32, _ in KNOWN_CASTS]
    assert oracle.cast(cases) == [codes for *_, codes in KNOWN_CASTS]
    assert header_types[len(PAIRS)] == KNOWN_PAIR_TYPES


@pytest.mark.parametrize("case", CASES64, ids=_case_id)
def test_to_codes_float64(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float64, qfx.to_codes, "to_codes(float64)")


@pytest.mark.parametrize("case", CASES64, ids=_case_id)
def test_to_codes_float64_small_batches(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float64, qfx.to_codes, "to_codes(float64) in small batches",
                small_batches(case.inputs, case.fmt))


@pytest.mark.parametrize("case", CASES64, ids=_case_id)
def test_quantize_float64(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float64, qfx.quantize, "quantize(float64) / LSB")


@pytest.mark.parametrize("case", CASES32, ids=_case_id)
def test_to_codes_float32(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float32, qfx.to_codes, "to_codes(float32)")


@pytest.mark.parametrize("case", CASES32, ids=_case_id)
def test_to_codes_float32_small_batches(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float32, qfx.to_codes, "to_codes(float32) in small batches",
                small_batches(case.inputs, case.fmt))


@pytest.mark.parametrize("case", CASES32, ids=_case_id)
def test_quantize_float32(case: CastCase, header_codes: dict[int, list[int]], cast_path: str) -> None:
    _check_case(case, header_codes[id(case)], torch.float32, qfx.quantize, "quantize(float32) / LSB")


@pytest.mark.parametrize("index", range(len(PAIRS)), ids=lambda i: f"{PAIRS[i][0].cpp()}|{PAIRS[i][1].cpp()}")
def test_result_types(index: int, header_types: list[dict[str, RawFormat]]) -> None:
    """``add_type``/``sub_type``/``mul_type`` equal ``decltype(a+b)``/``(a-b)``/``(a*b)``, modes included."""
    a, b = PAIRS[index]
    ta, tb = fixed_type(a), fixed_type(b)
    ours = {"+": ta.add_type(tb), "-": ta.sub_type(tb), "*": ta.mul_type(tb)}
    bad = [f"  a {op} b: header {header_types[index][op].cpp()}, qfx {raw_format(t).cpp()}"
           for op, t in ours.items() if raw_format(t) != header_types[index][op]]
    assert not bad, f"result types of a = {a.cpp()}, b = {b.cpp()} differ from ap_fixed.h:\n" + "\n".join(bad)


@st.composite
def _format_and_inputs(draw: st.DrawFn) -> tuple[RawFormat, list[float]]:
    """A compiled format (no new compile) and up to 32 inputs: any finite doubles and eighths of an LSB."""
    fmt = draw(st.sampled_from(FORMATS))
    lo, hi = code_range(fmt)
    near_codes = st.builds(lambda c, eighths: _scaled(8 * c + eighths, fmt, 3),
                           st.integers(lo - 4, hi + 4), st.integers(-8, 8))
    doubles = st.floats(allow_nan=False, allow_infinity=False)
    return fmt, draw(st.lists(st.one_of(doubles, near_codes), min_size=1, max_size=32))


# derandomize: a fixed example sequence, so the suite's outcome does not change from run to run.
# No shrinking: a failure already names the smallest qfx call that went wrong (batches are halved
# when qfx raises), and shrinking would rerun the oracle hundreds of times on every run.
@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=[HealthCheck.too_slow])
@given(drawn=_format_and_inputs())
def test_to_codes_arbitrary_doubles(oracle: Oracle, drawn: tuple[RawFormat, list[float]]) -> None:
    """Hypothesis-drawn inputs, checked against the same compiled programs (inputs are data, not source)."""
    fmt, xs = drawn
    case = CastCase(fmt, xs)
    (expected,) = oracle.cast([case])
    _check_case(case, expected, torch.float64, qfx.to_codes, "to_codes(float64)")

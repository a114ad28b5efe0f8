"""``qfx.FixedType``: validation, spelling, parsing, the range, and the exact result types.

Expected values are worked by hand or recomputed here with Python ints from
the rules in Xilinx's ``ap_fixed_base.h`` (``RType``), never taken from qfx.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction

import pytest

from qfx import FixedType, Overflow, Rounding

ROUNDINGS = ["RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV", "TRN", "TRN_ZERO"]
OVERFLOWS = ["SAT", "SAT_ZERO", "SAT_SYM", "WRAP", "WRAP_SM"]


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("width", [0, -1, -8])
def test_width_below_one_refused(width):
    """A word needs at least one bit."""
    with pytest.raises(ValueError, match="width"):
        FixedType(width, 0)


@pytest.mark.parametrize("field, value", [
    ("width", 8.0), ("width", "8"), ("width", True), ("width", None),
    ("int_bits", 3.0), ("int_bits", "3"), ("int_bits", False),
    ("sat_bits", 1.0), ("sat_bits", True),
])
def test_non_int_fields_refused(field, value):
    """width, int_bits and sat_bits must be real ints (bool is refused: True is not a bit count)."""
    fields = {"width": 8, "int_bits": 3, "overflow": "WRAP", **{field: value}}
    with pytest.raises(TypeError, match=field):
        FixedType(**fields)


@pytest.mark.parametrize("signed", [1, 0, "yes", None])
def test_signed_must_be_a_bool(signed):
    """signed=1 is refused rather than read as True."""
    with pytest.raises(TypeError, match="signed"):
        FixedType(8, 3, signed=signed)


@pytest.mark.parametrize("kw, value", [
    ("rounding", "ROUND"), ("rounding", "AP_RND_UP"), ("rounding", ""), ("rounding", 3), ("rounding", None),
    ("overflow", "SATURATE"), ("overflow", "AP_WRAP_AROUND"), ("overflow", 0), ("overflow", Rounding.RND),
])
def test_unknown_modes_refused(kw, value):
    """An unknown mode (or a mode of the other kind) raises ValueError listing the known ones."""
    with pytest.raises(ValueError, match="known modes"):
        FixedType(8, 3, **{kw: value})


def test_unsigned_wrap_sm_refused():
    """ap_ufixed cannot use AP_WRAP_SM (the header exits in report()); also through parse and replace."""
    with pytest.raises(ValueError, match="WRAP_SM"):
        FixedType(8, 3, signed=False, overflow="WRAP_SM")
    with pytest.raises(ValueError, match="WRAP_SM"):
        FixedType.parse("ap_ufixed<8,3,AP_TRN,AP_WRAP_SM>")
    with pytest.raises(ValueError, match="WRAP_SM"):
        FixedType(8, 3, overflow="WRAP_SM").replace(signed=False)


@pytest.mark.parametrize("overflow", ["SAT", "SAT_ZERO", "SAT_SYM"])
def test_sat_bits_refused_with_saturating_modes(overflow):
    """N only means something to AP_WRAP and AP_WRAP_SM."""
    with pytest.raises(ValueError, match="sat_bits"):
        FixedType(8, 3, overflow=overflow, sat_bits=1)
    FixedType(8, 3, overflow=overflow, sat_bits=0)  # the default is fine


@pytest.mark.parametrize("overflow", ["WRAP", "WRAP_SM"])
def test_sat_bits_range(overflow):
    """0 <= N <= W for the WRAP modes."""
    for n in range(0, 9):
        assert FixedType(8, 3, overflow=overflow, sat_bits=n).sat_bits == n
    for n in (-1, 9, 100):
        with pytest.raises(ValueError, match="sat_bits"):
            FixedType(8, 3, overflow=overflow, sat_bits=n)


def test_frozen():
    """A FixedType cannot change after construction (it is a hashable value)."""
    t = FixedType(8, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.width = 9


# -------------------------------------------------------------- mode spelling

@pytest.mark.parametrize("spelling", ["RND_CONV", "AP_RND_CONV", "rnd_conv", "ap_rnd_conv", " AP_RND_CONV ",
                                      Rounding.RND_CONV])
def test_rounding_spellings(spelling):
    """A mode given by name, by C++ enumerator, in lower case or as the enum member is the same mode."""
    t = FixedType(8, 3, rounding=spelling)
    assert t.rounding is Rounding.RND_CONV
    assert t == FixedType(8, 3, rounding=Rounding.RND_CONV)
    assert hash(t) == hash(FixedType(8, 3, rounding=Rounding.RND_CONV))


@pytest.mark.parametrize("spelling", ["SAT_SYM", "AP_SAT_SYM", "sat_sym", Overflow.SAT_SYM])
def test_overflow_spellings(spelling):
    """Same for overflow modes."""
    assert FixedType(8, 3, overflow=spelling).overflow is Overflow.SAT_SYM


def test_mode_enums_cover_the_header_and_print_as_names():
    """The seven ap_q_mode and five ap_o_mode enumerators; str is the name, .cpp the C++ enumerator."""
    assert [m.value for m in Rounding] == ROUNDINGS
    assert [m.value for m in Overflow] == OVERFLOWS
    assert str(Rounding.RND_CONV) == "RND_CONV" and Rounding.RND_CONV.cpp == "AP_RND_CONV"
    assert str(Overflow.WRAP_SM) == "WRAP_SM" and Overflow.WRAP_SM.cpp == "AP_WRAP_SM"


# --------------------------------------------------------------- C++ spelling

@pytest.mark.parametrize("t, text", [
    (FixedType(8, 3), "ap_fixed<8,3>"),
    (FixedType(8, 3, signed=False), "ap_ufixed<8,3>"),
    (FixedType(8, -2), "ap_fixed<8,-2>"),
    (FixedType(8, 3, rounding="RND"), "ap_fixed<8,3,AP_RND>"),  # O and N at their defaults: omitted
    (FixedType(8, 3, overflow="SAT"), "ap_fixed<8,3,AP_TRN,AP_SAT>"),  # Q must be spelled to reach O
    (FixedType(8, 3, rounding="RND_CONV", overflow="SAT_SYM"), "ap_fixed<8,3,AP_RND_CONV,AP_SAT_SYM>"),
    (FixedType(8, 3, sat_bits=2), "ap_fixed<8,3,AP_TRN,AP_WRAP,2>"),  # all three to reach N
    (FixedType(8, 3, overflow="WRAP_SM"), "ap_fixed<8,3,AP_TRN,AP_WRAP_SM>"),
    (FixedType(8, 3, rounding="RND", overflow="WRAP"), "ap_fixed<8,3,AP_RND>"),
    (FixedType(4, 9, signed=False, rounding="TRN_ZERO", overflow="WRAP", sat_bits=4),
     "ap_ufixed<4,9,AP_TRN_ZERO,AP_WRAP,4>"),
])
def test_str_is_the_cpp_spelling_with_trailing_defaults_omitted(t, text):
    """C++ lets trailing template arguments at their defaults (AP_TRN, AP_WRAP, 0) go unsaid, and only those."""
    assert str(t) == text


def _all_small_types():
    """A spread of valid types: both signs, every mode pair, N at 0, 1 and W."""
    for width, int_bits, signed in itertools.product((1, 4, 16), (-3, 0, 2, 20), (True, False)):
        for rounding, overflow in itertools.product(ROUNDINGS, OVERFLOWS):
            if overflow == "WRAP_SM" and not signed:
                continue
            for n in ({0, 1, width} if overflow.startswith("WRAP") else {0}):
                yield FixedType(width, int_bits, signed=signed, rounding=rounding, overflow=overflow, sat_bits=n)


def test_parse_round_trips_every_spelling():
    """parse(str(t)) == t for every type of the spread, and str(parse(s)) == s."""
    for t in _all_small_types():
        assert FixedType.parse(str(t)) == t
        assert str(FixedType.parse(str(t))) == str(t)


@pytest.mark.parametrize("text, t", [
    ("ap_fixed<16,6>", FixedType(16, 6)),
    ("  ap_fixed < 16 , 6 , AP_RND_CONV , AP_SAT_SYM >  ", FixedType(16, 6, rounding="RND_CONV", overflow="SAT_SYM")),
    ("ap_ufixed<8,0,AP_RND,AP_SAT>", FixedType(8, 0, signed=False, rounding="RND", overflow="SAT")),
    ("ap_ufixed< 8, -2 >", FixedType(8, -2, signed=False)),
    ("ap_fixed<8,+3>", FixedType(8, 3)),
    ("ap_fixed<6,2,AP_TRN,AP_WRAP,3>", FixedType(6, 2, sat_bits=3)),
    ("ap_fixed<6,2,AP_TRN,AP_WRAP_SM,1>", FixedType(6, 2, overflow="WRAP_SM", sat_bits=1)),
    ("ap_int<12>", FixedType(12, 12)),
    ("ap_uint<12>", FixedType(12, 12, signed=False)),
    ("ap_int < 1 >", FixedType(1, 1)),
    ("ap_uint<1>", FixedType(1, 1, signed=False)),
])
def test_parse(text, t):
    """The C++ spellings, with free spacing; ap_int<W> is ap_fixed<W,W> and ap_uint<W> ap_ufixed<W,W>."""
    assert FixedType.parse(text) == t
    assert FixedType.coerce(text) == t


@pytest.mark.parametrize("text", [
    "ap_fixed<8>", "ap_int<8,3>", "ap_uint<8,8>", "ap_fixed<8,3,AP_RND,AP_SAT,1,2>", "ap_fixed8,3>", "fixed<8,3>",
    "ap_fixed<8,3", "ap_fixed<a,3>", "ap_fixed<8,3,AP_ROUND>", "ap_fixed<0,0>", "ap_fixed<8,3,AP_TRN,AP_SAT,1>",
    "ap_fixed<8,3,AP_TRN,AP_WRAP,9>", "", "8,3",
])
def test_parse_refuses_malformed_and_invalid_spellings(text):
    """Malformed text and valid text naming an invalid type both raise ValueError."""
    with pytest.raises(ValueError):
        FixedType.parse(text)


def test_coerce():
    """coerce returns a FixedType as is, parses a string and refuses anything else."""
    t = FixedType(8, 3)
    assert FixedType.coerce(t) is t
    with pytest.raises(TypeError):
        FixedType.coerce(8)
    with pytest.raises(TypeError):
        FixedType.coerce((8, 3))


def test_repr_rebuilds_the_type():
    """eval(repr(t)) == t with only FixedType in scope, for every type of the spread."""
    for t in _all_small_types():
        assert eval(repr(t), {"FixedType": FixedType}) == t  # noqa: S307 - the point of the test


def test_repr_omits_defaults():
    """repr names only the fields that differ from the defaults."""
    assert repr(FixedType(8, 3)) == "FixedType(8, 3)"
    assert repr(FixedType(8, 3, signed=False, overflow="SAT")) == "FixedType(8, 3, signed=False, overflow='SAT')"


def test_hashable_and_equal_by_value():
    """Equal types hash equal and collapse in sets and dict keys; any field difference makes them differ."""
    a = FixedType(8, 3, rounding="AP_RND", overflow="sat")
    b = FixedType.parse("ap_fixed<8,3,AP_RND,AP_SAT>")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: 1}[b] == 1
    variants = [FixedType(8, 3), FixedType(9, 3), FixedType(8, 4), FixedType(8, 3, signed=False),
                FixedType(8, 3, rounding="RND"), FixedType(8, 3, overflow="SAT"), FixedType(8, 3, sat_bits=1),
                FixedType(8, 3, overflow="WRAP_SM")]
    assert len(set(variants)) == len(variants)
    all_types = list(_all_small_types())
    assert len(set(all_types)) == len(all_types)


def test_replace_validates():
    """replace returns a new, validated type."""
    t = FixedType(8, 3, overflow="SAT")
    assert t.replace(width=10) == FixedType(10, 3, overflow="SAT")
    with pytest.raises(ValueError):
        t.replace(sat_bits=2)
    with pytest.raises(ValueError):
        t.replace(width=0)


# ------------------------------------------------------------------ the range

@pytest.mark.parametrize("t, frac_bits, lsb, code_min, code_max, lo, hi", [
    (FixedType(8, 3), 5, 1 / 32, -128, 127, -4.0, 3.96875),
    (FixedType(8, 3, signed=False), 5, 1 / 32, 0, 255, 0.0, 7.96875),
    (FixedType(8, 0, signed=False), 8, 1 / 256, 0, 255, 0.0, 255 / 256),
    (FixedType(4, -2), 6, 1 / 64, -8, 7, -0.125, 7 / 64),  # point left of the word
    (FixedType(4, 8), -4, 16.0, -8, 7, -128.0, 112.0),  # point right of the word
    (FixedType(1, 1), 0, 1.0, -1, 0, -1.0, 0.0),
    (FixedType(1, 1, signed=False), 0, 1.0, 0, 1, 0.0, 1.0),
    (FixedType(1, -3), 4, 1 / 16, -1, 0, -1 / 16, 0.0),
    (FixedType(16, 16), 0, 1.0, -32768, 32767, -32768.0, 32767.0),
    (FixedType(53, 0), 53, 2.0 ** -53, -2 ** 52, 2 ** 52 - 1, -0.5, 0.5 - 2.0 ** -53),
    (FixedType(53, 53, signed=False), 0, 1.0, 0, 2 ** 53 - 1, 0.0, 2.0 ** 53 - 1),
])
def test_range_properties(t, frac_bits, lsb, code_min, code_max, lo, hi):
    """frac_bits, lsb, code_min, code_max, min and max on hand-computed examples (exact)."""
    assert t.frac_bits == frac_bits
    assert t.lsb == lsb
    assert (t.code_min, t.code_max) == (code_min, code_max)
    assert isinstance(t.code_min, int) and isinstance(t.code_max, int)
    assert (t.min, t.max) == (lo, hi)


def test_range_properties_agree_with_each_other():
    """min = code_min * lsb and max = code_max * lsb exactly, and the code range holds 2**W codes."""
    for t in _all_small_types():
        assert Fraction(t.min) == t.code_min * Fraction(2) ** -t.frac_bits
        assert Fraction(t.max) == t.code_max * Fraction(2) ** -t.frac_bits
        assert t.code_max - t.code_min + 1 == 2 ** t.width
        assert t.frac_bits == t.width - t.int_bits
        assert t.lsb == math.ldexp(1.0, -t.frac_bits)


# -------------------------------------------------------------- result types

def _rtype(a: FixedType, b: FixedType, op: str) -> tuple[int, int, bool]:
    """(W, I, signed) of ``a op b`` transcribed from ap_fixed_base::RType (plus_*, minus_*, mult_*)."""
    f1, f2 = a.width - a.int_bits, b.width - b.int_bits
    if op == "*":
        return a.width + b.width, a.int_bits + b.int_bits, a.signed or b.signed
    grown = max(a.int_bits + (b.signed and not a.signed), b.int_bits + (a.signed and not b.signed))
    width = grown + 1 + max(f1, f2)
    return width, grown + 1, True if op == "-" else (a.signed or b.signed)


def _operand_types():
    """Small operand types: both signs, binary points inside, left and right of the word, odd modes."""
    for width, int_bits, signed in itertools.product((1, 2, 3, 4), (-2, 0, 1, 3, 6), (True, False)):
        yield FixedType(width, int_bits, signed=signed)
    yield FixedType(3, 1, rounding="RND", overflow="SAT")
    yield FixedType(4, 2, signed=False, rounding="RND_CONV", overflow="WRAP", sat_bits=2)


@pytest.mark.parametrize("a, b, op, expected", [
    # plus: max(I1 + (S2 && !S1), I2 + (S1 && !S2)) + 1 integer bits, max(F1, F2) fraction bits
    (FixedType(8, 3), FixedType(8, 3), "+", FixedType(9, 4)),
    (FixedType(8, 3), FixedType(6, 2, signed=False), "+", FixedType(9, 4)),  # I: max(3, 2+1) + 1; F: max(5, 4)
    (FixedType(8, 8, signed=False), FixedType(4, -2, signed=False), "+", FixedType(15, 9, signed=False)),
    (FixedType(4, 2, signed=False), FixedType(4, 2), "+", FixedType(6, 4)),  # the unsigned side grows a bit
    # minus: as plus but always signed
    (FixedType(4, 4, signed=False), FixedType(4, 4, signed=False), "-", FixedType(5, 5)),
    (FixedType(4, 2), FixedType(3, 3, signed=False), "-", FixedType(7, 5)),  # I: max(2, 3+1) + 1; F: max(2, 0)
    # mult: widths add, integer bits add
    (FixedType(8, 3), FixedType(6, 2, signed=False), "*", FixedType(14, 5)),
    (FixedType(4, -2, signed=False), FixedType(3, 5, signed=False), "*", FixedType(7, 3, signed=False)),
    (FixedType(8, 3, rounding="RND", overflow="SAT"), FixedType(8, 3, overflow="WRAP_SM"), "*", FixedType(16, 6)),
])
def test_result_types_hand_worked(a, b, op, expected):
    """add/sub/mul types on hand-worked RType examples; results carry the default modes whatever the operands'."""
    method = {"+": a.add_type, "-": a.sub_type, "*": a.mul_type}[op]
    assert method(b) == expected


def test_result_types_follow_rtype_for_every_pair():
    """add_type, sub_type and mul_type equal the transcribed RType fields for every pair of operand types."""
    for a, b in itertools.product(list(_operand_types()), repeat=2):
        for op, method in (("+", a.add_type), ("-", a.sub_type), ("*", a.mul_type)):
            width, int_bits, signed = _rtype(a, b, op)
            assert method(b) == FixedType(width, int_bits, signed=signed), (str(a), op, str(b))


def _extreme_results(a: FixedType, b: FixedType, op: str, frac_bits: int) -> list[int]:
    """The results of ``a op b`` at the corners of both code ranges, as integer codes at ``frac_bits``.

    Sums, differences and products are monotone in each operand, so their
    extremes over all code pairs lie among these corners.  Plain ints: a code
    ``c`` at ``F`` fraction bits is ``c << (frac_bits - F)`` at ``frac_bits``.
    """
    results = []
    for ca, cb in itertools.product((a.code_min, a.code_max), (b.code_min, b.code_max)):
        if op == "*":
            results.append(ca * cb << (frac_bits - a.frac_bits - b.frac_bits))
        else:
            x, y = ca << (frac_bits - a.frac_bits), cb << (frac_bits - b.frac_bits)
            results.append(x + y if op == "+" else x - y)
    return results


def test_result_types_hold_every_result_exactly():
    """a+b, a-b and a*b sit on the result type's grid and their extremes lie within its code range."""
    for a, b in itertools.product(list(_operand_types()), repeat=2):
        for op, method in (("+", a.add_type), ("-", a.sub_type), ("*", a.mul_type)):
            r = method(b)
            needed = a.frac_bits + b.frac_bits if op == "*" else max(a.frac_bits, b.frac_bits)
            assert r.frac_bits >= needed, (str(a), op, str(b), str(r))  # on the grid: no bit dropped
            ends = _extreme_results(a, b, op, r.frac_bits)
            assert r.code_min <= min(ends) and max(ends) <= r.code_max, (str(a), op, str(b), str(r))


_SUM_BASES = [FixedType(1, 1), FixedType(1, 1, signed=False), FixedType(2, 0, signed=False), FixedType(8, 3),
              FixedType(8, 3, signed=False), FixedType(5, -4), FixedType(12, 20, signed=False),
              FixedType(6, 2, rounding="RND", overflow="SAT")]
_COUNTS = list(range(1, 70)) + [127, 128, 129, 1000, 1023, 1024, 1025, 10 ** 6]


@pytest.mark.parametrize("t", _SUM_BASES, ids=str)
def test_sum_type_holds_the_extreme_sums(t):
    """count * code_min and count * code_max fit the sum type at the same binary point (Python ints)."""
    for count in _COUNTS:
        r = t.sum_type(count)
        assert r.frac_bits == t.frac_bits and r.signed == t.signed, (str(t), count)
        assert r.code_min <= count * t.code_min and count * t.code_max <= r.code_max, (str(t), count, str(r))
        assert (r.rounding, r.overflow, r.sat_bits) == (Rounding.TRN, Overflow.WRAP, 0)


@pytest.mark.parametrize("t", _SUM_BASES, ids=str)
def test_sum_type_is_the_narrowest(t):
    """One bit fewer (same binary point) cannot hold both extreme sums, as the docstring promises."""
    for count in _COUNTS:
        r = t.sum_type(count)
        if r.width == 1:
            continue
        narrower = FixedType(r.width - 1, r.int_bits - 1, signed=r.signed)
        fits = narrower.code_min <= count * t.code_min and count * t.code_max <= narrower.code_max
        assert not fits, f"{t}.sum_type({count}) = {r}, but {narrower} holds every sum"


def test_sum_type_count_must_be_positive():
    """A sum of no terms has no type."""
    for count in (0, -1):
        with pytest.raises(ValueError):
            FixedType(8, 3).sum_type(count)


def test_accum_type_holds_the_extreme_dot_products():
    """count * (most negative and most positive product) fit accum_type, at the product's binary point."""
    operands = [FixedType(8, 3), FixedType(8, 3, signed=False), FixedType(4, -1), FixedType(1, 1),
                FixedType(1, 1, signed=False), FixedType(6, 9, signed=False)]
    for a, b in itertools.product(operands, repeat=2):
        ends = [x * y for x in (a.code_min, a.code_max) for y in (b.code_min, b.code_max)]
        for count in _COUNTS:
            r = a.accum_type(b, count)
            assert r == a.mul_type(b).sum_type(count)
            assert r.frac_bits == a.frac_bits + b.frac_bits
            assert r.code_min <= count * min(ends) and count * max(ends) <= r.code_max, (str(a), str(b), count)

"""qfx.ir.cast and qfx.ir.input_codes against the independent rational reference of the ap_fixed cast."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch

import qfx
from qfx import FixedType
from reference_fixed import OVERFLOW_MODES, ROUNDING_MODES, ap_fixed_code


def _random_type(rng: random.Random) -> FixedType:
    while True:
        signed = rng.random() < 0.7
        overflow = rng.choice(OVERFLOW_MODES)
        if overflow == "WRAP_SM" and not signed:
            continue
        width = rng.randint(1, 24)
        sat_bits = rng.randint(0, width) if overflow in ("WRAP", "WRAP_SM") and rng.random() < 0.4 else 0
        return FixedType(width, rng.randint(-6, 30), signed=signed, rounding=rng.choice(ROUNDING_MODES),
                         overflow=overflow, sat_bits=sat_bits)


def _expected(code: int, src_frac: int, t: FixedType) -> int:
    return ap_fixed_code(Fraction(code) / Fraction(2) ** src_frac, t.width, t.int_bits, t.signed,
                         t.rounding.value, t.overflow.value, t.sat_bits)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("wide", [False, True])
def test_cast_matches_reference(seed, wide):
    rng = random.Random(seed * 2 + wide)
    for _ in range(150):
        t = _random_type(rng)
        src_frac = rng.randint(0, 90) if wide else rng.randint(-10, 30)
        bits = rng.randint(40, 100) if wide else rng.randint(1, 30)
        codes = [rng.randint(-(1 << bits), 1 << bits) for _ in range(12)]
        # ties and their neighbours, where rounding modes differ
        drop = src_frac - t.frac_bits
        if drop > 0:
            codes += [k * (1 << drop) + (1 << (drop - 1)) + e for k in (-3, -1, 0, 2) for e in (-1, 0, 1)]
        array = np.array(codes, dtype=object if wide else np.int64)
        got = qfx.ir.cast(array, src_frac, t)
        assert [int(g) for g in got] == [_expected(c, src_frac, t) for c in codes], t


def test_cast_per_channel_binary_points():
    rng = random.Random(7)
    for _ in range(50):
        t = _random_type(rng)
        codes = np.array([[rng.randint(-5000, 5000) for _ in range(9)] for _ in range(4)], dtype=np.int64)
        fracs = np.array([rng.randint(-4, 20) for _ in range(4)], dtype=np.int64).reshape(4, 1)
        got = qfx.ir.cast(codes, fracs, t)
        for c in range(4):
            assert [int(g) for g in got[c]] == [_expected(int(v), int(fracs[c, 0]), t) for v in codes[c]], t


@pytest.mark.parametrize("spelling", ["ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_ufixed<6,-2,AP_RND_INF,AP_WRAP>",
                                      "ap_fixed<12,14,AP_TRN_ZERO,AP_WRAP_SM,2>", "ap_fixed<1,1,AP_RND,AP_SAT_SYM>"])
def test_input_codes_match_the_pytorch_cast(spelling):
    t = FixedType.parse(spelling)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64) * 2.0 ** s for s in (-8, 0, 4, 12)])
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e300, -1e300, 2.0 ** -1000], dtype=torch.float64)])
    assert np.array_equal(qfx.ir.input_codes(x.numpy(), t), qfx.to_codes(x, t).numpy())


def test_cast_keeps_int64_when_it_fits_and_refuses_floats():
    assert qfx.ir.cast(np.array([5, -7]), 1, FixedType(8, 4)).dtype == np.int64
    with pytest.raises(TypeError, match="integer codes"):
        qfx.ir.cast(np.array([0.5]), 0, FixedType(8, 4))

"""The native cast (``qfx.cast_native``) against the PyTorch ops it replaces and the plain-integer reference.

``tests/test_functional_vs_ap_fixed.py`` checks both paths against Xilinx's
headers and ``tests/test_functional.py`` the native one against
``reference_fixed``; here: large tensors (many blocks, several threads) with
every mode pair, the in-range mask, and the cases the kernel hands back
(NaN, infinities, values past its bound) or never takes.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import qfx
from qfx import FixedType, Overflow, Rounding, cast_native
from qfx.functional import cast_codes, cast_values

import reference_fixed as ref  # tests/ is on sys.path under pytest's default import mode


@pytest.fixture(autouse=True)
def _native_built() -> None:
    assert cast_native.library() is not None, "the native cast did not build (is g++ installed?)"


def _torch_path(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(cast_native, "library", lambda: None)
        return fn(*args, **kwargs)


def _data(t: FixedType, dtype: torch.dtype, n: int) -> torch.Tensor:
    """Normal values spilling past both ends, with exact ties and codes mixed in."""
    g = torch.Generator().manual_seed(5)
    span = (t.code_max - t.code_min + 1) * t.lsb
    x = torch.randn(n, generator=g, dtype=torch.float64) * span * 0.4 + (t.min + t.max) / 2
    ties = torch.randint(4 * t.code_min - 8, 4 * t.code_max + 8, (n // 4,), generator=g).double() * (t.lsb / 2)
    x[::4] = ties
    return x.to(dtype)


FORMATS = [(8, 3, True, 0), (8, 3, True, 1), (8, 3, True, 3), (6, 2, False, 0), (6, 2, False, 2),
           (16, 6, True, 0), (24, -4, True, 2)]


def _types():
    for (w, i, signed, n), r, o in itertools.product(FORMATS, Rounding, Overflow):
        if o is Overflow.WRAP_SM and not signed:
            continue
        yield FixedType(w, i, signed=signed, rounding=r, overflow=o,
                        sat_bits=n if o in (Overflow.WRAP, Overflow.WRAP_SM) else 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_equals_the_pytorch_ops_on_every_mode_pair(dtype, monkeypatch) -> None:
    """Codes, values and masks, signed and unsigned, N saturation bits; one format with 140k elements (several
    blocks, two threads), the others 4k."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for t in _types():
            x = _data(t, dtype, 140_000 if t.width == 16 else 4000)
            want, want_inside = _torch_path(monkeypatch, cast_codes, x, t, need_mask=True)
            codes, inside = cast_codes(x, t, need_mask=True)
            assert torch.equal(codes, want), str(t)
            assert inside is not None and torch.equal(inside, want_inside), str(t)
            values, _ = cast_values(x, t)
            assert torch.equal(values, want * t.lsb), str(t)
    finally:
        torch.set_num_threads(threads)


def test_mask_is_none_only_when_every_code_is_in_range() -> None:
    t = FixedType(8, 3, overflow="SAT")
    x = torch.linspace(-3.0, 3.0, 1001, dtype=torch.float64)
    assert cast_codes(x, t, need_mask=True)[1] is None
    x[500] = 100.0
    inside = cast_codes(x, t, need_mask=True)[1]
    assert inside is not None and int((~inside).sum()) == 1 and not bool(inside[500])


@pytest.mark.parametrize("overflow, sat_bits", [("WRAP", 0), ("WRAP", 2), ("WRAP_SM", 0), ("WRAP_SM", 3),
                                                ("SAT_SYM", 0)])
@pytest.mark.parametrize("rounding", ["RND_INF", "TRN", "RND_CONV"])
def test_values_past_the_kernels_bound_match_the_reference(overflow, sat_bits, rounding) -> None:
    """|x * 2**F| >= 2**62 makes the kernel hand the tensor back; the folded PyTorch path still gives the header's codes."""
    t = FixedType(8, 3, rounding=rounding, overflow=overflow, sat_bits=sat_bits)
    xs = [1e300, -1e300, 2.0 ** 70 + 2.0 ** 20, -(2.0 ** 59) - 0.5, 3.25, -7.9, 2.0 ** 57 + 0.75, 1e-300]
    assert cast_native.cast_codes(torch.tensor(xs, dtype=torch.float64), t, t.frac_bits, False) is None
    codes = qfx.to_codes(torch.tensor(xs, dtype=torch.float64), t).tolist()
    want = [ref.ap_fixed_code(x, 8, 3, True, rounding, overflow, sat_bits) for x in xs]
    assert codes == want


def test_nan_and_inf_refused_through_the_kernel() -> None:
    x = torch.zeros(200_000, dtype=torch.float32)
    x[7], x[150_000], x[199_999] = float("nan"), float("inf"), float("-inf")
    with pytest.raises(ValueError, match="1 NaN and 2 infinite"):
        qfx.quantize(x, FixedType(8, 3, rounding="RND", overflow="WRAP"))


def test_strided_input_and_a_one_element_binary_point() -> None:
    t = FixedType(10, 4, rounding="RND_ZERO", overflow="WRAP_SM")
    x = _data(t, torch.float64, 4000).reshape(40, 100)
    want = torch.tensor([[ref.ap_fixed_code(v, 10, 4, True, "RND_ZERO", "WRAP_SM") for v in row]
                         for row in x.t().tolist()], dtype=torch.float64)
    assert torch.equal(cast_codes(x.t(), t)[0], want)
    assert torch.equal(cast_codes(x.t(), t, torch.tensor(6))[0], want)


def test_binary_points_the_kernel_leaves_to_pytorch() -> None:
    """TRN with F < 0 (a tiny negative x scales to -0.0 but floors to -1) and float64 with F >= 1022."""
    t = FixedType(4, 6, rounding="TRN", overflow="SAT")
    x = torch.tensor([-1e-300, 1e-300, -5.0], dtype=torch.float64)
    assert cast_native.cast_codes(x, t, t.frac_bits, False) is None
    assert qfx.to_codes(x, t).tolist() == [ref.ap_fixed_code(v, 4, 6, True, "TRN", "SAT") for v in x.tolist()]
    fine = FixedType(8, -1014)
    assert cast_native.cast_codes(x, fine, fine.frac_bits, False) is None

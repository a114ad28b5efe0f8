"""Speed of ``qfx.quantize`` for every rounding x overflow pair, beside NumPy and APyTypes.

For each of the 35 signed mode pairs of one format (``ap_fixed<16,6,Q,O>`` by
default) the script times, in this one process and interleaved (for each
repeat: qfx, then NumPy, then APyTypes, for that pair), three casts of the
same float64 data:

* **qfx**: ``qfx.quantize(x, t)``, float64 tensor in, float64 tensor out (the
  native cast of ``qfx.cast_native`` where it builds; ``QFX_CAST_KERNELS=0``
  times the PyTorch ops instead).
* **numpy**: a ``rint``/``clip`` pass with one allocation (multiply into a
  fresh output, ``rint`` in place, ``clip`` in place, scale back in place).
  This is the work of RND_CONV/SAT and is the speed reference of every row,
  whatever that row's modes.
* **apytypes**: the same float64 -> fixed -> float64 round trip through
  APyTypes: ``APyFixedArray.from_float`` into a 64-bit format as fine as the
  data need (see :func:`apy_source_format`), ``.cast`` to the target
  format with the matching ``QuantizationMode``/``OverflowMode``, then
  ``.to_numpy()``.  Pairs APyTypes cannot express (SAT_ZERO, SAT_SYM, WRAP_SM)
  show ``n/a``.

Every library runs on one thread (``OMP_NUM_THREADS=1``, ``OMP_WAIT_POLICY=PASSIVE``,
``torch.set_num_threads(1)``, ``APYTYPES_THREAD_COUNT=1``).  Times are medians
over ``--repeats`` runs.  Before timing, a small sample (part of the data,
exact ties and their neighbours inside and beyond the range, and the doubles
beside ``2**j +- 0.5`` LSB where ``v +- 0.5`` rounds) is cast by qfx and by
APyTypes (from a source format that holds it exactly) and the disagreements
per pair are printed; they are reported, never fatal.  The
table goes to stdout, progress to stderr.  Nothing here asserts on time.

Run::

    python benchmarks/bench_quantize.py            # 10 million values, 5 repeats
    python benchmarks/bench_quantize.py --n 100000 --repeats 3
"""

from __future__ import annotations

import os

# Pin every library to one thread before numpy, torch or apytypes load.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["APYTYPES_THREAD_COUNT"] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import apytypes as apy  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import qfx  # noqa: E402
from qfx import FixedType, Overflow, Rounding  # noqa: E402

# ap_fixed modes with an APyTypes equivalent of the same name and meaning
# (APyTypes' docstrings: TRN toward -inf, TRN_ZERO toward zero, RND ties to
# +inf, RND_ZERO ties to zero, RND_MIN_INF ties to -inf, RND_INF ties away
# from zero, RND_CONV ties to even; WRAP two's complement, SAT clamp).
# APyTypes has no SAT_ZERO, SAT_SYM or WRAP_SM (its NUMERIC_STD keeps the
# sign bit and wraps the rest, which is not ap_fixed's WRAP_SM).
APY_ROUNDING: dict[Rounding, apy.QuantizationMode] = {r: getattr(apy.QuantizationMode, r.value) for r in Rounding}
APY_OVERFLOW: dict[Overflow, apy.OverflowMode] = {
    Overflow.WRAP: apy.OverflowMode.WRAP,
    Overflow.SAT: apy.OverflowMode.SAT,
}

# Word length of the APyTypes source format: one limb.
APY_SOURCE_BITS = 64


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000, help="number of float64 values")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per library and mode pair (median reported)")
    p.add_argument("--width", type=int, default=16, help="word length W of ap_fixed<W,I>")
    p.add_argument("--int-bits", type=int, default=6, help="integer bits I of ap_fixed<W,I>")
    p.add_argument("--sigma", type=float, default=12.0,
                   help="standard deviation of the normal data (12 puts ~0.8%% outside ap_fixed<16,6>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data")
    p.add_argument("--check-n", type=int, default=100_000, help="data values in the qfx/APyTypes agreement check")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or args.check_n < 0:
        p.error("--n and --repeats must be at least 1, --check-n at least 0")
    return args


def make_data(n: int, sigma: float, seed: int) -> np.ndarray:
    """``n`` seeded normal float64 values with standard deviation ``sigma``."""
    return np.random.default_rng(seed).normal(0.0, sigma, n)


def make_check_sample(x: np.ndarray, t: FixedType, check_n: int, seed: int) -> np.ndarray:
    """Part of the data, exact ties (odd multiples of half an LSB) beside values just off them, and edge cases.

    The edge cases are the doubles next to ``k * LSB`` for ``k`` in
    ``{0.5, 2**j - 0.5, 2**j + 0.5}``, both signs: where ``v +- 0.5`` leaves
    ``v``'s binade and floating-point addition rounds.
    """
    rng = np.random.default_rng(seed + 1)
    span = 1 << (t.width + 1)  # codes up to four times the range: exercises the wrap of both signs
    halves = rng.integers(-span, span, 20_000).astype(np.float64)  # in units of half an LSB
    ties = halves * (t.lsb / 2)
    near = ties + rng.choice([-1.0, 1.0], ties.size) * np.spacing(ties)  # one ulp beside each tie
    ks = np.array([0.5] + [2.0 ** j + d for j in range(t.width + 1) for d in (-0.5, 0.5)])
    ks = np.concatenate([ks, np.nextafter(ks, np.inf), np.nextafter(ks, -np.inf)])
    edges = np.concatenate([ks, -ks]) * t.lsb  # exact: a power-of-two scale
    return np.concatenate([x[:check_n], ties, near, edges])


def numpy_reference(x: np.ndarray, t: FixedType) -> np.ndarray:
    """RND_CONV/SAT the NumPy way: multiply into one new array, then rint, clip and scale back in place."""
    out = np.empty_like(x)
    np.multiply(x, 1.0 / t.lsb, out=out)
    np.rint(out, out=out)
    np.clip(out, t.code_min, t.code_max, out=out)
    np.multiply(out, t.lsb, out=out)
    return out


def apy_supports(t: FixedType) -> bool:
    """Whether APyTypes has both of ``t``'s modes."""
    return t.rounding in APY_ROUNDING and t.overflow in APY_OVERFLOW and t.sat_bits == 0


def apy_source_format(x: np.ndarray, t: FixedType) -> tuple[int, int]:
    """``(int_bits, frac_bits)`` of the APyTypes format that ``from_float`` fills before the cast.

    ``from_float`` rounds (RND_INF) and wraps, so the source format must not
    change what the cast then does.  Integer bits: enough for the largest
    ``|x|`` with its sign.  Fractional bits: the rest of one 64-bit limb, so
    APyTypes stays on its single-limb path (and clear of a bug of APyTypes
    0.5.1: a WRAP cast from a format wider than 64 bits returns unwrapped
    values).  Every double with ``|x| >= 2**(int_bits - 12)`` is then held
    exactly; smaller ones are rounded to ``2**-frac_bits``, which changes the
    cast only for a value within ``2**-(frac_bits+1)`` of (but not on) a
    multiple of half the target LSB: vanishingly unlikely for normal data
    (the script counts such differences on the data sample).
    """
    max_abs = float(np.max(np.abs(x))) if x.size else 0.0
    int_bits = max(t.int_bits, math.frexp(max_abs)[1] + 1)
    return int_bits, APY_SOURCE_BITS - int_bits


def apy_roundtrip(x: np.ndarray, t: FixedType, source: tuple[int, int]) -> np.ndarray:
    """float64 -> APyFixedArray (``source`` format) -> cast to ``t`` -> float64."""
    a = apy.APyFixedArray.from_float(x, int_bits=source[0], frac_bits=source[1])
    q = a.cast(int_bits=t.int_bits, frac_bits=t.frac_bits,
               quantization=APY_ROUNDING[t.rounding], overflow=APY_OVERFLOW[t.overflow])
    return q.to_numpy()


def apy_exact_codes(x: np.ndarray, t: FixedType) -> np.ndarray:
    """``t(x)`` through APyTypes from a source format that holds every element of ``x`` exactly (for the check).

    A double ``m * 2**e`` (``0.5 <= |m| < 1``) needs ``53 - e`` fractional
    bits.  The values are read back from ``to_bits`` (two's complement words
    turned into signed codes) since ``to_numpy`` of APyTypes 0.5.1 is wrong
    after a WRAP cast from a format wider than 64 bits.
    """
    nonzero = x[x != 0]
    frac_bits = max([t.frac_bits] + ([int(np.max(53 - np.frexp(nonzero)[1]))] if nonzero.size else []))
    int_bits = apy_source_format(x, t)[0]
    a = apy.APyFixedArray.from_float(x, int_bits=int_bits, frac_bits=frac_bits)
    q = a.cast(int_bits=t.int_bits, frac_bits=t.frac_bits,
               quantization=APY_ROUNDING[t.rounding], overflow=APY_OVERFLOW[t.overflow])
    bits = np.asarray(q.to_bits(), dtype=np.int64).reshape(-1)
    codes = np.where(bits >= (1 << (t.width - 1)), bits - (1 << t.width), bits)
    return codes.astype(np.float64) * t.lsb


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn`` (its result is dropped before returning)."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def all_types(width: int, int_bits: int) -> list[FixedType]:
    """The signed ``ap_fixed<width,int_bits,Q,O>`` for every rounding Q and overflow O."""
    return [FixedType(width, int_bits, rounding=r, overflow=o) for r in Rounding for o in Overflow]


def check_agreement(sample: np.ndarray, types: list[FixedType]) -> dict[FixedType, Optional[int]]:
    """Elements where qfx and APyTypes disagree, per type (``None`` where APyTypes has no such modes)."""
    xt = torch.from_numpy(sample)
    counts: dict[FixedType, Optional[int]] = {}
    for t in types:
        if not apy_supports(t):
            counts[t] = None
            continue
        ours = qfx.quantize(xt, t).numpy()
        theirs = apy_exact_codes(sample, t)
        counts[t] = int(np.count_nonzero(ours != theirs))
    return counts


def fmt_ms(value: Optional[float]) -> str:
    """Milliseconds with one decimal, or ``n/a``."""
    return "n/a" if value is None else f"{value:.1f}"


def fmt_ratio(value: Optional[float]) -> str:
    """A ratio with two decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Optional[list[str]] = None) -> None:
    """Check agreement, time every pair, print the table and the summary."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    apy.reset_thread_pool(1)
    types = all_types(args.width, args.int_bits)
    base = types[0].replace(rounding=Rounding.RND_CONV, overflow=Overflow.SAT)

    log(f"making {args.n:,} values (normal, sigma={args.sigma}, seed={args.seed})")
    x = make_data(args.n, args.sigma, args.seed)
    xt = torch.from_numpy(x)  # shares memory with x
    outside = int(np.count_nonzero((x < base.min) | (x > base.max)))
    source = apy_source_format(x, base)

    # ---------------------------------------------------------- agreement
    log("checking qfx against APyTypes on a small sample")
    sample = make_check_sample(x, base, args.check_n, args.seed)
    disagreements = check_agreement(sample, types)
    data = x[:args.check_n]
    timed_path_diff = int(np.count_nonzero(apy_roundtrip(data, base, source) != apy_exact_codes(data, base)))
    ref_diff = int(np.count_nonzero(qfx.quantize(torch.from_numpy(sample), base).numpy()
                                    != numpy_reference(sample, base)))

    # ------------------------------------------------------------- timing
    log("warming up")
    seconds(lambda: qfx.quantize(xt, base))
    seconds(lambda: numpy_reference(x, base))
    seconds(lambda: apy_roundtrip(x, base, source))

    load_before = os.getloadavg()[0]
    rows = []
    for i, t in enumerate(types, 1):
        times: dict[str, list[float]] = {"qfx": [], "numpy": [], "apytypes": []}
        for r in range(args.repeats):
            times["qfx"].append(seconds(lambda: qfx.quantize(xt, t)))
            times["numpy"].append(seconds(lambda: numpy_reference(x, base)))
            if apy_supports(t):
                times["apytypes"].append(seconds(lambda: apy_roundtrip(x, t, source)))
        med = {k: (statistics.median(v) * 1e3 if v else None) for k, v in times.items()}
        rows.append((t, med["qfx"], med["numpy"], med["apytypes"]))
        log(f"[{i:2d}/{len(types)}] {t.rounding.value}/{t.overflow.value}: qfx {fmt_ms(med['qfx'])} ms, "
            f"numpy {fmt_ms(med['numpy'])} ms, apytypes {fmt_ms(med['apytypes'])} ms")

    load_after = os.getloadavg()[0]

    # ------------------------------------------------------------- report
    print(f"qfx.quantize vs NumPy vs APyTypes: {args.n:,} float64 values, normal(0, {args.sigma}) seed {args.seed}, "
          f"{outside:,} ({100 * outside / args.n:.2f}%) outside {base.min}..{base.max}")
    print(f"format ap_fixed<{args.width},{args.int_bits},Q,O> (signed); medians of {args.repeats} interleaved runs; "
          f"1 thread (torch {torch.get_num_threads()}, apytypes {apy.n_threads()}); "
          f"torch {torch.__version__}, numpy {np.__version__}, apytypes {apy.__version__}")
    print(f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.2f} before timing, "
          f"{load_after:.2f} after (other processes' load makes every time noisier); "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')} "
          "(torch's huge-page allocation; NumPy madvises huge pages on its own)")
    native = qfx.cast_native.library() is not None
    print(f"qfx      : qfx.quantize(x, t), float64 tensor -> float64 tensor "
          f"({'native cast, one pass' if native else 'PyTorch ops: the native cast is off or did not build'})")
    print("numpy    : out=empty_like(x); multiply(x, 2**F, out); rint(out, out); clip(out, out); "
          "multiply(out, 2**-F, out)  [RND_CONV/SAT work, the reference of every row]")
    print(f"apytypes : APyFixedArray.from_float(x, int_bits={source[0]}, frac_bits={source[1]}) "
          f"+ .cast(int_bits={args.int_bits}, frac_bits={base.frac_bits}, Q, O) + .to_numpy()  "
          "[float64 -> fixed -> float64; n/a: no such mode]")
    print()
    header = f"{'rounding/overflow':<22}{'qfx ms':>9}{'numpy ms':>10}{'apytypes ms':>13}" \
             f"{'qfx/numpy':>11}{'apy/qfx':>9}{'disagree':>10}"
    print(header)
    print("-" * len(header))
    for t, q_ms, n_ms, a_ms in rows:
        d = disagreements[t]
        print(f"{t.rounding.value + '/' + t.overflow.value:<22}{fmt_ms(q_ms):>9}{fmt_ms(n_ms):>10}{fmt_ms(a_ms):>13}"
              f"{fmt_ratio(q_ms / n_ms):>11}{fmt_ratio(None if a_ms is None else a_ms / q_ms):>9}"
              f"{'n/a' if d is None else str(d):>10}")
    print()

    # ------------------------------------------------------------ summary
    by_type = {t: (q_ms, n_ms, a_ms) for t, q_ms, n_ms, a_ms in rows}
    base_ratio = by_type[base][0] / by_type[base][1]
    over = [(t, q / n) for t, (q, n, _) in by_type.items() if q / n > 3.0]
    apy_ratios = [a / q for q, _, a in by_type.values() if a is not None]
    total_dis = sum(d for d in disagreements.values() if d is not None)
    checked = sum(d is not None for d in disagreements.values())
    print(f"agreement: {total_dis} disagreements in {checked} pairs x {sample.size:,} values "
          f"({min(args.check_n, args.n):,} data, {sample.size - min(args.check_n, args.n):,} ties, near-ties "
          "and binade edges; APyTypes from an exact source format); "
          f"qfx RND_CONV/SAT vs the NumPy reference: {ref_diff} differ; "
          f"timed APyTypes path (64-bit source) vs exact source on the data: {timed_path_diff} differ")
    worst = max(by_type.items(), key=lambda kv: kv[1][0] / kv[1][1])
    print(f"summary: RND_CONV/SAT {base_ratio:.2f}x NumPy (target <= 1.0x: {'met' if base_ratio <= 1.0 else 'MISSED'}); "
          f"pairs over 3x NumPy: {len(over)}/{len(rows)} (target 0: {'met' if not over else 'MISSED'}; worst "
          f"{worst[0].rounding.value}/{worst[0].overflow.value} {worst[1][0] / worst[1][1]:.2f}x); "
          + (f"APyTypes/qfx {min(apy_ratios):.1f}x..{max(apy_ratios):.1f}x over {len(apy_ratios)} pairs "
             f"(target several times, >= 3x: {'met' if min(apy_ratios) >= 3.0 else 'MISSED'})"
             if apy_ratios else "APyTypes: no comparable pairs"))
    if over:
        print("over 3x: " + ", ".join(f"{t.rounding.value}/{t.overflow.value} {r:.2f}x" for t, r in over))


if __name__ == "__main__":
    main()

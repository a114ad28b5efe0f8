"""Ground truth for the ``ap_fixed`` cast and result types: Xilinx's own headers, compiled.

This is a test helper, not a test module.  It is deliberately independent of
:mod:`qfx`: formats are plain tuples of template arguments (:class:`RawFormat`)
and the C++ spelling is built here, so a bug in ``qfx.format`` cannot hide in
the oracle too.

How it works
------------
:class:`Oracle` takes the formats to cast to (and pairs of formats whose
``+``, ``-``, ``*`` result types are wanted), writes C++17 translation units
that instantiate ``ap_fixed<W,I,Q,O,N>`` / ``ap_ufixed<…>`` for each, compiles
them with ``g++ -std=c++17 -O1`` (in parallel, a few units, since every
format instantiates the big ``ap_fixed_base(double)`` constructor and costs
about 0.15 s of compile time) and caches the executables by a content hash of
source, compiler and headers.  The sources depend on the formats only, never
on the inputs: inputs travel as raw IEEE doubles in a binary file, so the same
executables serve any inputs (property tests included) without recompiling,
and no decimal round trip can change a value.

Headers: ``$XILINX_HLS/include`` when set and holding ``ap_fixed.h``, else the
copy in the installed ``hls4ml`` wheel (``templates/vivado/ap_types``), used in
place.  Cache: ``$QFX_CACHE_DIR`` or ``~/.cache/qfx/tests``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

__all__ = [
    "ROUNDINGS", "OVERFLOWS", "RawFormat", "CastCase", "Oracle", "OracleUnavailable",
    "header_dir", "cache_dir",
]

#: ``ap_q_mode`` names, without the ``AP_`` prefix.
ROUNDINGS = ("RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV", "TRN", "TRN_ZERO")
#: ``ap_o_mode`` names, without the ``AP_`` prefix.
OVERFLOWS = ("SAT", "SAT_ZERO", "SAT_SYM", "WRAP", "WRAP_SM")

CXX = "g++"
CXX_FLAGS = ("-std=c++17", "-O1")

#: Most formats per translation unit: small enough that the units of a few
#: hundred formats spread over the cores, large enough to amortise the ~1.5 s
#: each unit spends parsing the headers.
FORMATS_PER_UNIT = 48

# Each record of the input file: format index in its unit, 1 to cast through
# float, count, then `count` doubles (native byte order on both sides).
_RECORD = struct.Struct("=IIQ")


class OracleUnavailable(RuntimeError):
    """The headers or the compiler are missing, or the oracle program failed."""


@dataclasses.dataclass(frozen=True)
class RawFormat:
    """The template arguments of ``ap_fixed<W,I,Q,O,N>`` (``ap_ufixed`` when unsigned)."""

    width: int
    int_bits: int
    signed: bool
    rounding: str = "TRN"
    overflow: str = "WRAP"
    sat_bits: int = 0

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; expected one of {ROUNDINGS}")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"unknown overflow {self.overflow!r}; expected one of {OVERFLOWS}")

    def cpp(self) -> str:
        """The full C++ spelling, every template argument written out."""
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        return (f"{kind}<{self.width},{self.int_bits},AP_{self.rounding},"
                f"AP_{self.overflow},{self.sat_bits}>")

    @property
    def frac_bits(self) -> int:
        """``W - I``: the LSB weighs ``2**-frac_bits``."""
        return self.width - self.int_bits

    def to_signed(self, bits: int) -> int:
        """The integer code stored in the ``W`` raw bits ``bits`` (two's complement when signed)."""
        if self.signed and bits >> (self.width - 1):
            return bits - (1 << self.width)
        return bits


@dataclasses.dataclass(frozen=True)
class CastCase:
    """Inputs to cast to one format; ``as_float32`` casts ``float(x)`` (each ``x`` should be a float32 value)."""

    fmt: RawFormat
    inputs: Sequence[float]
    as_float32: bool = False


# --------------------------------------------------------------- locations
def header_dir() -> Path:
    """Directory holding Xilinx's ``ap_fixed.h``: ``$XILINX_HLS/include``, else the hls4ml wheel's copy."""
    xilinx = os.environ.get("XILINX_HLS")
    if xilinx and (Path(xilinx) / "include" / "ap_fixed.h").is_file():
        return Path(xilinx) / "include"
    # find_spec locates the package without importing it (hls4ml's import is slow and pulls in ML stacks).
    spec = importlib.util.find_spec("hls4ml")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "templates" / "vivado" / "ap_types"
        if (candidate / "ap_fixed.h").is_file():
            return candidate
    where = f"$XILINX_HLS/include ({xilinx}) has no ap_fixed.h; " if xilinx else "$XILINX_HLS is not set; "
    raise OracleUnavailable(
        "cannot find Xilinx's ap_fixed.h headers: " + where +
        "install the Apache-2.0 copy shipped with hls4ml: pip install hls4ml  (or: pip install -e '.[test]')")


def cache_dir() -> Path:
    """Where compiled oracle programs are kept: ``$QFX_CACHE_DIR`` or ``~/.cache/qfx/tests``."""
    configured = os.environ.get("QFX_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "qfx" / "tests"


def _toolchain_fingerprint(headers: Path) -> bytes:
    """Compiler identity, flags and header contents: a change to any of them must invalidate the cache."""
    try:
        version = subprocess.run([CXX, "--version"], capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise OracleUnavailable(f"the C++ compiler {CXX!r} is not usable ({exc}); install g++ (C++17)") from exc
    digest = hashlib.sha256(version.encode() + " ".join(CXX_FLAGS).encode())
    for path in sorted(p for p in headers.rglob("*.h") if p.is_file()):
        digest.update(path.relative_to(headers).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.digest()


# ------------------------------------------------------------ C++ sources
_PRELUDE = r"""// Generated by tests/ap_fixed_oracle.py: ground truth for qfx's differential tests.
#include <ap_fixed.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

// Template arguments of a result type, deduced from its ap_fixed_base base class.
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
constexpr bool fx_signed(const ap_fixed_base<W, I, S, Q, O, N>*) { return S; }
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
constexpr int fx_sat_bits(const ap_fixed_base<W, I, S, Q, O, N>*) { return N; }

static const char* q_name(ap_q_mode q) {
  switch (q) {
    case AP_RND: return "RND";
    case AP_RND_ZERO: return "RND_ZERO";
    case AP_RND_MIN_INF: return "RND_MIN_INF";
    case AP_RND_INF: return "RND_INF";
    case AP_RND_CONV: return "RND_CONV";
    case AP_TRN: return "TRN";
    case AP_TRN_ZERO: return "TRN_ZERO";
  }
  return "?";
}

static const char* o_name(ap_o_mode o) {
  switch (o) {
    case AP_SAT: return "SAT";
    case AP_SAT_ZERO: return "SAT_ZERO";
    case AP_SAT_SYM: return "SAT_SYM";
    case AP_WRAP: return "WRAP";
    case AP_WRAP_SM: return "WRAP_SM";
  }
  return "?";
}

// One line per result type: op width iwidth signed qmode omode N.
template <class R>
static void print_type(const char* op) {
  using T = std::decay_t<R>;
  const T* p = nullptr;
  std::printf("%s %d %d %d %s %s %d\n", op, T::width, T::iwidth, fx_signed(p) ? 1 : 0,
              q_name(T::qmode), o_name(T::omode), fx_sat_bits(p));
}

template <class A, class B>
static void print_ops() {
  print_type<decltype(std::declval<const A&>() + std::declval<const B&>())>("+");
  print_type<decltype(std::declval<const A&>() - std::declval<const B&>())>("-");
  print_type<decltype(std::declval<const A&>() * std::declval<const B&>())>("*");
}

// The W stored bits of y as an unsigned number.
template <class T>
static void print_bits(const T& y) {
  ap_uint<T::width> bits = y.range(T::width - 1, 0);
  std::printf("%llu\n", static_cast<unsigned long long>(bits.to_uint64()));
}

// `T y = x;` exactly as user code writes it (through float when asked).
template <class T>
static void cast_block(const std::vector<double>& xs, bool as_float) {
  for (double x : xs) {
    if (as_float) {
      float f = static_cast<float>(x);
      T y = f;
      print_bits(y);
    } else {
      T y = x;
      print_bits(y);
    }
  }
}
"""

_MAIN = r"""
int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "types") == 0) {
    print_result_types();
    return 0;
  }
  if (argc != 3 || std::strcmp(argv[1], "cast") != 0) {
    std::fprintf(stderr, "usage: %s types | cast INPUT.bin\n", argv[0]);
    return 2;
  }
  std::FILE* in = std::fopen(argv[2], "rb");
  if (!in) { std::perror(argv[2]); return 2; }
  std::uint32_t header[4];  // index, as_float, count (uint64 as two words)
  while (std::fread(header, sizeof header, 1, in) == 1) {
    std::uint64_t count;
    std::memcpy(&count, &header[2], sizeof count);
    std::vector<double> xs(count);
    if (count && std::fread(xs.data(), sizeof(double), count, in) != count) return 3;
    if (!cast_any(header[0], xs, header[1] != 0)) return 4;
  }
  return 0;
}
"""


def _unit_source(formats: Sequence[RawFormat], n_cast: int, pairs: Sequence[tuple[int, int]]) -> str:
    """One translation unit: type aliases, a dispatcher from index to cast, and the pairs' result types.

    Only the first ``n_cast`` formats get a cast: the others are declared for
    the pairs alone, and instantiating their (costly) double constructor
    would only slow the build.
    """
    lines = [_PRELUDE]
    lines += [f"using F{k} = {fmt.cpp()};" for k, fmt in enumerate(formats)]
    lines.append("\nstatic bool cast_any(std::uint32_t index, const std::vector<double>& xs, bool as_float) {")
    lines.append("  switch (index) {")
    lines += [f"    case {k}: cast_block<F{k}>(xs, as_float); return true;" for k in range(n_cast)]
    lines.append("  }\n  return false;\n}\n")
    lines.append("static void print_result_types() {")
    lines += [f"  print_ops<F{a}, F{b}>();" for a, b in pairs]
    lines.append("}")
    lines.append(_MAIN)
    return "\n".join(lines)


# ------------------------------------------------------------------ oracle
@dataclasses.dataclass
class _Unit:
    """One compiled program: its formats (by local index) and the pairs it reports on."""

    formats: list[RawFormat]  # the first n_cast are cast here; the rest only appear in pairs
    n_cast: int
    pairs: list[tuple[int, int]]  # local format indices
    pair_ids: list[int]  # positions of those pairs in Oracle.pairs
    binary: Optional[Path] = None


class Oracle:
    """Compiled ``ap_fixed`` ground truth for a fixed set of formats and format pairs.

    >>> fmt = RawFormat(8, 3, True, "RND", "SAT")
    >>> oracle = Oracle([fmt])                                  # doctest: +SKIP
    >>> oracle.cast([CastCase(fmt, [0.3, 1e30])])              # doctest: +SKIP
    [[10, 127]]
    """

    def __init__(self, formats: Iterable[RawFormat], pairs: Iterable[tuple[RawFormat, RawFormat]] = (),
                 formats_per_unit: int = FORMATS_PER_UNIT) -> None:
        self.pairs = list(pairs)
        castable = list(dict.fromkeys(formats))
        self.headers = header_dir()
        self._units: list[_Unit] = []
        self._where: dict[RawFormat, tuple[int, int]] = {}  # castable format -> (unit, local index)
        # Equal shares: a last unit holding a handful of formats would cost a whole header parse.
        n_units = -(-len(castable) // formats_per_unit)
        share = -(-len(castable) // n_units) if n_units else 1
        for start in range(0, len(castable), share):
            chunk = castable[start:start + share]
            self._where.update({fmt: (len(self._units), k) for k, fmt in enumerate(chunk)})
            self._units.append(_Unit(list(chunk), len(chunk), [], []))
        if self.pairs and not self._units:
            self._units.append(_Unit([], 0, [], []))
        for pair_id, (a, b) in enumerate(self.pairs):
            # A pair goes where one of its formats is already declared, so most pairs add no new class.
            unit = self._units[self._where.get(a, self._where.get(b, (len(self._units) - 1, 0)))[0]]
            unit.pairs.append((self._local_index(unit, a), self._local_index(unit, b)))
            unit.pair_ids.append(pair_id)
        self._build()

    @staticmethod
    def _local_index(unit: _Unit, fmt: RawFormat) -> int:
        """Index of ``fmt`` in ``unit``, declaring it there (for the pairs only) if it lives elsewhere."""
        if fmt not in unit.formats:
            unit.formats.append(fmt)
        return unit.formats.index(fmt)

    # -------------------------------------------------------- building
    def _build(self) -> None:
        """Compile every unit not already cached, in parallel."""
        fingerprint = _toolchain_fingerprint(self.headers)
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        todo = []
        for unit in self._units:
            source = _unit_source(unit.formats, unit.n_cast, unit.pairs)
            key = hashlib.sha256(fingerprint + source.encode()).hexdigest()[:32]
            unit.binary = directory / f"ap_fixed_oracle-{key}"
            if not unit.binary.is_file():
                todo.append((source, unit.binary))
        if not todo:
            return
        workers = min(len(todo), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(self._compile, source, binary) for source, binary in todo]:
                future.result()

    def _compile(self, source: str, binary: Path) -> None:
        """Compile one unit next to its final path, then rename: concurrent test runs never see half a file."""
        if shutil.which(CXX) is None:
            raise OracleUnavailable(f"the C++ compiler {CXX!r} is not on PATH; install g++ (C++17)")
        with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".build-") as tmp:
            src = Path(tmp) / "oracle.cpp"
            src.write_text(source)
            out = Path(tmp) / "oracle"
            cmd = [CXX, *CXX_FLAGS, f"-I{self.headers}", str(src), "-o", str(out)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise OracleUnavailable(f"compiling the ap_fixed oracle failed ({' '.join(cmd)}):\n"
                                        f"{result.stderr[-4000:]}")
            os.replace(out, binary)

    # -------------------------------------------------------- querying
    def cast(self, cases: Sequence[CastCase]) -> list[list[int]]:
        """Integer codes the headers store for every input of every case (two's complement read as signed)."""
        per_unit: dict[int, list[int]] = {}
        for case_id, case in enumerate(cases):
            if case.fmt not in self._where:
                raise KeyError(f"{case.fmt.cpp()} is not among this oracle's compiled formats")
            per_unit.setdefault(self._where[case.fmt][0], []).append(case_id)
        codes: list[list[int]] = [[] for _ in cases]
        with tempfile.TemporaryDirectory(prefix="qfx-oracle-") as tmp:
            for unit_id, case_ids in per_unit.items():
                path = Path(tmp) / f"unit{unit_id}.bin"
                path.write_bytes(b"".join(self._record(cases[i]) for i in case_ids))
                lines = self._run(self._units[unit_id], "cast", str(path)).split()
                expected = sum(len(cases[i].inputs) for i in case_ids)
                if len(lines) != expected:
                    raise OracleUnavailable(f"oracle printed {len(lines)} codes for {expected} inputs")
                pos = 0
                for i in case_ids:
                    n = len(cases[i].inputs)
                    codes[i] = [cases[i].fmt.to_signed(int(bits)) for bits in lines[pos:pos + n]]
                    pos += n
        return codes

    def _record(self, case: CastCase) -> bytes:
        """A case as the program reads it: header, then the doubles' exact bytes."""
        inputs = [float(x) for x in case.inputs]
        return (_RECORD.pack(self._where[case.fmt][1], int(case.as_float32), len(inputs))
                + struct.pack(f"={len(inputs)}d", *inputs))

    def result_types(self) -> list[dict[str, RawFormat]]:
        """For each pair ``(a, b)``: ``{"+": type of a+b, "-": …, "*": …}`` as the headers declare them."""
        found: list[dict[str, RawFormat]] = [{} for _ in self.pairs]
        for unit in self._units:
            if not unit.pairs:
                continue
            rows = self._run(unit, "types").splitlines()
            if len(rows) != 3 * len(unit.pairs):
                raise OracleUnavailable(f"oracle printed {len(rows)} result types for {len(unit.pairs)} pairs")
            for k, row in enumerate(rows):
                op, width, iwidth, signed, q, o, n = row.split()
                found[unit.pair_ids[k // 3]][op] = RawFormat(int(width), int(iwidth), signed == "1", q, o, int(n))
        return found

    @staticmethod
    def _run(unit: _Unit, *args: str) -> str:
        result = subprocess.run([str(unit.binary), *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise OracleUnavailable(f"oracle {unit.binary} {' '.join(args)} failed with code "
                                    f"{result.returncode}:\n{result.stderr[-2000:]}")
        return result.stdout

"""qfx.cxx: one compilation per source, flags and key; clear errors; a damaged cache entry is rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from qfx import cxx


def test_compiles_once_then_takes_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    source = "int main() { return 7; }\n"
    first = cxx.compile_cached(source, "seven", ("-O0",), "probe")
    assert first.parent == tmp_path / "probe" and first.name.startswith("seven-")
    stamp = first.stat().st_mtime_ns
    assert cxx.compile_cached(source, "seven", ("-O0",), "probe") == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    assert cxx.compile_cached(source, "seven", ("-O1",), "probe") != first  # flags are part of the key
    assert cxx.compile_cached(source, "seven", ("-O0",), "probe", b"header v2") != first
    assert not list((tmp_path / "probe").glob(".build-*"))  # no half-built leftovers


def test_a_compile_error_names_the_stem_and_shows_the_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"compiling 'broken' failed(.|\n)*undeclared_thing"):
        cxx.compile_cached("int main() { return undeclared_thing; }\n", "broken", (), "probe")


def test_a_missing_compiler_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-qfx")
    with pytest.raises(RuntimeError, match="install g\\+\\+"):
        cxx.compile_cached("int main() {}\n", "x", (), "probe")


def _run(path) -> int:
    return subprocess.run([str(path)], capture_output=True).returncode


def test_a_damaged_entry_is_rebuilt_once_with_a_warning(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    source = "int main() { return 7; }\n"
    built = cxx.compile_cached(source, "seven", ("-O0",), "probe")
    assert cxx.intact(built) and _run(built) == 7
    for damage in (built.read_bytes()[:100], b"\x7fELF garbage", b""):
        built.write_bytes(damage)
        assert not cxx.intact(built)
        with pytest.warns(RuntimeWarning, match="does not match its recorded SHA-256"):
            again = cxx.compile_cached(source, "seven", ("-O0",), "probe")
        assert again == built and cxx.intact(again) and _run(again) == 7
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # healed: taken from the cache without a word
            assert cxx.compile_cached(source, "seven", ("-O0",), "probe") == built


def test_an_entry_without_its_digest_is_rebuilt(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    source = "int main() { return 5; }\n"
    built = cxx.compile_cached(source, "five", ("-O0",), "probe")
    built.with_name(built.name + ".sha256").unlink()
    built.write_bytes(b"not a program")  # as an older qfx (no digests) could have left it, damaged
    assert _run(cxx.compile_cached(source, "five", ("-O0",), "probe")) == 5


_LOAD_KERNELS = """
import warnings, torch
warnings.simplefilter("always")
from qfx.fused import native
lib = native.library()
print("loaded" if lib is not None else "fallback")
"""


def test_a_truncated_kernel_library_is_rebuilt_not_loaded(tmp_path) -> None:
    # In a subprocess: loading a truncated shared library with ctypes is a bus error, not an exception.
    env = {**os.environ, "QFX_CACHE_DIR": str(tmp_path), "QFX_FUSED_KERNELS": "1"}
    first = subprocess.run([sys.executable, "-c", _LOAD_KERNELS], capture_output=True, text=True, env=env)
    assert first.returncode == 0 and "loaded" in first.stdout, first.stderr
    (library,) = [p for p in (tmp_path / "fused").iterdir() if p.name.startswith("fused_cast-")
                  and not p.name.endswith(".sha256")]
    library.write_bytes(library.read_bytes()[:4096])
    second = subprocess.run([sys.executable, "-c", _LOAD_KERNELS], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "loaded" in second.stdout and "does not match its recorded SHA-256" in second.stderr
    # Damaged and no compiler to rebuild it: training takes the PyTorch path after one warning.
    library.write_bytes(library.read_bytes()[:4096])
    third = subprocess.run([sys.executable, "-c", _LOAD_KERNELS], capture_output=True, text=True,
                           env={**env, "CXX": "no-such-compiler-qfx"})
    assert third.returncode == 0, third.stderr
    assert "fallback" in third.stdout and third.stderr.count("fused training kernels are unavailable") == 1

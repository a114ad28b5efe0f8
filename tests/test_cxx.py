"""qfx.cxx: one compilation per source, flags and key; clear errors."""

from __future__ import annotations

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

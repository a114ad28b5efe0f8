"""Compiling an emulator program once (:func:`qfx.cxx.compile_native`, cache kind ``emulator``).

The key covers the generated source, the compiler, the flags and the
headers' contents, so a change to any of them builds anew.  Programs are
kept under ``$QFX_CACHE_DIR/emulator`` (``~/.cache/qfx/emulator`` when the
variable is unset).
"""

from __future__ import annotations

import functools
from pathlib import Path

from .. import cxx

__all__ = ["CXX_FLAGS", "include_dir", "cache_dir", "compile_source"]

# Built for this CPU's vector instructions where the compiler knows them (qfx.cxx.compile_native: wide
# integer multiply-adds for the dot products).  Integer kernels: the results do not depend on them.
CXX_FLAGS = ("-std=c++17", "-O3", "-pthread")


def include_dir() -> Path:
    """The directory holding ``qfx/cast.h`` and the other headers (shipped inside the package)."""
    return Path(__file__).resolve().parent / "include"


def cache_dir() -> Path:
    """Where compiled programs are kept: ``$QFX_CACHE_DIR/emulator``, else ``~/.cache/qfx/emulator``."""
    return cxx.cache_dir("emulator")


@functools.lru_cache(maxsize=1)
def _headers() -> bytes:
    return b"".join(path.name.encode() + b"\0" + path.read_bytes() for path in sorted(include_dir().rglob("*.h")))


def compile_source(source: str, stem: str = "graph") -> Path:
    """The executable built from ``source`` (compiled once, then taken from the cache).

    ``stem`` (a C identifier) begins the file name, to make the cache readable.
    Raises ``RuntimeError`` with the compiler's messages when the build fails.
    """
    return cxx.compile_native(source, stem, (*CXX_FLAGS, f"-I{include_dir()}"), "emulator", _headers())

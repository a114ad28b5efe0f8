"""Compiling an emulator program once: g++, a cache keyed by content, atomic installation.

The key hashes the generated source, the compiler's identity and flags and
the headers' contents, so a change to any of them builds anew.  Programs are
kept under ``$QFX_CACHE_DIR/emulator`` (``~/.cache/qfx/emulator`` when the
variable is unset) and compiled next to their final name, then renamed:
concurrent processes never run half a file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CXX", "CXX_FLAGS", "include_dir", "cache_dir", "compile_source"]

CXX = os.environ.get("CXX", "g++")
CXX_FLAGS = ("-std=c++17", "-O2", "-pthread")


def include_dir() -> Path:
    """The directory holding ``qfx/emulator.h`` (shipped inside the package)."""
    return Path(__file__).resolve().parent / "include"


def cache_dir() -> Path:
    """Where compiled programs are kept: ``$QFX_CACHE_DIR/emulator``, else ``~/.cache/qfx/emulator``."""
    root = os.environ.get("QFX_CACHE_DIR")
    return Path(root) / "emulator" if root else Path.home() / ".cache" / "qfx" / "emulator"


@functools.lru_cache(maxsize=4)
def _toolchain_digest(cxx: str) -> bytes:
    """Compiler version, flags and headers: what besides the source decides the binary."""
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"the C++ compiler {cxx!r} is not usable ({error}); install g++ (C++17) or set $CXX "
                           "to one") from error
    digest = hashlib.sha256(version.encode() + b"\0" + " ".join(CXX_FLAGS).encode())
    for path in sorted(include_dir().rglob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


def compile_source(source: str, stem: str = "graph") -> Path:
    """The executable built from ``source`` (compiled once, then taken from the cache).

    ``stem`` (a C identifier) begins the file name, to make the cache readable.
    Raises ``RuntimeError`` with the compiler's messages when the build fails.
    """
    key = hashlib.sha256(_toolchain_digest(CXX) + source.encode()).hexdigest()[:32]
    directory = cache_dir()
    binary = directory / f"{stem}-{key}"
    if binary.is_file():
        return binary
    if shutil.which(CXX) is None:
        raise RuntimeError(f"the C++ compiler {CXX!r} is not on PATH; install g++ (C++17) or set $CXX")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src = Path(tmp) / f"{stem}.cpp"
        src.write_text(source)
        out = Path(tmp) / stem
        cmd = [CXX, *CXX_FLAGS, f"-I{include_dir()}", str(src), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling the emulator for '{stem}' failed ({' '.join(cmd)}):\n"
                               f"{result.stderr[-4000:]}")
        os.replace(out, binary)
    return binary

"""Compiling C++ once: g++, a cache keyed by content, atomic installation.

The key hashes the source, the compiler's identity, the flags and whatever
else the caller names (headers), so a change to any of them builds anew.
Outputs are kept under ``$QFX_CACHE_DIR/<kind>`` (``~/.cache/qfx/<kind>``
when the variable is unset) and compiled next to their final name, then
renamed: concurrent processes never run or load half a file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

__all__ = ["compiler", "cache_dir", "compile_cached"]


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else ``g++``."""
    return os.environ.get("CXX", "g++")


def cache_dir(kind: str) -> Path:
    """Where compiled outputs of ``kind`` are kept: ``$QFX_CACHE_DIR/<kind>``, else ``~/.cache/qfx/<kind>``."""
    root = os.environ.get("QFX_CACHE_DIR")
    return Path(root) / kind if root else Path.home() / ".cache" / "qfx" / kind


@functools.lru_cache(maxsize=4)
def _compiler_version(cxx: str) -> bytes:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"the C++ compiler {cxx!r} is not usable ({error}); install g++ (C++17) or set $CXX "
                           "to one") from error


def compile_cached(source: str, stem: str, flags: Sequence[str], kind: str, key_extra: bytes = b"") -> Path:
    """The file ``$CXX flags source -o <file>`` builds (compiled once, then taken from the cache).

    ``stem`` (a C identifier) begins the file name, to make the cache
    readable; ``kind`` names the cache subdirectory; ``key_extra`` adds to
    the key what else decides the output (e.g. the contents of headers).
    Raises ``RuntimeError`` with the compiler's messages when the build fails.
    """
    cxx = compiler()
    if shutil.which(cxx) is None:
        raise RuntimeError(f"the C++ compiler {cxx!r} is not on PATH; install g++ (C++17) or set $CXX")
    digest = hashlib.sha256(_compiler_version(cxx) + b"\0" + "\0".join(flags).encode() + b"\0" + key_extra)
    digest.update(source.encode())
    directory = cache_dir(kind)
    output = directory / f"{stem}-{digest.hexdigest()[:32]}"
    if output.is_file():
        return output
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src = Path(tmp) / f"{stem}.cpp"
        src.write_text(source)
        out = Path(tmp) / stem
        cmd = [cxx, *flags, str(src), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling '{stem}' failed ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
        os.replace(out, output)
    return output

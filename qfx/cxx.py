"""Compiling C++ once: g++, a cache keyed by content, atomic installation.

The key hashes the source, the compiler's identity, the flags and whatever
else the caller names (headers), so a change to any of them builds anew.
Outputs are kept under ``$QFX_CACHE_DIR/<kind>`` (``~/.cache/qfx/<kind>``
when the variable is unset) and compiled next to their final name, then
renamed: concurrent processes never run or load half a file.

The cache is not trusted: each output has the SHA-256 of its bytes stored
beside it (``<file>.sha256``, written before the file is moved in), and
:func:`intact` checks it before the output is run or loaded.  A damaged
entry (truncated, overwritten) is rebuilt once with a warning; an entry
without a digest (an older qfx's) is rebuilt silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

__all__ = ["compiler", "cache_dir", "compile_cached", "compile_native", "intact", "install", "heal",
           "cpu_description"]


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
    if heal(output):
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
        install(out, output)
    return output


def compile_native(source: str, stem: str, flags: Sequence[str], kind: str, key_extra: bytes = b"") -> Path:
    """:func:`compile_cached` with this CPU's instructions (``-march=native``) where the compiler has them, else the
    portable build.  The CPU's description joins the key, so a shared cache never hands a native build to
    another CPU; code whose results must not depend on the instructions chosen uses no flag that changes them."""
    if _accepts_native(compiler()):
        return compile_cached(source, stem, (*flags, "-march=native"), kind, key_extra + b"\0" + cpu_description())
    return compile_cached(source, stem, flags, kind, key_extra)


@functools.lru_cache(maxsize=None)
def _accepts_native(cxx: str) -> bool:
    """Whether ``cxx`` takes ``-march=native`` (asked once, on an empty translation unit)."""
    if shutil.which(cxx) is None:
        return False  # compile_cached says what is missing
    probe = subprocess.run([cxx, "-march=native", "-x", "c++", "-c", "-o", os.devnull, "-"], input="",
                           capture_output=True, text=True)
    return probe.returncode == 0


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def intact(path: Path) -> bool:
    """Whether the cached ``path`` exists, is a regular file and matches the digest stored beside it."""
    try:
        if not path.is_file() or path.is_symlink():
            return False
        return _digest_path(path).read_text(encoding="ascii").strip() == _sha256(path)
    except (OSError, UnicodeDecodeError):
        return False


def heal(path: Path) -> bool:
    """Whether the cached ``path`` can be used as it is; a damaged entry is removed (with a warning) to be rebuilt."""
    if intact(path):
        return True
    if path.exists() or path.is_symlink():
        if _digest_path(path).exists():
            warnings.warn(f"qfx: the cached build '{path}' does not match its recorded SHA-256 (truncated or "
                          "overwritten); rebuilding it", RuntimeWarning, stacklevel=3)
        for p in (path, _digest_path(path)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                shutil.rmtree(p, ignore_errors=True)
    return False


def install(built: Path, output: Path) -> None:
    """Move the freshly built ``built`` to ``output``, its digest written beside it first (both renamed atomically).

    When a concurrent builder has installed an intact ``output`` meanwhile, that one is kept.
    """
    if intact(output):
        os.unlink(built)
        return
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".sha256")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(_sha256(built) + "\n")
    os.replace(tmp, _digest_path(output))
    os.replace(built, output)


def cpu_description() -> bytes:
    """The model and feature flags of this machine's CPU (what ``-march=native`` builds for): a cache key,
    so that a shared cache never hands a native build to another CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return (platform.machine() + platform.processor()).encode()
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(keys))).encode()

"""Writing generated files as a folder: all files or none, and never deleting what qfx did not write.

Every back end writes through :func:`write_project`.  The plan's paths are
checked first (relative, no ``..``).  The files and a record of them,
``.qfx-record.json`` (each path and its SHA-256), are written into a
staging folder beside the target, which then takes the target's place in
one atomic step:

- a new target: renamed onto a path that must not exist
  (``renameat2(RENAME_NOREPLACE)``); a folder that appeared there
  meanwhile (another qfx run) is a clear error, never replaced;
- ``force`` over an earlier output: the folder is replaced only if every
  file in it is in its record with the recorded content, or lies in one of
  the build-output folders the back end names (``outputs``: a Vitis
  project, a simulator's build); anything else (a user's file, an edited
  generated file) is refused, listed, and nothing changes.  The two folders
  are swapped in one step (``RENAME_EXCHANGE``), the old one checked again
  and only then removed, so there is no moment without a target.

SIGINT and SIGTERM during the write remove the staging folder; a folder
left by a killed run (its process gone) is removed by the next write to the
same target, or put back when it is the only copy of a replaced project.
Files get the permissions the user's umask gives.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import warnings
from typing import Iterator, Mapping, Sequence

from ..files import umask

__all__ = ["write_project", "check_relative_path", "check_replaceable", "UnsafePathError", "ForeignFilesError",
           "RECORD"]

#: The record of what qfx wrote in a folder: ``{"format": "qfx-record", "files": {path: sha256}}``.
RECORD = ".qfx-record.json"
_STAGING = ".qfx-staging-"  # .<target>.qfx-staging-<pid>-<random>
_LISTED = 8  # foreign files named in a refusal


class UnsafePathError(ValueError):
    """A path in a project plan, or a target directory, that could write outside where it should."""


class ForeignFilesError(UnsafePathError):
    """``force`` asked to replace a folder holding files qfx did not write (or that were edited since)."""


def check_relative_path(path: str) -> pathlib.PurePosixPath:
    """``path`` as a relative POSIX path with no ``..``, ``.``, empty or absolute components."""
    pure = pathlib.PurePosixPath(path)
    if (not path or "\\" in path or "\x00" in path or pure.is_absolute() or path != str(pure)
            or any(part in ("", ".", "..") for part in pure.parts) or path == RECORD):
        raise UnsafePathError(f"unsafe path {path!r} in the project plan: paths must be relative, without '..'")
    return pure


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded(folder: pathlib.Path) -> dict[str, str]:
    """The record's ``{path: sha256}``, or ``{}`` when the folder has no valid record."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    files = record.get("files") if isinstance(record, dict) and record.get("format") == "qfx-record" else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}


def check_replaceable(folder: "os.PathLike | str", outputs: Sequence[str] = ()) -> None:
    """Raise :class:`ForeignFilesError` unless everything in ``folder`` is qfx's to replace.

    That is: each file is in the folder's record with the recorded content,
    or lies under one of ``outputs`` (build-output folders, relative paths).
    An empty folder is replaceable.
    """
    folder = pathlib.Path(folder)
    recorded = _recorded(folder)
    foreign, edited = [], []
    for root, dirs, names in os.walk(folder):
        rel_root = pathlib.Path(root).relative_to(folder).as_posix()
        dirs[:] = [d for d in dirs if (f"{rel_root}/{d}" if rel_root != "." else d) not in outputs]
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = f"{rel_root}/{name}" if rel_root != "." else name
            path = folder / rel
            if rel == RECORD and recorded:
                continue
            if rel in outputs:
                continue
            if rel not in recorded or path.is_symlink() or not path.is_file():
                foreign.append(rel)
            elif _sha256(path) != recorded[rel]:
                edited.append(rel)
    if foreign or edited:
        def listing(paths: list[str]) -> str:
            more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
            return ", ".join(sorted(paths)[:_LISTED]) + more
        parts = ([f"files qfx did not write: {listing(foreign)}"] if foreign else []) + \
                ([f"generated files edited since: {listing(edited)}"] if edited else [])
        unrecorded = "" if recorded else f" (it has no {RECORD}, so qfx did not write it, or an older qfx did)"
        raise ForeignFilesError(f"'{folder}' holds {'; '.join(parts)}{unrecorded}; qfx does not replace it even "
                                "with --force: move those files away or choose another directory")


# -------------------------------------------------------- atomic renames
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(source: pathlib.Path, target: pathlib.Path, flags: int) -> bool:
    """Linux ``renameat2``; ``False`` where the system or file system lacks it, ``OSError`` on a real failure."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _rename_new(staging: pathlib.Path, target: pathlib.Path) -> None:
    """``staging`` becomes ``target``, which must not exist; ``FileExistsError`` if it appeared."""
    try:
        if not _renameat2(staging, target, _RENAME_NOREPLACE):
            if os.path.lexists(target):  # the fallback: rename replaces at most an empty folder
                raise FileExistsError(errno.EEXIST, "exists", str(target))
            os.rename(staging, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise FileExistsError(f"'{target}' appeared while qfx was writing it (another qfx run?); nothing was "
                                  "replaced: run again with --force to replace it") from None
        raise


def _swap(staging: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """Put ``staging`` at ``target``; returns where the old target now is (to check, then remove)."""
    if _renameat2(staging, target, _RENAME_EXCHANGE):
        return staging
    old = staging.with_name(staging.name.replace(_STAGING, ".qfx-old-", 1))
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


# ------------------------------------------------------ signals, leftovers
@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises ``SystemExit`` (as SIGINT raises ``KeyboardInterrupt``), so cleanup runs on either."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(target: pathlib.Path, outputs: Sequence[str]) -> None:
    """Remove the staging folders of earlier runs on ``target`` that died; put back an orphaned old project."""
    if not target.parent.is_dir():
        return
    for kind in (_STAGING, ".qfx-old-"):
        prefix = f".{target.name}{kind}"
        for folder in [f for f in target.parent.iterdir() if f.name.startswith(prefix)]:
            pid = folder.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)) or folder.is_symlink() or not folder.is_dir():
                continue
            if kind == ".qfx-old-" and not os.path.lexists(target):
                os.rename(folder, target)
                warnings.warn(f"'{target}' was left in {folder.name} by an interrupted qfx run; put it back",
                              stacklevel=3)
                continue
            try:
                check_replaceable(folder, outputs)
            except ForeignFilesError:
                warnings.warn(f"'{folder}' was left by an interrupted qfx run and holds other files; "
                              "look at it and remove it by hand", stacklevel=3)
                continue
            shutil.rmtree(folder, ignore_errors=True)


def _write_file(destination: pathlib.Path, text: str) -> str:
    destination.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    destination.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ write
def write_project(files: Mapping[str, str], directory: "os.PathLike | str", force: bool = False,
                  outputs: Sequence[str] = ()) -> pathlib.Path:
    """Write ``files`` (relative path -> text) as the folder ``directory``; returns its path.

    Refuses an existing ``directory`` unless ``force``, and with ``force``
    unless it holds only what qfx wrote there (see :func:`check_replaceable`;
    ``outputs`` are the back end's build-output folders); refuses a symbolic
    link, and the home or current directory or an ancestor of it.
    """
    target = pathlib.Path(directory)
    checked = {check_relative_path(path): text for path, text in files.items()}
    _clean_leftovers(target, outputs)
    if target.is_symlink():
        raise UnsafePathError(f"'{target}' is a symbolic link; give the real directory to write into")
    if target.exists() and not force:
        raise FileExistsError(f"'{target}' exists; pass --force (force=True) to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"'{target}' exists and is not a directory; remove it or choose another -o")
    resolved, here = target.resolve(), pathlib.Path.cwd().resolve()
    if resolved == pathlib.Path.home().resolve() or resolved in (here, *here.parents):
        raise UnsafePathError(f"'{target}' is the home directory, the current directory or one of its parents; "
                              "choose a new directory for the project")
    if target.exists():
        check_replaceable(target, outputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _interruptible():
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}{os.getpid()}-", dir=target.parent))
        try:
            staging.chmod(0o777 & ~umask())  # mkdtemp makes the folder private; the output should not be
            record = {path.as_posix(): _write_file(staging.joinpath(*path.parts), text)
                      for path, text in checked.items()}
            (staging / RECORD).write_text(json.dumps({"format": "qfx-record", "version": 1, "files": record},
                                                     indent=1, sort_keys=True) + "\n")
            if not force or not os.path.lexists(target):
                _rename_new(staging, target)
                return target
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            old = _swap(staging, target)  # from here on the old project is kept until it is checked once more
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            check_replaceable(old, outputs)  # files may have appeared between the first check and the swap
        except ForeignFilesError:
            if old == staging:
                _swap(old, target)
            else:
                os.rename(target, staging)
                os.rename(old, target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old)
        return target

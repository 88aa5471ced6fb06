"""Outputs that appear whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erase.errors import EraseError

# Write failures the user fixes (space, quota, permissions), not bugs: one line, not a traceback.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _disk_message(path: Path, e: OSError) -> str:
    return f"could not write {path} ({e.strerror}); nothing was kept: free space or choose another --out"


def check_writable(out: Path, overwrite: bool = False) -> None:
    """Fail before any work if ``out`` cannot be created or would clobber a result."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EraseError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EraseError(f"output folder {out} is not empty; choose another --out or pass --overwrite")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    # os.access trusts permission bits, which root ignores; making a folder is the real test, and
    # it also fails for root on a read-only or special file system, or under a regular file.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".erase-probe-", dir=parent))
    except OSError as e:
        raise EraseError(f"cannot write under {parent} ({e.strerror}); choose a writable --out") from None


@contextlib.contextmanager
def atomic_dir(out: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``out``, on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in DISK_ERRORS:
            raise EraseError(_disk_message(out, e)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EraseError(f"output {out} appeared while running; nothing was written")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_json(path: Path, obj) -> None:
    """Write-then-rename, so a reader never sees half a record."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in DISK_ERRORS:
            # Only the name: inside atomic_dir the folder is a temporary one that is about to go.
            raise EraseError(_disk_message(Path(path.name), e)) from None
        raise
    tmp.replace(path)

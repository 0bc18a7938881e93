"""Atomic file writes, shared by everything in prunus that saves a file (checkpoints, datasets).

A reader sees either the old file or the complete new one, never half a file; a writer killed at
any moment leaves the old file untouched and at most a hidden temp file next to it, which the next
write to the same path removes once its writer is known to be dead.
"""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from pathlib import Path

# The umask, read once (os.umask can only be read by setting it): mkstemp makes 0600 files, but a
# saved file should get the permissions any other new file would.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_CHUNK = 16 << 20  # write in slices so a huge checkpoint does not need one giant syscall


def _tmp_prefix(path: Path) -> str:
    # host and pid in the name, so a later writer can tell a dead writer's leftovers from a live
    # writer's file (on this host or on another one sharing the folder)
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}."


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of `path` left by writers on this host that no longer run (SIGKILL,
    power loss). Files of live writers and of other hosts are left alone."""
    mine = f".{path.name}.{socket.gethostname()}-"
    for tmp in path.parent.glob(glob.escape(mine) + "*.tmp"):
        pid = tmp.name[len(mine) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # exists but belongs to another user (EPERM): alive, keep its file
            pass


def atomic_write(path, data) -> None:
    """Write `data` (bytes-like) to `path` via a temp file in the same folder: write, flush, fsync,
    os.replace, then fsync the folder so the rename itself survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            try:  # a replaced file keeps its mode; a new one gets the usual 0666 & ~umask
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
            os.chmod(tmp, mode)
            view = memoryview(data).cast("B")
            for start in range(0, len(view), _CHUNK):
                f.write(view[start : start + _CHUNK])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every platform lets us open a folder
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass

"""File writes that a kill can never leave half-done, and the clean-up of what a kill leaves.

Every file is written next to its target and moved into place with :func:`os.replace`, which is
atomic on POSIX: a reader sees the old file or the whole new one, never a truncated one. The
temporary file is hidden and named after the writing process, so a later start can tell a
leftover of a killed writer from a write in progress.
"""

import os
import re
import socket
import time
from typing import IO, Any, Callable, List

import torch

__all__ = ["atomic_write", "atomic_torch_save", "remove_stale_temp_files"]


# ".<target name>.tmp@<host>@<pid>": hidden, and tied to the process that writes it.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.tmp@(?P<host>[^@/]+)@(?P<pid>\d+)$")
# A temporary file untouched this long is a leftover even if its process id is in use again
# (a restarted container hands out the same ids); live writes touch theirs continuously.
STALE_AFTER_S = 3600.0


def _temp_path(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    name = f".{os.path.basename(path)}.tmp@{socket.gethostname()}@{os.getpid()}"
    return os.path.join(directory, name)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_leftover(directory: str, match: "re.Match[str]") -> bool:
    """Written on this host by a process that is gone, or untouched for ``STALE_AFTER_S``.

    Files of other hosts sharing the folder are theirs to clean: their process ids mean nothing
    here.
    """
    if match["host"] != socket.gethostname():
        return False
    path = os.path.join(directory, match.group(0))
    try:
        idle = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return False
    return not _process_alive(int(match["pid"])) or idle > STALE_AFTER_S


def remove_stale_temp_files(directory: str) -> List[str]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``directory``.

    A file whose writer is still running (same host, live process, recently written) is kept.
    Returns the removed paths.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        match = _TEMP_NAME.match(name)
        if match is None or not _is_leftover(directory, match):
            continue
        path = os.path.join(directory, name)
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def atomic_write(path: str, write_fn: Callable[[IO[bytes]], None]) -> None:
    """Call ``write_fn`` on a temporary file in ``path``'s folder, then move it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable; not all file systems allow opening a folder
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that leaves either the old file or the complete new one at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))

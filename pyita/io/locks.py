"""Ownership of an output by one living process: a lock file that holds the owner's pid under an ``flock``.

The kernel drops an ``flock`` when its holder dies, however it dies (even SIGKILL), so a lock left behind
by a killed run is never mistaken for a live one — which a bare pid file could be, once the pid is reused.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pyita.errors import PyitaError

try:
    import fcntl
except ImportError:  # not POSIX: no kernel locks; the pid in the file is still written for people to read
    fcntl = None


class Lock:
    """An acquired lock; ``release()`` removes the file and lets others in."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, mine = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def owner_pid(path: str | Path) -> str:
    """The pid written in a lock file, or "?" when it cannot be read."""
    try:
        return Path(path).read_text().strip() or "?"
    except OSError:
        return "?"


def _take(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _own(path: Path, fd: int) -> Lock:
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return Lock(path, fd)


def try_lock(path: str | Path) -> Lock | None:
    """Take the lock at ``path`` (creating the file), or return None when a living process holds it."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _take(fd):
            os.close(fd)
            return None
        if _same_file(fd, path):  # not a file its last owner unlinked while we opened it
            return _own(path, fd)
        os.close(fd)


def new_lock(folder: Path, prefix: str) -> Lock:
    """A fresh, uniquely named lock file ``<prefix>XXXX.lock`` in ``folder``, taken at once."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".lock", dir=folder)
    _take(fd)  # a new file: nobody else can hold it
    return _own(Path(name), fd)


def is_locked(path: str | Path) -> bool:
    """True while a living process holds the lock at ``path`` (an absent file is not locked)."""
    if fcntl is None or not Path(path).exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def exclusive(path: str | Path, what: str):
    """Hold the lock at ``path`` for the block; refuse (PyitaError) while another living process has it."""
    path = Path(path)
    try:
        lock = try_lock(path)
    except OSError as exc:
        raise PyitaError(f"cannot create the lock file {path}: {exc.strerror}") from None
    if lock is None:
        raise PyitaError(f"{what} is in use by another pyita process (pid {owner_pid(path)}); wait for it to "
                         "finish or stop it first")
    try:
        yield lock
    finally:
        lock.release()

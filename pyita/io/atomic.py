"""All-or-nothing output: results appear under their final name only when complete.

Work in progress lives in a temporary sibling ``.<name>.tmp-XXXX`` (a folder, or a file with the final
suffix) beside a lock file ``.<name>.tmp-XXXX.lock`` held by the writing process. A run killed outright
leaves both behind; the next run for the same output sees that no living process holds the lock, removes
them and says so. Missing parent folders are created only at the final rename, so a run that fails leaves
no trace. Final outputs get the permissions the user's umask asks for (temporary files are private).
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable

from pyita.errors import PyitaError
from pyita.io.locks import is_locked, new_lock, owner_pid

TMP_MARK = ".tmp-"


def user_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def existing_ancestor(folder: Path) -> Path:
    """``folder`` itself if it exists, else its nearest existing parent (where temporary work can live)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PyitaError(f"cannot write under {folder}: it is a file, not a folder")
    return folder


def _token(name: str, prefix: str) -> str:
    return name[len(prefix):].split(".", 1)[0]


def clean_stale(base: Path, final_name: str) -> None:
    """Remove the temporary files and folders an interrupted run for ``final_name`` left in ``base``.

    Refuses (PyitaError) while a living process is still writing that output.
    """
    prefix = f".{final_name}{TMP_MARK}"
    try:
        names = [n for n in os.listdir(base) if n.startswith(prefix)]
    except OSError:
        return
    for token in sorted({_token(n, prefix) for n in names}):
        lock = base / f"{prefix}{token}.lock"
        if is_locked(lock):
            raise PyitaError(f"another pyita process (pid {owner_pid(lock)}) is writing {base / final_name} "
                             "right now; wait for it to finish or stop it first")
        for name in (n for n in names if _token(n, prefix) == token):
            path = base / name
            if path.is_dir() and not path.is_symlink():
                files = sum(len(f) for _, _, f in os.walk(path))
                shutil.rmtree(path, ignore_errors=True)
                warnings.warn(f"removed {path}, a temporary folder ({files} files) left by an interrupted run",
                              stacklevel=3)
            elif name != lock.name:
                path.unlink(missing_ok=True)
                warnings.warn(f"removed {path}, a temporary file left by an interrupted run", stacklevel=3)
        lock.unlink(missing_ok=True)


@contextmanager
def _temporary(final: Path, suffix: str, make: Callable[[Path], None]):
    """Yield a locked temporary sibling path for ``final`` (created by ``make``); remove it on error."""
    base = existing_ancestor(final.parent)
    clean_stale(base, final.name)
    lock = None
    try:
        lock = new_lock(base, f".{final.name}{TMP_MARK}")
        tmp = Path(str(lock.path)[:-len(".lock")] + suffix)
        make(tmp)
    except OSError as exc:
        if lock is not None:
            lock.release()
        why = "no permission to create files in" if isinstance(exc, PermissionError) else f"{exc.strerror} in"
        raise PyitaError(f"cannot write {final}: {why} {base}") from None
    try:
        yield tmp
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        lock.release()
        raise
    lock.release()


def _publish(tmp: Path, final: Path, mode: int) -> None:
    """Give ``tmp`` the user's permissions and rename it to ``final``, creating missing parent folders now."""
    try:
        os.chmod(tmp, mode & ~user_umask())
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PyitaError(f"cannot write {final}: {exc.strerror}") from None


@contextmanager
def atomic_output_dir(final: str | Path, overwrite: bool = False, command: str | None = None):
    """Yield a temporary folder; on success it is renamed to ``final``, on error removed.

    A non-empty ``final`` is refused unless ``overwrite`` (then it is replaced only after success), so a
    failed run never leaves half an output behind nor damages an earlier one. Whether ``final`` may be
    replaced at all is for ``pyita.io.outputs.guard_output`` to decide, before any work; with ``command``
    the folder's record gets the list of its files, and the earlier output is checked once more, just
    before it is replaced, for files added while the run worked.
    """
    from pyita.io.outputs import refuse_foreign, stamp_files

    final = Path(final)
    if final.exists() and not final.is_dir():
        raise PyitaError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise PyitaError(f"output folder {final} is not empty (choose another, or --overwrite)")
    with _temporary(final, "", lambda p: p.mkdir(mode=0o700)) as tmp:
        try:
            yield tmp
            if command is not None:
                stamp_files(tmp, command)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):   # else the error names its own file
                raise PyitaError(f"cannot write {final}: {exc.strerror}") from None
            raise
        _publish(tmp, final, 0o777)
        if final.exists():
            if command is not None and any(final.iterdir()):
                refuse_foreign(final, command)
            old = tmp.with_name(tmp.name + ".old")   # same lock token: cleaned with it after a crash
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(temporary_path)``, then rename the result to ``path``: readers never see a partial file.

    The temporary sibling keeps ``path``'s suffix, for writers that choose a format by it (``np.savez``).
    """
    path = Path(path)
    with _temporary(path, path.suffix, lambda p: p.touch(mode=0o600, exist_ok=False)) as tmp:
        try:
            write(str(tmp))
        except OSError as exc:   # a full disk, a quota: say which file (the partial one is removed)
            raise PyitaError(f"cannot write {path}: {exc.strerror or exc}") from None
        _publish(tmp, path, 0o666)
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))

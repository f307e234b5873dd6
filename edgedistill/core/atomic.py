"""Write files so that a crash or Ctrl-C never leaves a half-written one: temp file, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgedistill.core.errors import EdgeDistillError

# The user fixes these (frees space, lifts a quota or size limit, picks a writable place): one line.
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


@contextlib.contextmanager
def _room_for(path: Path, also: tuple[int, ...] = ()) -> Iterator[None]:
    """Turn a full disk, a file size limit or a read-only folder while writing `path` into one line;
    `also` adds errnos (EACCES only where a temp file is created: a write callback may also read)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (*_NO_ROOM, *also):
            raise
        full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        fix = "free space there or write elsewhere" if full else "make it writable or write elsewhere"
        raise EdgeDistillError(
            f"cannot write {path}: {exc.strerror}: {fix} (nothing already there was replaced)"
        ) from None


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path` only once it succeeded.

    The data is synced before the rename and the directory after it: otherwise a power cut soon
    after can leave `path` renamed but empty (the rename reached the disk, the data had not)."""
    path = Path(path)
    with _room_for(path, also=(errno.EACCES,)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _room_for(path):
            write(Path(tmp))
            _fsync(tmp)  # a full disk may surface only here (delayed allocation)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; shipped and shared files must be readable
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def _fsync(path: str | Path) -> None:
    """Flush a file's data to the disk (the writer may have closed it: fsync works on any fd)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows syncs writable fds only
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable, where the OS lets a directory be opened (not Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `path`; on success it replaces `path` whole, on failure it vanishes."""
    path = Path(path)
    with _room_for(path, also=(errno.EACCES,)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700 dirs; an artifact is meant to be shared and copied
    try:
        with _room_for(path):
            yield tmp
            for file in (p for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()):
                _fsync(file)  # before the rename, as in write_atomic
        _fsync_dir(tmp)
        _swap_in(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path, tries: int = 100) -> None:
    """Rename `tmp` to `path`, moving a directory already there aside first.

    Two writers may finish at once (two exports into one folder): each moves aside whatever
    stands at `path` under a name of its own and retries, so the last one wins whole and
    neither fails on a directory the other has just put there.
    """
    for _ in range(tries):
        try:
            os.replace(tmp, path)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        with contextlib.suppress(FileNotFoundError):  # another writer moved it aside first: retry
            os.replace(path, old / path.name)  # into a dir of its own: no other writer uses it
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(errno.EBUSY, f"{path} kept being replaced by other writers; write it again", str(path))

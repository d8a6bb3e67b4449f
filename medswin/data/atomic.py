"""The one atomic writer: every file medswin writes appears whole or not at all.

A writer fills a temporary file next to the target (same folder, so the final rename never crosses
file systems), which then replaces the target with ``os.replace``; a run killed at any moment
(even SIGKILL) leaves at most a hidden ``.tmp-<pid>-...-<name>`` file, never a truncated output and
never a half-overwritten file of the user's.  The next write of the same target removes the
temporary files that dead processes left for it (those of live processes are theirs).

    atomic_write("out/summary.json", lambda tmp: Path(tmp).write_text(text))
    write_text_atomic("out/config.yaml", text)
    write_bytes_atomic("out/metrics.csv", data)
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import DataError

TEMP_PREFIX = ".tmp-"


def default_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give under the current umask (``mkstemp`` uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it to ``path``.

    Args:
        path: the final file; its folder is created when missing.
        write: fills the temporary file given its path (e.g. ``lambda tmp: torch.save(obj, tmp)``).

    Returns the final path.  On any error the temporary file is removed and the error re-raised (an
    ``OSError`` of the file system -- disk full, read-only or forbidden folder -- as one :class:`DataError`
    naming ``path``); an existing ``path`` is then left untouched.
    """
    path = Path(path)
    suffix = f"-{path.name}"  # the temporary file ends like the target: writers that go by the ending work
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise DataError(path, f"cannot write it ({_reason(exc)})") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (or staging folders) that killed writers left for ``path`` (their process is
    gone); returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{TEMP_PREFIX}*-{path.name}"):
        pid = tmp.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def _reason(exc: OSError) -> str:
    """Why a write failed, in words a user acts on."""
    hints = {
        errno.ENOSPC: "no space left on the device: free space or write elsewhere",
        errno.EDQUOT: "disk quota exceeded: free space or write elsewhere",
        errno.EROFS: "read-only file system: write elsewhere",
        errno.EACCES: "permission denied: write into a folder you may write to",
        errno.EPERM: "operation not permitted: write into a folder you may write to",
    }
    return hints.get(exc.errno, exc.strerror or str(exc))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

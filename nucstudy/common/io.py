"""Atomic file writes: a file appears complete under its final name, or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]


def _file_mode() -> int:
    """Permissions of a new file under the process's umask (mkstemp alone gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write_many(folder: str | os.PathLike, writers: Mapping[str, Writer]) -> list[Path]:
    """Write several files into ``folder`` so that none is replaced until all are written.

    Each writer receives a binary file object opened on a temporary name in ``folder``;
    once every writer has finished, the temporary files are renamed to their final names
    (``os.replace``, atomic on one file system). If any writer raises, the temporary files are
    removed and whatever was in ``folder`` before stays untouched.

    Args:
        folder: destination folder, created if missing.
        writers: final file name -> function writing that file's bytes.

    Returns:
        The final paths, in the order of ``writers``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, write in writers.items():
            handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            staged.append((Path(tmp), folder / name))
            os.chmod(tmp, _FILE_MODE)
            with os.fdopen(handle, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [final for _, final in staged]


def atomic_write(path: str | os.PathLike, write: Writer) -> Path:
    """Write one file atomically: ``write`` fills a temporary file that is then renamed."""
    path = Path(path)
    return atomic_write_many(path.parent, {path.name: write})[0]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))

"""Checkpoints that load safely: tensors and plain values only, checked against a digest.

A checkpoint is written as ``<name>.pt`` (``torch.save`` of a dict of tensors, numbers,
strings, lists and dicts) with ``<name>.pt.sha256`` beside it. Loading first compares the
file's SHA-256 with the digest, then unpickles with ``weights_only=True``, which refuses any
object that is not a tensor or a plain container. A modified, truncated or foreign file gets
one clear error naming it instead of running whatever it holds. A checkpoint copied without
its digest still loads, weights-only, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nucstudy.common.io import atomic_write_many

DIGEST_SUFFIX = ".sha256"


class CheckpointError(ValueError):
    """A checkpoint file is missing, modified or not loadable safely."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` and its SHA-256 digest atomically (both files, or neither)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    atomic_write_many(
        path.parent,
        {
            path.name: lambda f: f.write(payload),
            path.name + DIGEST_SUFFIX: lambda f: f.write(f"{digest}  {path.name}\n".encode()),
        },
    )
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Raises:
        CheckpointError: the file is missing, its digest does not match, or it holds
            anything but tensors and plain values. A missing digest only warns.
    """
    path = Path(path)
    digest_path = path.with_name(path.name + DIGEST_SUFFIX)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    payload = path.read_bytes()
    if not digest_path.is_file():
        warnings.warn(
            f"{path}: no {digest_path.name} beside it; loading weights-only without a "
            "digest check",
            stacklevel=2,
        )
    elif hashlib.sha256(payload).hexdigest() != _expected_digest(digest_path):
        raise CheckpointError(
            f"{path}: contents do not match {digest_path.name}; the file was modified or "
            "truncated, refusing to load"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... here
        raise CheckpointError(f"{path}: not a safe checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors and values")
    return state


def _expected_digest(digest_path: Path) -> str:
    text = digest_path.read_text().strip()
    return text.split()[0] if text else ""


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global generators, as plain values."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(random.getstate()[1]), random.getstate()[0]],
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

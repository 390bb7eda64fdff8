"""Where a model runs and how fast: the device, and the fast path chosen for it at run time.

The fast path is bf16 autocast with channels_last tensors. bf16 is taken on CUDA GPUs with
bf16 support and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), detected when the
program runs, never assumed; everywhere else the forward pass runs in float32. channels_last
is taken on CUDA and on CPUs where oneDNN runs the convolutions (it speeds up float32 there
too). What each setting buys is measured by ``benchmarks/train.py``. The losses compute in
float32 whatever the outputs' dtype. Training and inference both take the path from here, so
they run the same numbers.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import cache

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return torch.device(device)


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN can use it.

    Without them PyTorch emulates bf16 on the CPU, which is slower than float32.
    """
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(cpu, name, lambda: False)() for name in checks)
    return native and torch.backends.mkldnn.is_available()


@dataclass(frozen=True)
class FastPath:
    """How a model runs on one device.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        bf16: forward pass under bf16 autocast.
        channels_last: model and inputs in channels_last memory format.
        reason: why, in words (recorded in each run's ``env.json``).
    """

    device: str
    bf16: bool
    channels_last: bool
    reason: str

    def autocast(self) -> AbstractContextManager:
        """The autocast context of the forward pass (a no-op in float32)."""
        if self.bf16:
            return torch.autocast(self.device, dtype=torch.bfloat16)
        return nullcontext()

    @property
    def memory_format(self) -> torch.memory_format:
        """``torch.channels_last`` or ``torch.contiguous_format``."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_fast_path(device: torch.device, enabled: bool = True) -> FastPath:
    """The fast path for ``device``: bf16 autocast + channels_last where supported.

    Args:
        device: where the model runs.
        enabled: the config's ``mixed_precision`` switch; False always gives float32.
    """
    kind = device.type
    if not enabled:
        return FastPath(kind, False, False, "turned off (mixed_precision false)")
    if kind == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return FastPath(kind, bf16, True, f"CUDA GPU {'with' if bf16 else 'without'} bf16")
    if kind == "cpu":
        bf16 = cpu_has_native_bf16()
        channels_last = torch.backends.mkldnn.is_available()
        what = "with" if bf16 else "without"
        return FastPath(kind, bf16, channels_last, f"CPU {what} native bf16 (AVX512-BF16 or AMX)")
    return FastPath(kind, False, False, f"no fast path known for {kind!r}")


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader worker processes to use for ``requested`` ones on ``device``.

    On a GPU, as requested. On a CPU, at most the cores that the intra-op threads leave
    free: workers sharing cores with the threads slow training down (on the study's 2-core
    CPU, 0 workers train the cpu-demo model faster than 1 or 2; ``benchmarks/train.py``).
    """
    if device.type != "cpu":
        return requested
    spare = max(0, (os.cpu_count() or 1) - torch.get_num_threads())
    return min(requested, spare)

"""What a training step costs: its multiply-adds and its seconds, for any method.

Shared by Table I's cost counts, the GPU study's throughput figures
and ``benchmarks/models.py``: :func:`synthetic_batch` makes a collated batch with a
method's own targets, :func:`training_multiply_adds` counts one forward + loss + backward
step and :func:`time_training_steps` times it.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from nucstudy.engine.device import FastPath
from nucstudy.engine.methods import Method

#: Untimed steps first: they pay for memory allocation and kernel selection.
WARM_UP_STEPS = 2


def synthetic_batch(method: Method, n: int, side: int, scheme: str = "conic", seed: int = 0):
    """A collated batch of ``n`` synthetic ``side`` x ``side`` patches of ``scheme`` with
    ``method``'s own targets (images B x 3 x side x side float in [0, 1]), for measuring a
    training step."""
    from nucstudy.data.synthetic import synthetic_conic

    data = synthetic_conic(n, size=side, seed=seed, scheme=scheme)
    items = [
        {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255.0}
        | method.targets(label)
        for image, label in zip(data.images, data.labels, strict=True)
    ]
    return method.collate(items)


def training_multiply_adds(
    network: nn.Module, method: Method, batch: dict[str, Any], device: torch.device, fast: FastPath
) -> float:
    """Multiply-adds of one training step (forward, loss, backward) on ``batch``, per patch.

    Counted by ``torch.utils.flop_counter`` (a multiply-add is two of its operations); the
    gradients of ``network`` are cleared first and hold this step's afterwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    network.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        method.loss_terms(network, batch, device, fast)["total"].backward()
    return counter.get_total_flops() / 2 / len(batch["image"])


def time_training_steps(
    network: nn.Module, method: Method, batch: dict[str, Any], steps: int, fast: FastPath
) -> float:
    """Seconds of the fastest of ``steps`` forward + loss + backward steps (no optimiser
    step) on ``batch``, after :data:`WARM_UP_STEPS` untimed ones; the network is put in
    ``fast``'s memory format."""
    device = torch.device(fast.device)
    network.to(memory_format=fast.memory_format)

    def step() -> None:
        network.zero_grad(set_to_none=True)
        method.loss_terms(network, batch, device, fast)["total"].backward()

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(WARM_UP_STEPS):
        step()
    times = []
    for _ in range(steps):
        synchronise()
        start = time.perf_counter()
        step()
        synchronise()
        times.append(time.perf_counter() - start)
    return min(times)

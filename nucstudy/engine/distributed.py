"""Training in several processes under ``torchrun --nproc_per_node=N``: each process's part.

torchrun starts the processes and tells each its place (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``). :func:`process_device` joins the process group and gives each process its
device; :func:`replicate` wraps the model so that every optimiser step averages the
gradients of all processes; DistributedDataParallel keeps only the weights in step, so
:func:`share_buffers` gives every process rank 0's batch-norm statistics at the end of an
epoch. Each process's share of the patches is
:func:`nucstudy.engine.training_data.training_loader`'s.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nucstudy.engine.device import resolve_device


def process_device(requested: str, distributed: bool) -> torch.device:
    """This process's device: ``requested`` (``"auto"``, ``"cpu"``, ``"cuda"``...) resolved by
    :func:`~nucstudy.engine.device.resolve_device`. With ``distributed``, the process first
    joins the process group (NCCL on CUDA, gloo on the CPU) and takes the GPU of its
    ``LOCAL_RANK`` where CUDA is asked for."""
    if not distributed:
        return resolve_device(requested)
    use_cuda = resolve_device(requested).type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def replicate(
    model: nn.Module, device: torch.device, find_unused_parameters: bool
) -> DistributedDataParallel:
    """``model`` (already on ``device``) as this process's DistributedDataParallel replica;
    ``find_unused_parameters`` for networks whose steps may leave parameters out."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def share_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers of ``model`` (its batch-norm statistics)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)

"""Distributed set-up shared by the encoder and LoRA trainers: one process, or many under torchrun /
accelerate launch (WORLD_SIZE > 1), with the device each process trains on and the few collectives used."""

from __future__ import annotations

import os
from dataclasses import dataclass


def world_size() -> int:
    """Processes in this run: torchrun and accelerate launch both set WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str | None):
    """The device this process trains on; under DDP each process gets its LOCAL_RANK GPU."""
    import torch

    from category_classification.core.devices import pick_device

    device = pick_device(preference)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup_distributed(device_preference: str | None = None):
    """(DistInfo, device), joining the process group when there is more than one process: NCCL on CUDA
    (one GPU per local rank), gloo on CPU. The Hugging Face Trainer joins it itself, so LoRA only needs
    resolve_device."""
    import torch

    world = world_size()
    device = resolve_device(device_preference)
    if world <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    info = DistInfo(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_to_main(obj, dist_info: DistInfo):
    """Every rank's `obj` as a list on rank 0 (None elsewhere); [obj] without DDP."""
    if not dist_info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * dist_info.world_size if dist_info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj, dist_info: DistInfo):
    """Rank 0's value of a small picklable object, on every rank."""
    if not dist_info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist_info: DistInfo) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()

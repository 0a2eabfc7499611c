"""Data-parallel training on torch.distributed, launched by torchrun (or `prmkd ... --nproc N`).

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): gloo on a
CPU, nccl on CUDA. Without that environment everything here is a no-op for one process, so single-process runs
behave exactly as before. `training.fit` uses it to give each rank its shard of every global batch, to weight each
rank's loss by its share of the batch's instances (so the averaged gradient is the one-process gradient of the
whole batch), to validate on rank 0 only and share the decision, and to write checkpoints from rank 0 (holding
every rank's random number generators, so that a resumed run continues exactly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env() -> Dist:
    """This process's place, from torchrun's environment (one process when there is none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> Dist:
    """Join the process group (once per process): gloo on a CPU, nccl on CUDA."""
    d = env()
    if d.active:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return d


def device_for(name: str, d: Dist):
    """The device of this rank: cuda:LOCAL_RANK when training on CUDA with several ranks."""
    from .env import resolve_device

    dev = resolve_device(name)
    if d.active and dev.type == "cuda":
        import torch

        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    return dev


def barrier() -> None:
    if env().active:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj):
    """`obj` of rank 0, on every rank."""
    if not env().active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    d = env()
    if not d.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def all_sum(t):
    """The sum of tensor `t` over ranks (in place)."""
    if env().active:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def all_cat(t):
    """1-D tensors of every rank concatenated in rank order (lengths may differ)."""
    d = env()
    if not d.active:
        return t
    import torch
    import torch.distributed as dist

    n = torch.tensor([len(t)], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(d.world)]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    padded = torch.zeros(top, dtype=t.dtype, device=t.device)
    padded[:len(t)] = t
    parts = [torch.zeros_like(padded) for _ in range(d.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])


def launch(nproc: int, argv: list[str]) -> int:
    """Run `prmkd ARGV` in `nproc` processes through torchrun (standalone, on this machine); its exit status."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "prmkd.cli", *argv]
    return subprocess.run(cmd).returncode

"""Process-group plumbing for data-parallel training, kept out of the trainer.

Two launchers start several processes of the same entry point:

* ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
  and ``MASTER_PORT``;
* Hydra's submitit launcher (``hydra/launcher=slurm`` or ``local``) starts
  ``tasks_per_node`` tasks on each node, described by ``submitit.JobEnvironment``;
  the rendezvous address is the job's first host and the port is derived from
  the job id, so every task computes the same one without talking first.

With neither, or with a single process, no process group is created and every
helper below returns its input unchanged: the single-process path is exactly
the plain one. NCCL carries CUDA tensors, gloo carries CPU tensors (and all of
them on a machine without GPUs).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# The other ranks wait in a collective while rank 0 alone builds the data caches
# (first run on a corpus) or validates; both can outlast torch's default timeout.
TIMEOUT = datetime.timedelta(hours=1)

# Overrides for torchrun's ranks other than 0: rank 0 owns the run folder (the
# others learn its path from it), so they must not create folders or log files
# of their own; their Hydra ``${now:...}`` may fall in a different second.
QUIET_HYDRA = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


@dataclass(frozen=True)
class Launch:
    """This process's place in the job, as its launcher describes it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def master_port(job_id: str) -> int:
    """A port in 20000-39999 that every task of a job derives alike, and concurrent jobs most likely do not share."""
    return 20000 + zlib.crc32(job_id.encode()) % 20000


def launch() -> Launch:
    """Rank, local rank and world size from torchrun's or submitit's environment (one process when neither)."""
    env = os.environ
    if "WORLD_SIZE" in env:  # torchrun, or anything else that follows its convention
        return Launch(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]))
    if "SUBMITIT_EXECUTOR" in env:
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            env.setdefault("MASTER_ADDR", job.hostnames[0])
            env.setdefault("MASTER_PORT", str(master_port(job.job_id)))
            return Launch(job.global_rank, job.local_rank, job.num_tasks)
    return Launch()


def local_world_size() -> int:
    """How many of the job's processes share this node (they divide its cores): 1 without a launcher."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    if "SUBMITIT_EXECUTOR" in env:
        import submitit

        job = submitit.JobEnvironment()
        return max(1, job.num_tasks // max(1, job.num_nodes))
    return 1


def torchrun_rank() -> int:
    """This process's rank when torchrun started it, else 0 (read before Hydra starts)."""
    return int(os.environ.get("RANK", 0)) if "WORLD_SIZE" in os.environ else 0


def launched_by_submitit() -> bool:
    return "SUBMITIT_EXECUTOR" in os.environ


@contextlib.contextmanager
def process_group() -> Iterator[Launch]:
    """Join the job's process group for the duration of the block (nothing to join for one process)."""
    spec = launch()
    if spec.world_size == 1:
        yield spec
        return
    device = torch.device("cuda", spec.local_rank) if torch.cuda.is_available() else None
    if device is not None:
        torch.cuda.set_device(device)
    backend = "gloo" if device is None else "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, rank=spec.rank, world_size=spec.world_size,
                            timeout=TIMEOUT, device_id=device)
    try:
        yield spec
    finally:
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU for a bare ``cuda`` device (``process_group`` made it the current one)."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_sum(value: float) -> float:
    if not active():
        return value
    total = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(total)
    return total.item()


def mean(value: float) -> float:
    return all_sum(value) / world_size()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (building caches), then the others (reading them)."""
    if rank() != 0:
        barrier()
    yield
    if rank() == 0:
        barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to train through: DistributedDataParallel around ``model`` in a process group, else ``model``."""
    if not active():
        return model
    # The only buffers (sinusoidal positions) are constants: no need to sync them at every forward.
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   forward_sync_buffers=False)


def no_sync(module: torch.nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce for this backward when ``skip`` (a micro-step before the last)."""
    if skip and isinstance(module, DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()

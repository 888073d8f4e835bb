"""Device, threads, seeding and provenance: the facts a result must carry."""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from experiments.core.allocator import malloc_in_use, preload_hint
from experiments.core.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(name: str, setting: str = "trainer.device") -> torch.device:
    """The device ``name`` asks for (``auto``: CUDA where there is one); one this machine lacks is a ``ConfigError``
    naming ``setting``, the option that asked for it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"{setting}={name}, but this torch {torch.__version__} sees no CUDA GPU (a CPU-only "
                              f"build, or no GPU visible): use {setting}=cpu or auto, and leave out trainer=gpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{setting}={name}, but this machine has {count} CUDA GPU(s): cuda:0 to "
                              f"cuda:{count - 1}")
    return device


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(cores: int, ranks_here: int, others_busy: float) -> int:
    """Threads for one process: its share of ``cores`` among ``ranks_here`` ranks, less the cores others keep busy.

    ``others_busy`` is in cores (1.0: one core's worth of CPU time per second);
    a core counts as taken once other processes use half of it or more.
    """
    share = max(1, cores // max(1, ranks_here))
    return max(1, min(share, cores - math.floor(others_busy + 0.5)))


def busy_ticks(proc_stat: str, cpus: set[int]) -> int:
    """Clock ticks the ``cpus`` spent busy since boot, from the text of /proc/stat (idle and iowait left out)."""
    busy = 0
    for line in proc_stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy


def own_ticks() -> int:
    """Clock ticks this process (all its threads) has run, user + system, from /proc/self/stat."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15, counted from the pid


class FreeCores:
    """How many of this process's cores other processes leave free, measured from /proc between two calls.

    Behind ``trainer.num_threads=0`` (auto). Threads that wait for a core held
    by another process stall every one of torch's parallel regions (issue 16:
    on 2 cores beside one busy process, 2 threads made 306 target tokens/s and
    1 thread 804), so the thread count follows the cores actually free. Our own
    CPU time is subtracted, so the count does not chase itself. Where there is
    no /proc (not Linux), nothing is measured and the share of the cores is used.
    """

    def __init__(self, ranks_here: int = 1) -> None:
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except AttributeError:
            self.cpus = set(range(os.cpu_count() or 1))
        self.ranks_here = ranks_here
        self.others = 0.0  # cores' worth other processes used in the last window
        self.last = self._sample()

    def _sample(self) -> tuple[float, int, int] | None:
        try:
            return time.monotonic(), busy_ticks(Path("/proc/stat").read_text(), self.cpus), own_ticks()
        except (OSError, ValueError, IndexError):
            return None

    def threads(self, settle: float = 0.0) -> int:
        """The thread count for the window since the last call (after sleeping ``settle`` seconds, if given)."""
        if settle:
            time.sleep(settle)
        now = self._sample()
        if now is not None and self.last is not None and now[0] > self.last[0]:
            ticks = (now[1] - self.last[1]) - (now[2] - self.last[2])
            self.others = max(0.0, ticks / os.sysconf("SC_CLK_TCK") / (now[0] - self.last[0]))
        self.last = now
        return threads_for(len(self.cpus), self.ranks_here, self.others)


def set_threads(num_threads: int, ranks_here: int = 1) -> int:
    """Set torch's intra-op threads: ``num_threads``, or for 0 the cores free now (``FreeCores``); returns the count."""
    threads = num_threads or FreeCores(ranks_here).threads(settle=0.25)
    torch.set_num_threads(threads)
    return threads


ONEDNN_CACHE_CAPACITY = 16384  # matmul kernels oneDNN keeps; its own default is 1024


def widen_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> None:
    """Let oneDNN keep the kernels of ``capacity`` matmul shapes instead of 1024, unless the environment says.

    On a CPU torch runs bf16 matmuls through oneDNN, which compiles a kernel
    for each new shape (on the AMX Xeon longer than the matmul it serves)
    and caches the last ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``. A Multi30k
    epoch of the GRU meets thousands of shapes (the rows each decoder step
    runs, each batch's token count in every weight gradient), so with 1024
    the cache is emptied before a shape comes back and every epoch compiles
    them all again. A wider cache costs memory (GBs for the GRU) and changes
    no number a run computes: ``python -m experiments.bench.onednn_cache``
    measures both (results/onednn_cache.md). oneDNN reads the variable
    at its first kernel, so this runs before any model does; setting
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` yourself (e.g. 1024, oneDNN's default)
    overrides it.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def start_on_cpu(say: bool) -> None:
    """What a CPU run sets up before its first matmul: oneDNN's wider kernel cache (``widen_onednn_cache``); with
    ``say``, it logs how to start on tcmalloc where it runs on the system's malloc (experiments/core/allocator.py)."""
    widen_onednn_cache()
    if say and (hint := preload_hint()):
        log.info(hint)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, str | int]:
    info: dict[str, str | int] = {"cpu": cpu_name(), "cores": usable_cores(), "torch": torch.__version__,
                                  "device": device.type, "malloc": malloc_in_use()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info

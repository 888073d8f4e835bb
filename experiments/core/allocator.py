"""Which malloc a process runs on, and how a launcher gives the processes it starts tcmalloc.

Why: a training update on a CPU allocates its large tensors afresh (the
logits and their gradient, the embeddings' gradients, each step's saved
states), and glibc's malloc hands allocations above its mmap threshold
back to the kernel when they are freed, so the next update's tensors are
new pages again, each faulted in and zeroed by the kernel before torch
writes it. tcmalloc (gperftools, Debian's
``libtcmalloc-minimal4``) keeps freed memory for the next allocation.
``python -m experiments.bench.allocator`` measures what that gives (the same
runs side by side, one thread each, as the grid trains: results/allocator.md);
the allocator changes where a tensor lives, not what is computed, and the
runs it compares log the same losses.

A process cannot change its malloc once it runs: the library has to be
loaded first, with ``LD_PRELOAD``. So the launchers of this repo (``s2s-grid``
for its jobs, the allocator bench for its runs) set it for the processes
they start; ``s2s-train`` started by hand runs on what its environment says,
records it (``hardware.malloc`` in results.json) and logs how to preload it.
"""

from __future__ import annotations

import ctypes.util
from pathlib import Path

from experiments.core.errors import UserError

CHOICES = ("auto", "tcmalloc", "system")
TCMALLOC_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")  # gperftools' malloc alone, or with its profilers
INSTALL_HINT = ("install gperftools' tcmalloc (Debian/Ubuntu: apt-get install libtcmalloc-minimal4; conda: "
                "conda install gperftools)")


def find_tcmalloc() -> str | None:
    """The tcmalloc library the dynamic loader would find (e.g. ``libtcmalloc_minimal.so.4``), or None."""
    for name in TCMALLOC_LIBRARIES:
        if found := ctypes.util.find_library(name):
            return found
    return None


def malloc_in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """``tcmalloc`` or ``jemalloc`` where that library is mapped into this process, else ``system``."""
    try:
        mapped = maps.read_text()
    except OSError:  # not Linux: whatever the platform's malloc is
        return "system"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in mapped:
            return name
    return "system"


def preload_env(env: dict[str, str], choice: str) -> tuple[dict[str, str], str]:
    """``env`` for a process to start with ``choice`` of malloc, and the malloc it gets (what to print).

    ``auto``: tcmalloc where the loader finds it, else the system's; ``tcmalloc``: tcmalloc or a UserError
    saying what to install; ``system``: the environment as it is. A tcmalloc already in ``LD_PRELOAD`` is
    kept either way.
    """
    if choice not in CHOICES:
        raise UserError(f"unknown allocator {choice!r}: expected one of {', '.join(CHOICES)}")
    preloaded = env.get("LD_PRELOAD", "")
    if "tcmalloc" in preloaded:
        return dict(env), f"tcmalloc ({preloaded}, from LD_PRELOAD)"
    if choice == "system":
        return dict(env), "system"
    library = find_tcmalloc()
    if library is None:
        if choice == "tcmalloc":
            raise UserError(f"--allocator tcmalloc: no tcmalloc library found ({' or '.join(TCMALLOC_LIBRARIES)}); "
                            f"{INSTALL_HINT}, or use --allocator system")
        return dict(env), "system (no tcmalloc found: " + INSTALL_HINT + ")"
    return {**env, "LD_PRELOAD": " ".join(filter(None, (library, preloaded)))}, f"tcmalloc ({library})"


def preload_hint() -> str | None:
    """For a process on the system malloc where tcmalloc is installed: how to start it on tcmalloc; else None."""
    if malloc_in_use() != "system" or (library := find_tcmalloc()) is None:
        return None
    return (f"malloc: the system's; tcmalloc is installed: start with LD_PRELOAD={library} to train faster on a CPU "
            "(docs/performance.md#the-memory-allocator; s2s-grid does this for its jobs)")

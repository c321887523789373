"""How many CPU threads a command's dense linear algebra uses: one rule, one option, one
message, for every command that computes outside the training engine's workers (which run
one thread each, whatever this says).

    from memlab import threads
    choice = threads.choose(args.threads)   # --threads N, else the rule below
    threads.use(choice.count)               # torch, OpenMP and the BLAS pools
    print(choice.message)                   # threads: 2 (the cores ...; --threads N ...)

The rule, first that applies:

1. ``--threads N`` (1 to 1024): N, as given (more than the cores is allowed, and said).
2. ``OMP_NUM_THREADS`` set in the environment: that count (a deliberate choice too).
3. The cores this process may use (its CPU affinity, capped by a cgroup CPU quota), less
   the ones other work keeps busy, at least one: busy is the smaller of the 1-minute load
   average and the processes running right now (both are machine-wide; scaled to this
   process's share of the machine's cores). Both must show the load, so a finished burst
   (a high average, nothing running) does not cost threads and neither does a blip.

Why the load counts: an OpenMP/BLAS thread that waits for its siblings spins, and on an
oversubscribed core it spins through the time slices the others needed: ``memlab spectra``
on MiniLM used 36-51 CPU seconds with 2 threads on a 2-core machine busy with 8 other
processes, 10-11 with 1 thread (9-10 on the same machine without them).

The count can change the last bits of a parallel floating-point reduction; the computations
that promise the same bits on any machine (the engine's training, elasticity's similarities)
pin one thread themselves. Layer: imports only ``validate`` and ``errors`` (torch and
threadpoolctl when applying).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from memlab import validate
from memlab.errors import ConfigError

FLAG = "--threads"
HELP = ("CPU threads for this command's linear algebra (default: the cores this process "
        "may use, fewer when other work keeps them busy; the count is printed)")
FIX = ("give a positive number of threads, e.g. --threads 1, or leave it out for the cores "
       "this process may use")


@dataclass(frozen=True)
class Choice:
    """A thread count and why: ``message`` is the line a command prints."""

    count: int
    reason: str

    @property
    def message(self) -> str:
        change = "" if self.reason.startswith(FLAG) else f"; {FLAG} N to change"
        return f"threads: {self.count} ({self.reason}{change})"


def parse(value: object, name: str = FLAG) -> int:
    """A thread count as typed (``"2"``) or given (2): an integer in [1, 1024], else a
    one-line :class:`ConfigError` naming the fix."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer in [1, 1024], got {value!r}; "
                              f"{FIX}") from None
    return validate.threads(value, name, fix=FIX)


def rule(requested: object = None, *, cores: int, busy: float = 0.0,
         environment: dict[str, str] | None = None) -> Choice:
    """The count for ``requested`` (``--threads``; None: not given) on ``cores`` usable
    cores of which ``busy`` (a number of cores) are kept busy by other work."""
    if requested is not None:
        count = parse(requested)
        more = f"; more than the {cores} cores this process may use" if count > cores else ""
        return Choice(count, f"{FLAG} {count}{more}")
    text = (environment or {}).get("OMP_NUM_THREADS", "").strip()
    if text:
        return Choice(parse(text, "OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    cores = max(1, int(cores))
    count = max(1, min(cores, math.floor(cores - busy + 0.5)))
    if count == cores:
        return Choice(count, "the cores this process may use")
    return Choice(count, f"{cores} cores, {busy:.1f} of them busy with other work: "
                         "the idle ones, at least 1")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs of the cgroup's quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), None if none."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if quota <= 0 else quota / period
    return None


def _running_now(samples: int = 5, pause: float = 0.01) -> float | None:
    """Runnable tasks on the machine besides this one (median of a few reads of
    /proc/stat's procs_running), None where the system does not say."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as stat:
                for line in stat:
                    if line.startswith("procs_running"):
                        counts.append(int(line.split()[1]) - 1)  # less this process
                        break
        except (OSError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(pause)
    return float(statistics.median(counts)) if counts else None


def busy_cores(cores: int) -> float:
    """Cores of this process's ``cores`` that other work keeps busy (see the rule)."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    running = _running_now()
    busy = average if running is None else min(average, running)
    machine = max(os.cpu_count() or cores, cores)
    return max(0.0, busy) * cores / machine


def choose(requested: object = None) -> Choice:
    """The count for this command (:func:`rule` with this machine's cores and load); a bad
    ``requested`` raises a one-line :class:`ConfigError`."""
    if requested is not None:
        return rule(requested, cores=usable_cores())
    environment = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    if environment["OMP_NUM_THREADS"].strip():
        return rule(None, cores=usable_cores(), environment=environment)
    cores = usable_cores()
    return rule(None, cores=cores, busy=busy_cores(cores) if cores > 1 else 0.0)


def _limit_pools(count: int):
    """Limit the OpenMP and BLAS pools of the libraries loaded now (threadpoolctl, a
    scikit-learn dependency); returns its handle (``restore_original_limits``) or None."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=count)


def use(count: int) -> None:
    """Set this process's thread count for good (a command's choice): torch's intra-op
    threads (its OpenMP and MKL) and the OpenMP and BLAS pools of the libraries loaded
    (numpy's and scipy's OpenBLAS: scipy.linalg is loaded first so that it is among them).
    The environment is left alone: child processes choose their own (the engine's workers
    run one thread each)."""
    import scipy.linalg  # noqa: F401
    import torch

    count = parse(count)
    _limit_pools(count)
    torch.set_num_threads(count)


@contextlib.contextmanager
def limited(count: int | None) -> Iterator[None]:
    """``count`` threads inside the block, the previous counts after it (None: leave them
    as they are). For library calls (``Execution(threads=N)``)."""
    if count is None:
        yield
        return
    import scipy.linalg  # noqa: F401
    import torch

    count = parse(count, "threads")
    previous = torch.get_num_threads()
    pools = _limit_pools(count)  # (first: what it restores must be the caller's counts)
    torch.set_num_threads(count)
    try:
        yield
    finally:
        if pools is not None:
            pools.restore_original_limits()
        torch.set_num_threads(previous)

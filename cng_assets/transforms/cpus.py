"""How many CPUs this process may use: on the cluster a pod's CPU limit is a cgroup quota, which neither
os.cpu_count() nor the affinity mask shows (both see the whole node)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in µs, or "max <period>"


def usable_cpus(cap: int = 4, cpu_max: Path = CPU_MAX) -> int:
    """CPUs this process can keep busy: its affinity mask, bounded by a cgroup v2 quota (`cpu.max`), at most `cap`."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return max(1, min(n, cap))

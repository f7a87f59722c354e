"""Memory readings for the benchmarks, from the process's own ``/proc/self/status``.

``VmHWM`` rather than ``ru_maxrss`` for the peak: Linux keeps the forked copy of the parent in
a child's ``ru_maxrss`` across ``exec``, so a worker started by a driver that holds a model
would report the driver's size. ``ru_maxrss`` is the fallback where /proc is missing.
"""

from __future__ import annotations

import resource
from pathlib import Path


def status_bytes(field: str) -> int:
    """One ``/proc/self/status`` size (``VmRSS``, ``VmHWM``, ``RssAnon``...) in bytes; 0 when
    the field or /proc is missing."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    """Peak resident set size of this process's own memory, in bytes."""
    return status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    """Resident set size now, in bytes (the peak where /proc is missing)."""
    return status_bytes("VmRSS") or peak_rss()

"""How much memory the machine has, and a check of a job's estimated need against it.

Read from ``/proc/meminfo`` (Linux: ``MemTotal``, ``MemAvailable``), else ``os.sysconf`` (the
physical pages; the available ones where the system reports them). Where neither is known the
check passes: it guards against jobs that cannot fit, it does not make them fit.
"""

from __future__ import annotations

import os
import warnings

from ct2x.errors import CT2XError


class MemoryNeedWarning(UserWarning):
    """A job's estimated memory need is more than the memory free now (it may swap or be killed)."""


def system_memory() -> tuple[int | None, int | None]:
    """``(total, available)`` physical memory in bytes; ``None`` where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in stream if line.count(":") == 1}
        return fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        pass

    def pages(name: str) -> int | None:
        try:
            value = os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
        return value if value > 0 else None

    return pages("SC_PHYS_PAGES"), pages("SC_AVPHYS_PAGES")


def _gb(value: int) -> str:
    return f"{value / 1e9:,.1f} GB"


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse a job whose estimated need ``needed`` (bytes) is more than the machine's memory, and warn
    (:class:`MemoryNeedWarning`) when it is more than the memory available now.

    ``what`` names the job in the message (e.g. ``"rendering 5 views of 256 x 256 pixels"``),
    ``fix`` says how to need less (e.g. ``"use a smaller --size"``).
    """
    total, available = system_memory()
    if total is not None and needed > total:
        raise CT2XError(f"{what} needs about {_gb(needed)} of memory, but this machine has {_gb(total)}: {fix}")
    if available is not None and needed > available:
        warnings.warn(
            MemoryNeedWarning(
                f"{what} needs about {_gb(needed)} of memory, more than the {_gb(available)} free now: it may "
                f"swap or be stopped by the system; close other programs, or {fix}"
            ),
            stacklevel=3,
        )

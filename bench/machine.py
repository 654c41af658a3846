"""The line every benchmark prints first: the machine it ran on and how busy that was as it began (issue 25: figures
are compared only with the CPU count and the load they were taken at)."""

from __future__ import annotations

import os


def machine_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"machine: {os.cpu_count()} CPUs, load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"

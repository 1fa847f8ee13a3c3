"""One line describing the machine a benchmark ran on (CPU model, cores, library versions)."""

import os
import platform
from pathlib import Path


def describe(**versions):
    """'CPU model, N CPUs, Python x.y.z[, name version …]' for the JSON lines."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    parts = [model, f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}"]
    parts += [f"{name} {version}" for name, version in versions.items()]
    return ", ".join(parts)

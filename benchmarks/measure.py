"""What the benchmarks measure the same way: a free loopback port, a process's CPU seconds and
peak RSS (from /proc, so Linux; None elsewhere), and percentiles."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, name: str,
                   timeout: float = 30.0) -> None:
    """Until the process just started accepts connections on ``port``; RuntimeError (and the
    process killed) if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{name} did not start on port {port}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a running process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> Optional[float]:
    """VmHWM of a running process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by rank; NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

"""Peak resident memory of a process tree, read from /proc (Linux)."""

from __future__ import annotations

import os


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_bytes(pid: int) -> dict[int, int]:
    """VmHWM (peak resident set) of each process in the tree rooted at pid."""
    return {p: _status_kb(p, "VmHWM") * 1024 for p in tree(pid)}


def rss_bytes(pid: int) -> dict[int, int]:
    return {p: _status_kb(p, "VmRSS") * 1024 for p in tree(pid)}


def is_linux() -> bool:
    return os.path.exists("/proc/self/status")

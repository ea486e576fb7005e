"""The one interface module to the host filesystem (/proc and /sys under a configurable root).

Every read and write of a host file goes through ``HostFS``; paths are relative to the root
(``proc/sys/vm/swappiness``) and a path that is absolute, contains ``..`` or resolves outside the
root is refused with ``HostPathError``. Tests hand in ``HostFS(Path("/"))`` for this machine's
real files, or a temp dir for what this machine lacks (cpufreq, thermal).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import HostPathError


class HostFS:
    """Read and write text files below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._real_root = Path(os.path.realpath(self.root))

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    def path(self, relative: str) -> Path:
        """The absolute path of ``relative``; refuses anything that would leave the root."""
        parts = PurePosixPath(relative)
        if parts.is_absolute() or ".." in parts.parts or not parts.parts:
            raise HostPathError(f"{relative!r}: host paths must be relative and must not contain '..'")
        full = self.root / parts
        real = Path(os.path.realpath(full))
        if real != self._real_root and self._real_root not in real.parents:
            raise HostPathError(f"{relative!r}: resolves to {real}, outside the host root {self.root}")
        return full

    def exists(self, relative: str) -> bool:
        return self.path(relative).exists()

    def read(self, relative: str) -> str:
        """The file's text with surrounding whitespace stripped."""
        return self.path(relative).read_text().strip()

    def write(self, relative: str, value: str) -> None:
        """Write ``value`` in one write(2), as sysctl and sysfs files expect."""
        with open(self.path(relative), "w") as handle:
            handle.write(value)

    def list(self, relative: str) -> list[str]:
        """Names in a directory, sorted; empty if it does not exist."""
        try:
            return sorted(os.listdir(self.path(relative)))
        except FileNotFoundError:
            return []

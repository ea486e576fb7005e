"""Host-tier fixtures: real /proc/sys and /sys on this machine, every value put back afterwards.

``saved_host_files`` snapshots files and writes them back in a ``finally``, whatever the test did;
``loop_device`` makes a loop device on a sparse file in tmp (never a disk in use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubetune_agent.hostfs import HostFS
from kubetune_agent.journal import Journal
from kubetune_agent.knobs import bracketed

ROOT = HostFS(Path("/"))


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("host tests change kernel settings and need root")


@pytest.fixture
def host():
    _require_root()
    return ROOT


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "journal")


@pytest.fixture
def saved_host_files():
    """Call with relative paths; their values are restored at the end even if the test fails."""
    _require_root()
    saved: dict[str, str] = {}

    def save(*paths: str) -> dict[str, str]:
        for path in paths:
            value = ROOT.read(path)
            saved.setdefault(path, bracketed(value) if path.endswith("/scheduler") else value)
        return {path: saved[path] for path in paths}

    try:
        yield save
    finally:
        problems = []
        for path, value in saved.items():
            try:
                current = ROOT.read(path)
                if (bracketed(current) if path.endswith("/scheduler") else current) != value:
                    ROOT.write(path, value)
            except OSError as error:
                problems.append(f"{path}: {error}")
        assert not problems, f"could not restore host values: {problems}"


@pytest.fixture
def loop_device(tmp_path, saved_host_files):
    """A loop device (name, e.g. ``loop3``) over a 64 MiB sparse file; detached afterwards."""
    if not shutil.which("losetup") or not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices on this machine (losetup or /dev/loop-control missing)")
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    created = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a loop device here: {created.stderr.strip()}")
    device = Path(created.stdout.strip()).name
    try:
        saved_host_files(f"sys/block/{device}/queue/scheduler", f"sys/block/{device}/queue/read_ahead_kb")
        yield device
    finally:
        subprocess.run(["losetup", "--detach", f"/dev/{device}"], check=False)

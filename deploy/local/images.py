#!/usr/bin/env python3
"""Container images built on this machine without a Docker engine or a registry.

    python deploy/local/images.py build [base|project|demo-service|all]   # prints one archive path per line

- base: Debian (debootstrap --variant=minbase) with python3, python3-venv, python-is-python3 and
  ca-certificates: the stand-in for python:3.11-slim (bookworm's Python is 3.11), committed with buildah.
- project: the repository's Dockerfile, unchanged, built by Debian's buildah (vfs storage, chroot
  isolation) with `--build-arg PYTHON_IMAGE=<base>`; tagged PROJECT_IMAGE, the chart's default
  image (repository kubetune/kubetune, tag = the chart's appVersion).
- demo-service: deploy/local/demo-service/Dockerfile on the same base; tagged DEMO_SERVICE_IMAGE.

Each is written as an OCI archive for `ctr -n k8s.io images import <archive>`: its index names the
image with `io.containerd.image.name` (containerd's name) and the tag in `org.opencontainers.image.ref.name`.

Cache: ${KUBETUNE_CACHE:-~/.cache/kubetune}/images/<name>-<key>.tar, where the key hashes what the image
is made of: for the base the Debian suite, its package list and this recipe's revision; for the others
the Dockerfile, .dockerignore, every file its COPY instructions take (filtered by .dockerignore), the
tag, the build args that change content, and the base's key. An archive that exists is never rebuilt;
an archive is written under a temporary name and renamed, so a failed or killed build leaves none.
Logs: <cache>/images/logs/<name>-<key>.log. Builds hold <cache>/images/.lock, so concurrent callers
(a test session and the command line) build once and share the result.

Building needs root (debootstrap, buildah's chroot isolation); buildah and debootstrap are installed
from Debian's archive when missing. The base comes from the Debian mirror apt already uses here.
RUN steps reach PyPI through this machine's network and trust store: a pip.conf naming the host's CA
bundle (and the host's index settings) is mounted for the build only and is not part of any image.
"""

from __future__ import annotations

import argparse
import configparser
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE_REVISION = 2  # bump when the way images are built changes what they contain

BASE_SUITE = "bookworm"  # Python 3.11, as the Dockerfile's default python:3.11-slim
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Removed from the debootstrapped tree: package caches, documentation, logs, device nodes (a runtime
# provides /dev), the host's resolver and hostname.
BASE_TRIM = ("var/cache/apt/*", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*",
             "usr/share/info/*", "usr/share/locale/*", "var/log/*", "dev/*", "tmp/*", "etc/resolv.conf",
             "etc/hostname")
# Empty files in the base: what RUN steps get mounted there (the runtime's resolver, hosts and hostname;
# the build machine's pip settings) would otherwise leave an empty mount point in every image's layer.
BASE_MOUNT_POINTS = ("etc/resolv.conf", "etc/hostname", "etc/hosts", "etc/pip.conf")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_TOOLS = {"buildah": "buildah", "debootstrap": "debootstrap"}  # command -> Debian package


def chart_app_version() -> str:
    chart = (REPO / "deploy/helm/kubetune/Chart.yaml").read_text()
    return re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.M).group(1)


VERSION = chart_app_version()
PROJECT_IMAGE = f"docker.io/kubetune/kubetune:{VERSION}"
DEMO_SERVICE_IMAGE = f"docker.io/kubetune/demo-service:{VERSION}"


class ImageBuildError(RuntimeError):
    """A build step failed; the message is one line naming the step and the log."""


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune")) / "images"


def say(message: str) -> None:
    print(f"kubetune images: {message}", file=sys.stderr, flush=True)


# --- what an image is made of ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """A Dockerfile build: `name` names the archive, `ref` the image inside it."""

    name: str
    ref: str
    context: Path
    dockerfile: Path
    build_args: dict[str, str] = field(default_factory=dict)  # args that change content (hashed)


def project_recipe(repo: Path = REPO) -> Recipe:
    return Recipe("kubetune", PROJECT_IMAGE, repo, repo / "Dockerfile", {"VERSION": VERSION})


def demo_service_recipe(repo: Path = REPO) -> Recipe:
    context = repo / "deploy/local/demo-service"
    return Recipe("demo-service", DEMO_SERVICE_IMAGE, context, context / "Dockerfile")


def dockerfile_instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in map(str.strip, text.splitlines()):
        if line and not line.startswith("#"):
            kind, _, arg = line.partition(" ")
            yield kind.upper(), arg.strip()


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths COPY/ADD take (not those copied from another stage)."""
    sources = []
    for kind, arg in dockerfile_instructions(dockerfile):
        if kind not in ("COPY", "ADD"):
            continue
        words = json.loads(arg) if arg.startswith("[") else arg.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def ignore_patterns(context: Path) -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (negated, regex) in file order; the last pattern matching a path decides."""
    path = context / ".dockerignore"
    patterns = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?"
                        else re.escape(part) for part in re.split(r"(\*\*|\*|\?)", glob))
        patterns.append((negated, re.compile(regex.replace(".*/", "(.*/)?") + "$")))
    return patterns


def is_ignored(relative: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: a path is excluded when it or one of its parent directories is."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in patterns:
        if any(pattern.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def context_files(recipe: Recipe) -> list[Path]:
    """Every file the build copies from its context, sorted; __pycache__ never counts."""
    patterns = ignore_patterns(recipe.context)
    files = set()
    for source in copy_sources(recipe.dockerfile):
        root = recipe.context / source
        candidates = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in candidates:
            relative = path.relative_to(recipe.context).as_posix()
            if "__pycache__" not in path.parts and not is_ignored(relative, patterns):
                files.add(path)
    return sorted(files)


def digest_files(sha: "hashlib._Hash", root: Path, files: list[Path]) -> None:
    for path in files:
        sha.update(f"{path.relative_to(root).as_posix()}\0{os.access(path, os.X_OK)}\0".encode())
        sha.update(hashlib.sha256(path.read_bytes()).digest())


def base_key() -> str:
    document = {"suite": BASE_SUITE, "packages": sorted(BASE_PACKAGES), "trim": BASE_TRIM,
                "mount_points": BASE_MOUNT_POINTS, "recipe": RECIPE_REVISION}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:12]


def recipe_key(recipe: Recipe, base: str) -> str:
    sha = hashlib.sha256(json.dumps({"ref": recipe.ref, "args": recipe.build_args, "base": base,
                                     "recipe": RECIPE_REVISION}, sort_keys=True).encode())
    extra = [p for p in (recipe.dockerfile, recipe.context / ".dockerignore") if p.exists()]
    digest_files(sha, recipe.context, extra + context_files(recipe))
    return sha.hexdigest()[:12]


def base_ref(key: str) -> str:
    return f"localhost/kubetune-base:{key}"


# --- running the build -------------------------------------------------------------------------------


class Step:
    """Runs commands with their output appended to one log; a failure raises ImageBuildError."""

    def __init__(self, name: str, log: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} building {name} ===\n")

    def run(self, what: str, command: list[str], timeout: float = 1800, capture: bool = False, **kwargs) -> str:
        """Run `command`; its output goes to the log as it comes (or is returned, with `capture`)."""
        with open(self.log, "a") as f:
            f.write(f"\n$ {' '.join(map(str, command))}\n")
            f.flush()
            try:
                done = subprocess.run(command, stdout=subprocess.PIPE if capture else f, stderr=f, text=True,
                                      timeout=timeout, **kwargs)
            except subprocess.TimeoutExpired:
                raise ImageBuildError(f"{self.name}: {what} timed out after {timeout:.0f} s; log: {self.log}")
            if capture:
                f.write(done.stdout)
        if done.returncode != 0:
            raise ImageBuildError(f"{self.name}: {what} failed (exit {done.returncode}); log: {self.log}")
        return done.stdout or ""


def tool_path(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def ensure_tools(step: Step) -> None:
    """Root, and buildah + debootstrap (installed from Debian's archive when missing)."""
    if os.geteuid() != 0:
        raise ImageBuildError("building images needs root (debootstrap and buildah's chroot isolation): "
                              "run as root or with sudo")
    missing = sorted({package for command, package in APT_TOOLS.items() if not tool_path(command)})
    if not missing:
        return
    say(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another setup script may be installing at the same time
    step.run("apt-get update", ["apt-get", *wait, "update", "-qq"], timeout=600, env=env)
    step.run(f"apt-get install {' '.join(missing)}",
             ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=900, env=env)


def debian_mirror(suite: str = BASE_SUITE) -> str:
    """The mirror apt uses here for `suite` (or any Debian suite), from sources.list and *.sources;
    KUBETUNE_DEBIAN_MIRROR overrides."""
    if os.environ.get("KUBETUNE_DEBIAN_MIRROR"):
        return os.environ["KUBETUNE_DEBIAN_MIRROR"]
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        for line in (path.read_text().splitlines() if path.exists() else []):
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("URIs"):
                entries += [(uri, fields.get("Suites", "").split()) for uri in fields["URIs"].split()]
    for uri, suites in entries:
        if suite in suites:
            return uri.rstrip("/")
    debian = [uri for uri, _ in entries if "debian" in uri and "security" not in uri]
    return debian[0].rstrip("/") if debian else DEFAULT_MIRROR


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf that first detaches anything mounted inside (a killed debootstrap leaves /proc, /sys),
    so it never deletes through a mount into the host."""
    if not path.exists():
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_under(path):
        raise ImageBuildError(f"cannot remove {path}: mounts remain under it ({mounts_under(path)[0]})")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise ImageBuildError(f"cannot remove {path}: remove it by hand (rm -rf) and build again")


def remove_path(path: Path) -> None:
    """A file, symlink or directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        path.unlink(missing_ok=True)


class Buildah:
    """buildah with a private vfs store in a work directory (removed afterwards)."""

    def __init__(self, work: Path, step: Step) -> None:
        self.work, self.step = work, step
        self.policy = work / "policy.json"  # local archives only: accept unsigned images
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        (work / "tmp").mkdir(exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(work / "tmp"), "BUILDAH_ISOLATION": "chroot"}

    def __call__(self, what: str, *args: str, timeout: float = 1800, capture: bool = False) -> str:
        command = ["buildah", "--root", str(self.work / "storage"), "--runroot", str(self.work / "run"),
                   "--storage-driver", "vfs", *args]
        return self.step.run(what, command, timeout=timeout, capture=capture, env=self.env).strip()

    def load(self, archive: Path, ref: str) -> None:
        image_id = self("load the base image", "pull", "--quiet", "--signature-policy", str(self.policy),
                        f"oci-archive:{archive}", capture=True).splitlines()[-1]
        self("tag the base image", "tag", image_id, ref)

    def export(self, ref: str, archive: Path) -> None:
        layout = self.work / "layout"
        self("export", "push", "--quiet", "--signature-policy", str(self.policy), ref, f"oci:{layout}:{ref}")
        write_archive(layout, ref, archive)


def write_archive(layout: Path, ref: str, archive: Path) -> None:
    """Tar an OCI layout into `archive` (atomically), naming the image for containerd and the OCI spec."""
    index = json.loads((layout / "index.json").read_text())
    tag = ref.rsplit(":", 1)[1]
    for manifest in index["manifests"]:
        manifest["annotations"] = {**manifest.get("annotations", {}), "io.containerd.image.name": ref,
                                   "org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps(index))
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w") as tar:
            for path in sorted(layout.rglob("*"), key=lambda p: (p.relative_to(layout).as_posix() != "oci-layout", p)):
                info = tar.gettarinfo(path, path.relative_to(layout).as_posix())
                info.uid = info.gid = info.mtime = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.rename(archive)
    finally:
        tmp.unlink(missing_ok=True)


def build_pip_conf(path: Path) -> list[str]:
    """Volumes giving RUN steps this machine's trust store and package index (build time only)."""
    bundle = next((p for p in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                               os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")
                   if p and Path(p).is_file()), None)
    host = configparser.ConfigParser()
    host.read(["/etc/xdg/pip/pip.conf", "/etc/pip.conf"])
    settings = {key: value for key, value in (host["global"].items() if host.has_section("global") else [])
                if key in ("index-url", "extra-index-url", "trusted-host", "timeout")}
    for key in ("index-url", "extra-index-url", "trusted-host", "timeout"):
        if os.environ.get(f"PIP_{key.upper().replace('-', '_')}"):
            settings[key] = os.environ[f"PIP_{key.upper().replace('-', '_')}"]
    if bundle:
        settings["cert"] = "/etc/ssl/certs/ca-certificates.crt"
    path.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    volumes = ["-v", f"{path}:/etc/pip.conf:ro"]
    if bundle:
        volumes += ["-v", f"{Path(bundle).resolve()}:/etc/ssl/certs/ca-certificates.crt:ro"]
    return volumes


def git_revision() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


class BuildLock:
    """One build at a time per cache; stale work directories of dead builds are removed under it."""

    def __enter__(self) -> BuildLock:
        cache_dir().mkdir(parents=True, exist_ok=True)
        self.file = open(cache_dir() / ".lock", "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another image build in {cache_dir()} to finish")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        for work in (cache_dir() / "work").glob("*"):
            remove_tree(work)  # only the lock holder builds, so every work dir left is a dead build's
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def build_cached(name: str, key: str, build: Callable[[Step, Path, Path], None]) -> Path:
    """The archive <name>-<key>.tar: from the cache, or made by build(step, work, archive)."""
    archive = cache_dir() / f"{name}-{key}.tar"
    if archive.exists():
        return archive
    with BuildLock():
        if archive.exists():  # built by the caller that held the lock before us
            return archive
        step = Step(name, cache_dir() / "logs" / f"{name}-{key}.log")
        work = cache_dir() / "work" / f"{name}-{key}"
        started = time.monotonic()
        try:
            work.mkdir(parents=True)
            ensure_tools(step)
            build(step, work, archive)
        finally:
            remove_tree(work)
        say(f"{name}: built in {time.monotonic() - started:.0f} s, {archive.stat().st_size / 2**20:.0f} MiB: {archive}")
        prune(name, keep=archive)
    return archive


def prune(name: str, keep: Path, newest: int = 3) -> None:
    """Keep the `newest` archives of one image (other checkouts may use older ones), delete the rest."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{12}}\.tar$")
    archives = sorted((p for p in cache_dir().iterdir() if pattern.match(p.name) and p != keep),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[newest - 1:]:
        old.unlink(missing_ok=True)
        (cache_dir() / "logs" / f"{old.stem}.log").unlink(missing_ok=True)


# --- the images ---------------------------------------------------------------------------------------


def build_base() -> Path:
    """The base image (Debian minbase + Python 3.11) as an OCI archive; built once per key."""
    key = base_key()

    def build(step: Step, work: Path, archive: Path) -> None:
        mirror = debian_mirror()
        rootfs = work / "rootfs"
        say(f"base: debootstrap {BASE_SUITE} minbase + {', '.join(BASE_PACKAGES)} from {mirror} (about a minute)")
        # A private mount namespace: debootstrap's /proc and /sys mounts die with it, even if it is killed.
        step.run("debootstrap", ["unshare", "--mount", "--propagation", "private", tool_path("debootstrap"),
                                 "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                                 BASE_SUITE, str(rootfs), mirror], timeout=1800)
        for pattern in BASE_TRIM:
            for path in rootfs.glob(pattern):
                remove_path(path)
        for path in BASE_MOUNT_POINTS:
            (rootfs / path).write_bytes(b"")
        say("base: commit")
        buildah = Buildah(work, step)
        container = buildah("create a container", "from", "--quiet", "scratch", capture=True)
        mounted = buildah("mount the container", "mount", container, capture=True)
        step.run("copy the root filesystem", ["cp", "-a", f"{rootfs}/.", mounted])
        buildah("unmount the container", "umount", container)
        buildah("configure", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8", "--cmd", "python3",
                "--label", "org.opencontainers.image.title=kubetune-base",
                "--label", f"org.opencontainers.image.description=Debian {BASE_SUITE} minbase with "
                           f"{' '.join(BASE_PACKAGES)}, built by kubetune's deploy/local/images.py",
                container)
        buildah("commit", "commit", "--quiet", "--format", "oci", "--signature-policy", str(buildah.policy),
                container, base_ref(key))
        buildah.export(base_ref(key), archive)

    return build_cached("base", key, build)


def build_recipe(recipe: Recipe) -> Path:
    """A Dockerfile image on the local base, as an OCI archive; built once per key."""
    base_archive, bkey = build_base(), base_key()
    key = recipe_key(recipe, bkey)

    def build(step: Step, work: Path, archive: Path) -> None:
        buildah = Buildah(work, step)
        buildah.load(base_archive, base_ref(bkey))
        args = {"PYTHON_IMAGE": base_ref(bkey), **recipe.build_args}
        if any(kind == "ARG" and arg.startswith("REVISION")
               for kind, arg in dockerfile_instructions(recipe.dockerfile)):
            args["REVISION"] = git_revision()  # a label only; not part of the key
        say(f"{recipe.name}: buildah bud {recipe.dockerfile} -> {recipe.ref} (log: {step.log})")
        buildah("build", "bud", "--isolation", "chroot", "--pull=never", "--format", "oci",
                "--signature-policy", str(buildah.policy), *build_pip_conf(work / "pip.conf"),
                *[a for name, value in args.items() for a in ("--build-arg", f"{name}={value}")],
                "-f", str(recipe.dockerfile), "-t", recipe.ref, str(recipe.context))
        say(f"{recipe.name}: export")
        buildah.export(recipe.ref, archive)

    return build_cached(recipe.name, key, build)


def build_project() -> Path:
    """The project's image (PROJECT_IMAGE) from the repository's Dockerfile; returns the archive path."""
    return build_recipe(project_recipe())


def build_demo_service() -> Path:
    """The demo service's image (DEMO_SERVICE_IMAGE); returns the archive path."""
    return build_recipe(demo_service_recipe())


BUILDS = {"base": build_base, "project": build_project, "demo-service": build_demo_service}
REFS = {"project": PROJECT_IMAGE, "demo-service": DEMO_SERVICE_IMAGE}


# --- reading an archive (tests, debugging) ------------------------------------------------------------


# Python >= 3.12 filters extraction (3.14 by default to "data", which drops owners): these are our own images.
TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def read_archive(archive: Path) -> tuple[dict, dict, dict]:
    """(index, manifest, config) of a single-image OCI archive."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/" + digest.replace(":", "/")).read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
    return index, manifest, config


def unpack_rootfs(archive: Path, dest: Path) -> Path:
    """Apply the image's layers in order into `dest` (owners kept; OCI whiteouts honoured): the root
    filesystem a container of this image starts with. Needs root for the owners."""
    _, manifest, _ = read_archive(archive)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as outer:
        for layer in manifest["layers"]:
            raw = outer.extractfile("blobs/" + layer["digest"].replace(":", "/"))
            stream = gzip.GzipFile(fileobj=raw) if "gzip" in layer["mediaType"] else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    parent, _, base = member.name.rpartition("/")
                    if base == ".wh..wh..opq":  # an opaque directory: drop what lower layers put in it
                        for child in (dest / parent).iterdir():
                            remove_path(child)
                    elif base.startswith(".wh."):  # a file deleted by this layer
                        remove_path(dest / parent / base[4:])
                    else:
                        target = dest / member.name
                        if target.is_symlink() or (target.exists() and not target.is_dir()):
                            target.unlink()
                        tar.extract(member, dest, numeric_owner=True, **TRUSTED)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build what is not cached; print the archive paths")
    build.add_argument("images", nargs="*", default=["all"], choices=["all", *BUILDS])
    args = parser.parse_args(argv)
    names = list(BUILDS) if "all" in args.images else args.images
    try:
        for name in names:
            archive = BUILDS[name]()
            say(f"{name}: {REFS.get(name, base_ref(base_key()))} in {archive}")
            print(archive, flush=True)
    except ImageBuildError as error:
        print(f"kubetune images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write OCI image archives without a container engine: `ctr images import` reads them.

An OCI archive is a tar of an image layout (oci-layout, index.json, blobs/sha256/<digest>). Layers
are uncompressed tars written with fixed owners and mtimes, so the same files give the same digest
(callers can cache by it).

    layer = file_layer(work / "layer.tar", [File("bin/busybox", Path("/bin/busybox")),
                                            Symlink("bin/sh", "busybox")])
    write_oci_archive(work / "busybox.tar", "kubetune.local/busybox:1", [layer], entrypoint=["/bin/sh"])
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class File:
    """A regular file in a layer: `source` is a host path or the bytes themselves."""

    path: str
    source: Path | bytes
    mode: int = 0o755


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = 0o755


Entry = File | Symlink | Directory


def _tar_info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
    return info


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def file_layer(out: Path, entries: list[Entry]) -> Path:
    """An uncompressed layer tar holding `entries` (parent directories are added, mode 0755)."""
    written: set[str] = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            for parent in _parents(entry.path):
                if parent not in written:
                    tar.addfile(_tar_info(parent, tarfile.DIRTYPE, 0o755))
                    written.add(parent)
            _add_entry(tar, entry)
            written.add(entry.path.strip("/"))
    return out


def _add_entry(tar: tarfile.TarFile, entry: Entry) -> None:
    if isinstance(entry, Directory):
        tar.addfile(_tar_info(entry.path, tarfile.DIRTYPE, entry.mode))
    elif isinstance(entry, Symlink):
        info = _tar_info(entry.path, tarfile.SYMTYPE, 0o777)
        info.linkname = entry.target
        tar.addfile(info)
    else:
        data = entry.source if isinstance(entry.source, bytes) else Path(entry.source).read_bytes()
        info = _tar_info(entry.path, tarfile.REGTYPE, entry.mode)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def directory_layer(out: Path, root: Path) -> Path:
    """An uncompressed layer tar of a directory tree (owners and modes kept, mtimes zeroed)."""
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uname, info.gname = 0, "", ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=normalise)
    return out


def _digest_of_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def _descriptor(media_type: str, digest: str, size: int) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _json_blob(document: dict) -> tuple[bytes, str]:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return data, f"sha256:{hashlib.sha256(data).hexdigest()}"


def write_oci_archive(archive: Path, name: str, layers: list[Path], *, entrypoint: list[str] | None = None,
                      cmd: list[str] | None = None, env: list[str] | None = None, workdir: str | None = None,
                      user: str | None = None, labels: dict[str, str] | None = None,
                      architecture: str = "amd64", os: str = "linux") -> str:
    """Write an OCI archive of one image named `name` (e.g. kubetune.local/app:1) from layer tars,
    bottom first. Returns the manifest digest."""
    layer_digests = [_digest_of_file(layer) for layer in layers]
    image_config = {k: v for k, v in {"Entrypoint": entrypoint, "Cmd": cmd,
                                      "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                      "WorkingDir": workdir, "User": user, "Labels": labels}.items() if v}
    config, config_digest = _json_blob({"architecture": architecture, "os": os, "config": image_config,
                                        "rootfs": {"type": "layers", "diff_ids": layer_digests}})
    manifest, manifest_digest = _json_blob({
        "schemaVersion": 2, "mediaType": MANIFEST, "config": _descriptor(CONFIG, config_digest, len(config)),
        "layers": [_descriptor(LAYER, d, layer.stat().st_size) for d, layer in zip(layer_digests, layers)]})
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {"schemaVersion": 2, "manifests": [{
        **_descriptor(MANIFEST, manifest_digest, len(manifest)),
        "platform": {"architecture": architecture, "os": os},
        # containerd names the image by the first; the OCI spec's own annotation holds only the tag.
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}]}
    tmp = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        _add_bytes(tar, _blob_path(config_digest), config)
        _add_bytes(tar, _blob_path(manifest_digest), manifest)
        for digest, layer in zip(layer_digests, layers):
            tar.add(layer, arcname=_blob_path(digest))
    tmp.rename(archive)  # a half-written archive never carries the final name
    return manifest_digest


def _blob_path(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/")


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))

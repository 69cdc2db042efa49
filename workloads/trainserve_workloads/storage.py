"""One way to reach model and data storage: ``pvc://CLAIM/PATH``, local paths, ``file://`` and ``s3://`` URIs.

Built on ``pyarrow.fs`` (no botocore). S3 credentials, region and endpoint come from the standard AWS
environment variables, which the operator fills from the TrainingJob's ``storageSecretRef``. A ``pvc://`` URI is a
folder under ``$TRAINSERVE_VOLUMES_DIR/CLAIM``: on a cluster the operator mounts each claim there in the Ray pods;
locally it is ``./.trainserve/volumes/CLAIM`` (KServe writes model locations the same way). The URI is kept as
written, so a model trained to ``pvc://models/digits`` is served from the same URI wherever that claim is mounted.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from trainserve.api.storage import DEFAULT_VOLUMES_DIR, VOLUMES_DIR_ENV


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    options: dict[str, object] = {"region": region or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options["access_key"] = key
        options["secret_key"] = secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class Location:
    """A file or folder in some storage, addressed by the URI the user wrote."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def child(self, *parts: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, *parts), posixpath.join(self.uri, *parts))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return bool(self._info().type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        return bool(self._info().type == pafs.FileType.Directory)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return bytes(stream.read())

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def subdirectories(self) -> list[str]:
        """Names of the folders directly inside this one (empty if it does not exist)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        return sorted(
            posixpath.basename(info.path.rstrip("/"))
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def delete(self) -> None:
        """Remove this file or folder and everything in it; a missing one is fine."""
        info = self._info()
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)

    def upload_dir(self, local_dir: str | Path) -> None:
        """Copy a local folder's contents into this location."""
        self.fs.create_dir(self.path, recursive=True)
        pafs.copy_files(
            str(local_dir), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
        )

    def download_dir(self, local_dir: str | Path) -> None:
        """Copy this folder's contents into a local folder."""
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self.path, str(local_dir), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem()
        )

    def check_writable(self) -> None:
        """Write and remove a probe file; raises OSError when this location cannot be written."""
        probe = self.child(f".trainserve-write-probe-{uuid.uuid4().hex}")
        probe.write_bytes(b"ok")
        probe.delete()


def volumes_root() -> str:
    """Where ``pvc://`` claims are: ``$TRAINSERVE_VOLUMES_DIR``, else ``./.trainserve/volumes`` (absolute)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(VOLUMES_DIR_ENV) or DEFAULT_VOLUMES_DIR))


def locate(uri: str) -> Location:
    """The storage location a URI names. Relative local paths are taken from the current directory."""
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        if not parsed.netloc:
            raise ValueError(f"{uri!r} has no claim: write pvc://CLAIM/PATH")
        path = os.path.join(volumes_root(), parsed.netloc, parsed.path.lstrip("/")).rstrip("/")
        return Location(pafs.LocalFileSystem(), path, uri.rstrip("/"))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{uri!r} has no bucket: write s3://BUCKET/PREFIX")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        return Location(_s3_filesystem(endpoint, region), path, uri.rstrip("/"))
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else uri
        absolute = os.path.abspath(os.path.expanduser(local))
        return Location(pafs.LocalFileSystem(), absolute, absolute)
    raise ValueError(
        f"unsupported storage scheme {parsed.scheme!r} in {uri!r}: use pvc://CLAIM/PATH, s3://, file:// or a path"
    )

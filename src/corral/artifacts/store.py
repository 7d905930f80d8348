"""Content-addressed artifacts: files and directories by sha256, never overwritten, verified on read.

Layout under the store's root (a local directory or any fsspec URL):

    blobs/sha256/ab/abcdef...        file contents
    trees/sha256/cd/cdef01...        a directory's manifest: JSON {relative path: blob digest}
    tmp/                             partial writes, renamed into place when complete
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fsspec

from corral.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError

CHUNK = 1 << 20
PREFIX = "sha256:"


def regular_files(root: Path) -> list[Path]:
    """The files under `root`, sorted; a symbolic link that leads out of `root` is an error.

    A link inside the directory is read through (its target is stored anyway); one that leaves it
    would copy whatever it names (e.g. /etc/passwd) into the store, so it is refused, not followed.
    """
    inside = root.resolve()
    found: list[Path] = []
    for entry in sorted(root.rglob("*")):
        if entry.is_symlink() and not entry.resolve().is_relative_to(inside):
            raise InvalidInputError(
                f"{entry} is a link to {os.readlink(entry)}, outside {root}; refusing to store it",
                hint=f"copy the real files into the directory instead (e.g. `cp -rL {root} COPY`)",
            )
        if entry.is_file():
            found.append(entry)
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hex(digest: str) -> str:
    hexpart = digest.removeprefix(PREFIX)
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidInputError(f"'{digest}' is not a sha256 artifact digest")
    return hexpart


def _corrupted(what: str, hexdigest: str, location: str) -> ArtifactIntegrityError:
    return ArtifactIntegrityError(
        f"artifact {what} sha256:{hexdigest} is corrupted: its bytes no longer match its hash",
        hint=f"stored at {location}; restore it from a backup or register the version again",
    )


class ArtifactStore:
    """Blobs and directory trees addressed by their sha256, on any fsspec filesystem."""

    def __init__(self, url: str, cache_dir: Path | None = None) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @classmethod
    def from_settings(cls, settings: Any) -> ArtifactStore:
        return cls(settings.artifacts.resolved_url(), settings.artifacts.resolved_cache_dir())

    # -- paths ------------------------------------------------------------------------------
    def _blob_path(self, hexdigest: str) -> str:
        return f"{self.root}/blobs/sha256/{hexdigest[:2]}/{hexdigest}"

    def _tree_path(self, hexdigest: str) -> str:
        return f"{self.root}/trees/sha256/{hexdigest[:2]}/{hexdigest}"

    def _put_bytes_at(self, final: str, data_source: Path | bytes) -> None:
        """Write to a temporary name, then rename: a reader never sees a partial artifact."""
        if self.fs.exists(final):
            return  # content-addressed: the same bytes are already there, never overwrite
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        try:
            if isinstance(data_source, bytes):
                with self.fs.open(tmp, "wb") as handle:
                    handle.write(data_source)
            else:
                self.fs.put_file(str(data_source), tmp)
            if self.fs.exists(final):
                self.fs.rm(tmp)
            else:
                self.fs.mv(tmp, final)
        except OSError as exc:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise InvalidInputError(f"cannot write artifact to {self.url}: {exc.strerror or exc}") from None

    # -- writing ----------------------------------------------------------------------------
    def put_file(self, path: str | Path) -> str:
        """Store one file; returns its digest `sha256:<hex>`."""
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"file {path} does not exist")
        hexdigest = sha256_file(path)
        self._put_bytes_at(self._blob_path(hexdigest), path)
        return PREFIX + hexdigest

    def put_bytes(self, data: bytes) -> str:
        hexdigest = hashlib.sha256(data).hexdigest()
        self._put_bytes_at(self._blob_path(hexdigest), data)
        return PREFIX + hexdigest

    def put_dir(self, path: str | Path) -> str:
        """Store a directory (every file under it); returns the digest of its manifest."""
        path = Path(path)
        if not path.is_dir():
            raise NotFoundError(f"directory {path} does not exist")
        manifest: dict[str, str] = {}
        for file in regular_files(path):
            manifest[file.relative_to(path).as_posix()] = self.put_file(file)
        if not manifest:
            raise InvalidInputError(f"directory {path} is empty")
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        hexdigest = hashlib.sha256(body).hexdigest()
        self._put_bytes_at(self._tree_path(hexdigest), body)
        return PREFIX + hexdigest

    # -- reading ----------------------------------------------------------------------------
    def _read_verified(self, location: str, hexdigest: str, what: str) -> bytes:
        try:
            with self.fs.open(location, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact {what} sha256:{hexdigest[:12]}… is missing from {self.url}"
            ) from None
        if hashlib.sha256(data).hexdigest() != hexdigest:
            raise _corrupted(what, hexdigest, location)
        return data

    def _copy_verified(self, hexdigest: str, target: Path) -> None:
        """Stream a blob to a local file in chunks (a weights shard can be many GB), checking its hash."""
        location, digest = self._blob_path(hexdigest), hashlib.sha256()
        try:
            with self.fs.open(location, "rb") as source, open(target, "wb") as sink:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact file sha256:{hexdigest[:12]}… is missing from {self.url}"
            ) from None
        if digest.hexdigest() != hexdigest:
            raise _corrupted("file", hexdigest, location)

    def get_bytes(self, digest: str) -> bytes:
        hexdigest = _hex(digest)
        return self._read_verified(self._blob_path(hexdigest), hexdigest, "file")

    def manifest(self, digest: str) -> dict[str, str]:
        hexdigest = _hex(digest)
        return dict(json.loads(self._read_verified(self._tree_path(hexdigest), hexdigest, "directory")))

    def is_tree(self, digest: str) -> bool:
        return bool(self.fs.exists(self._tree_path(_hex(digest))))

    def exists(self, digest: str) -> bool:
        hexdigest = _hex(digest)
        return bool(self.fs.exists(self._blob_path(hexdigest)) or self.fs.exists(self._tree_path(hexdigest)))

    def get_dir(self, digest: str, dest: str | Path) -> Path:
        """Write a verified copy of a stored directory to `dest` (created; must not exist)."""
        dest = Path(dest)
        manifest = self.manifest(digest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        tmp.mkdir(parents=True)
        try:
            for rel, blob in manifest.items():
                target = tmp / rel
                if ".." in Path(rel).parts:
                    raise ArtifactIntegrityError(f"artifact directory {digest} has an unsafe path '{rel}'")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy_verified(_hex(blob), target)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def materialized(self, digest: str) -> Path | None:
        """The verified local copy `materialize` made earlier, or None; never copies anything."""
        if self.cache_dir is None:
            return None
        dest = self.cache_dir / _hex(digest)
        return dest if (dest / ".corral-verified").exists() else None

    def materialize(self, digest: str) -> Path:
        """A verified local copy of a directory artifact, cached by digest for workers to load."""
        if self.cache_dir is None:
            raise InvalidInputError("this artifact store has no cache directory to materialize into")
        cached = self.materialized(digest)
        if cached is not None:
            return cached
        dest = self.cache_dir / _hex(digest)
        marker = dest / ".corral-verified"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        self.get_dir(digest, dest)
        marker.write_text(digest)
        return dest

    # -- deleting ---------------------------------------------------------------------------
    def delete(self, digest: str, keep: Iterable[str] = ()) -> int:
        """Delete an artifact and the blobs only it uses; `keep` lists digests still referenced."""
        hexdigest = _hex(digest)
        kept_blobs: set[str] = set()
        for other in keep:
            if other == digest:
                return 0
            if self.is_tree(other):
                kept_blobs.update(self.manifest(other).values())
            else:
                kept_blobs.add(other)
        removed = 0
        if self.is_tree(digest):
            for blob in set(self.manifest(digest).values()) - kept_blobs:
                self.fs.rm(self._blob_path(_hex(blob)))
                removed += 1
            self.fs.rm(self._tree_path(hexdigest))
            removed += 1
        elif self.fs.exists(self._blob_path(hexdigest)) and digest not in kept_blobs:
            self.fs.rm(self._blob_path(hexdigest))
            removed += 1
        if self.cache_dir and (self.cache_dir / hexdigest).exists():
            shutil.rmtree(self.cache_dir / hexdigest, ignore_errors=True)
        return removed

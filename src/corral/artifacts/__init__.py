"""Content-addressed blobs and directories on a local disk or any fsspec URL."""

from corral.artifacts.store import ArtifactStore, sha256_file

__all__ = ["ArtifactStore", "sha256_file"]

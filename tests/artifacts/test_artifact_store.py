"""Content-addressed artifacts: dedupe, atomic writes, verification on read, any fsspec URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from corral.artifacts import ArtifactStore
from corral.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError


@pytest.fixture(params=["local", "memory"])
def artifacts(request, tmp_path) -> ArtifactStore:
    url = str(tmp_path / "store") if request.param == "local" else f"memory://corral-{uuid.uuid4().hex}"
    return ArtifactStore(url, tmp_path / "cache")


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    return root


def test_directories_round_trip_and_dedupe(artifacts, tmp_path):
    tree = make_tree(tmp_path / "m")
    digest = artifacts.put_dir(tree)
    assert digest.startswith("sha256:") and artifacts.put_dir(tree) == digest
    out = artifacts.materialize(digest)
    assert (out / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert artifacts.manifest(digest).keys() == {"config.json", "sub/weights.bin"}


def test_tampered_blob_is_an_error_naming_the_artifact(tmp_path):
    artifacts = ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")
    digest = artifacts.put_bytes(b"hello")
    blob = next((tmp_path / "store" / "blobs").rglob(digest.removeprefix("sha256:")))
    blob.write_bytes(b"HELLO")
    with pytest.raises(ArtifactIntegrityError, match=digest):
        artifacts.get_bytes(digest)


def test_tampered_directory_file_fails_materialize(tmp_path):
    artifacts = ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")
    digest = artifacts.put_dir(make_tree(tmp_path / "m"))
    weights = artifacts.manifest(digest)["sub/weights.bin"]
    next((tmp_path / "store" / "blobs").rglob(weights.removeprefix("sha256:"))).write_bytes(b"evil")
    with pytest.raises(ArtifactIntegrityError, match="corrupted"):
        artifacts.materialize(digest)
    assert not (tmp_path / "cache" / digest.removeprefix("sha256:")).exists()


def test_existing_blobs_are_never_overwritten(tmp_path):
    artifacts = ArtifactStore(str(tmp_path / "store"))
    digest = artifacts.put_bytes(b"data")
    blob = next((tmp_path / "store" / "blobs").rglob(digest.removeprefix("sha256:")))
    before = blob.stat().st_mtime_ns
    artifacts.put_bytes(b"data")
    assert blob.stat().st_mtime_ns == before
    assert not list((tmp_path / "store" / "tmp").iterdir())


def test_missing_artifact_and_path_are_clear_errors(artifacts, tmp_path):
    with pytest.raises(NotFoundError, match="missing"):
        artifacts.get_bytes("sha256:" + "0" * 64)
    with pytest.raises(NotFoundError, match="does not exist"):
        artifacts.put_dir(tmp_path / "nope")


def test_a_link_out_of_the_directory_is_refused_not_stored(artifacts, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (model / "weights.bin").symlink_to(secret)
    with pytest.raises(InvalidInputError, match=r"weights.bin is a link to .*secret.txt, outside"):
        artifacts.put_dir(model)
    (model / "weights.bin").unlink()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "more.bin").write_text("x")
    (model / "sub").symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidInputError, match="sub is a link"):
        artifacts.put_dir(model)


def test_a_link_inside_the_directory_is_stored_as_its_content(artifacts, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "alias.json").symlink_to(model / "config.json")
    out = artifacts.materialize(artifacts.put_dir(model))
    assert (out / "alias.json").read_text() == '{"a": 1}' and not (out / "alias.json").is_symlink()

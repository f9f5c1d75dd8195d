"""The corpus build at scale's failure modes: a kill mid-build resumes without redoing finished files or shards, a
shard a crash truncated is written again, an input file that vanishes is a counted skip, a hub dataset or revision
that does not exist is one line, and the tasks give the same corpus on Ray as one after another."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tpt.config import CorpusConfig, HubDataset, LocalFolder
from tpt.corpus.build import MANIFEST, WORK, build_corpus, load_manifest, read_shard
from tpt.corpus.sources import SourceError, local_unit
from tpt.corpus.steps import scan_unit

LONG = "An ordinary paragraph about tides, rivers and the moon, long enough to pass the length filter"
FILES, PER_FILE = 24, 60


def _folder(root: Path) -> Path:
    """FILES files of PER_FILE documents; every file repeats one document of the file before (an exact duplicate
    across files, so across tasks) and holds one repeat of its own."""
    folder = root / "in"
    folder.mkdir()
    for f in range(FILES):
        texts = [f"{LONG}, file {f} document {i}." for i in range(PER_FILE - 2)]
        texts += [texts[0], f"{LONG}, file {max(f - 1, 0)} document 1."]
        (folder / f"f{f:03d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def _config(folder: Path, **extra) -> CorpusConfig:
    return CorpusConfig(
        sources=[LocalFolder(name="local", path=str(folder))], min_chars=40, documents_per_shard=25, **extra
    )


BUILD = """
import sys
from pathlib import Path
from tpt.config import CorpusConfig
from tpt.corpus.build import build_corpus
build_corpus(CorpusConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]), "v1")
"""


def _kill_when(config: CorpusConfig, out: Path, ready) -> None:
    """Build in a child process and kill -9 it as soon as ``ready()`` holds (before the manifest is written)."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    child = subprocess.Popen([sys.executable, "-c", BUILD, config.model_dump_json(), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not (out / MANIFEST).exists(), "the build finished before it could be killed"


def _shards(out: Path) -> dict[str, str]:
    manifest = load_manifest(out, "v1")
    return {s["name"]: s["sha256"] for s in manifest.shards}


def test_a_killed_build_resumes_skipping_finished_files_and_shards(tmp_path):
    folder = _folder(tmp_path)
    config = _config(folder)  # decontamination on: ~0.1 s a file, time enough to kill the build between files
    clean, _ = build_corpus(config, tmp_path / "clean", "v1")
    expected = FILES * (PER_FILE - 2)  # every repeat is dropped, within a file and across files
    assert clean.n_documents == expected and clean.sources["local"]["counts"] == {"duplicate": 2 * FILES}

    out = tmp_path / "out"
    units = out / WORK / "units"
    _kill_when(config, out, lambda: len(list(units.glob("*/done.json"))) >= FILES // 3)
    scanned = {p: p.stat().st_mtime_ns for p in units.glob("*/done.json")}
    assert 0 < len(scanned) < FILES
    progress = lambda: next(out.glob(f"{WORK}/builds/*/shards.json"), None)  # noqa: E731
    _kill_when(config, out, lambda: progress() is not None and len(json.loads(progress().read_text())) >= 3)
    assert all(p.stat().st_mtime_ns == t for p, t in scanned.items())  # the second run skipped those files
    recorded = json.loads(progress().read_text())
    first, *others = sorted(recorded)
    written = {n: (out / f"{n}.parquet").stat().st_mtime_ns for n in others}
    path = out / f"{first}.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash that truncated a finished shard

    manifest, reused = build_corpus(config, out, "v1")
    assert not reused and _shards(out) == _shards(tmp_path / "clean")  # the very same bytes as a clean build
    assert all((out / f"{n}.parquet").stat().st_mtime_ns == t for n, t in written.items())  # not rewritten
    assert manifest.sources == clean.sources and not (out / WORK).exists()
    assert manifest.contamination == clean.contamination and manifest.contamination["checked"] == FILES * PER_FILE
    assert build_corpus(config, out, "v1")[1] is True


def test_an_input_file_that_vanishes_mid_build_is_a_counted_skip_and_read_when_back(tmp_path):
    folder = _folder(tmp_path)
    config = _config(folder, decontamination=None)
    path = folder / "f000.jsonl"
    unit = local_unit(config.sources[0], path)
    path.rename(tmp_path / "away.jsonl")  # listed, then gone before its task reads it
    result = scan_unit(unit, config.sources[0], config, str(tmp_path / "work"), None, "packages")
    assert result["vanished"] and result["documents"] == 0
    assert (
        result["skips"]["counts"] == {"vanished_file": 1}
        and str(path) in result["skips"]["examples"]["vanished_file"][0]
    )


def test_the_tasks_build_the_same_corpus_on_ray(tmp_path):
    import ray

    folder = _folder(tmp_path)
    config = _config(folder, decontamination=None, dedup_buckets=3)
    build_corpus(config, tmp_path / "local", "v1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        lines: list[str] = []
        build_corpus(config, tmp_path / "ray", "v1", on_ray=True, log=lines.append)
    finally:
        ray.shutdown()
    assert _shards(tmp_path / "ray") == _shards(tmp_path / "local")
    texts = [t for s in _shards(tmp_path / "ray") for t in read_shard(tmp_path / "ray", s)["text"].to_pylist()]
    assert len(texts) == len(set(texts)) == FILES * (PER_FILE - 2)
    assert any(line.startswith("corpus: read and clean files: 24/24") for line in lines)


class _StandInHub(BaseHTTPRequestHandler):
    """A stand-in for the hub's dataset API, answering as the hub does for what does not exist."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        code = "RevisionNotFound" if "/revision/" in self.path and "known" in self.path else "RepoNotFound"
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", f"{code} for {self.path}")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": code}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in_hub(monkeypatch):
    import huggingface_hub.constants

    server = HTTPServer(("127.0.0.1", 0), _StandInHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield
    server.shutdown()


@pytest.mark.parametrize(
    ("dataset", "revision", "says"),
    [("nobody/nothing", None, "'nobody/nothing' could not be opened"), ("known/dataset", "v9", "at revision 'v9'")],
    ids=["no-such-dataset", "no-such-revision"],
)
def test_a_hub_dataset_or_revision_that_does_not_exist_is_one_line(stand_in_hub, tmp_path, dataset, revision, says):
    config = CorpusConfig(sources=[HubDataset(name="web", dataset=dataset, revision=revision)])
    with pytest.raises(SourceError) as raised:
        build_corpus(config, tmp_path / "out", "v1")
    message = str(raised.value)
    assert message.startswith(f"hub dataset {dataset!r}") and says in message and "\n" not in message
    assert not (tmp_path / "out" / MANIFEST).exists()

"""Clean, filter, dedup, decontaminate and shard the corpus: a build of independent tasks that scales out and
resumes (see ``steps`` for the four task kinds, ``tasks`` for where they run).

A build covers the inputs no earlier build read (every file of a first build; new local files of an append). Its
work folder is ``_work/``: each unit's scan is kept under a name that is its content, so a restarted build skips
every file it finished; each dedup bucket, the near-dedup pass and each shard leave a marker, and the shards written
so far are recorded in ``_work/builds/<build>/shards.json`` as they finish, so a failure at hour 30 resumes from
there. The manifest is written last: it is what says the corpus is built. Appends keep the old shards untouched and
dedup new documents against their ids (``_ids/``), never against one in-memory set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from tpt.atomic import read_json, write_json, write_parquet
from tpt.config import CorpusConfig, HubDataset, LocalFolder
from tpt.corpus.documents import CONTAMINATION_SCHEMA, SHARD_SCHEMA, document_id, file_sha256, normalize
from tpt.corpus.sources import Unit, local_files, local_unit, resolve_revision, source_units
from tpt.corpus.steps import SHARD_IDS, UNIT_CONTAMINATION, dedup_bucket, near_pass, scan_unit, write_shard
from tpt.corpus.tasks import run_tasks
from tpt.errors import InputError
from tpt.paths import as_path, move, read_table, remove_tree
from tpt.skips import Skips
from tpt.versioning import content_hash

__all__ = ["SHARD_SCHEMA", "build_corpus", "document_id", "file_sha256", "load_manifest", "normalize", "read_shard"]

MANIFEST = "_manifest.json"
CONTAMINATION = "_contamination.parquet"  # every dropped document: which benchmark item, which n-gram
MINHASH = "_minhash.parquet"  # signatures of kept documents, for near-dedup of later appends
WORK = "_work"


class EmptyCorpusError(InputError, ValueError):
    pass


@dataclass(frozen=True)
class CorpusManifest:
    version: str
    shards: list[dict]
    sources: dict[str, dict]
    inputs: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # local source -> file -> [size, mtime]
    contamination: dict = field(default_factory=dict)  # documents checked and dropped, per benchmark
    revisions: dict[str, str] = field(default_factory=dict)  # hub source -> the dataset commit it was read at

    @property
    def n_documents(self) -> int:
        return sum(s["documents"] for s in self.shards)

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.shards]

    @property
    def shard_set(self) -> list[tuple[str, str]]:
        """Each shard's name and content hash: what a stage that reads every shard has read."""
        return [(s["name"], s["sha256"]) for s in self.shards]


def load_manifest(out_dir: Path, version: str) -> CorpusManifest | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("version") != version:
        return None
    return CorpusManifest(
        data["version"],
        data["shards"],
        data["sources"],
        data.get("inputs", {}),
        data.get("contamination", {}),
        data.get("revisions", {}),
    )


def _pending_units(config: CorpusConfig, existing: CorpusManifest | None, revisions: dict[str, str]) -> list[Unit]:
    """The units no earlier build read, in reading order: all of a first build (hub sources pinned to a commit
    first, recorded in ``revisions``); the new files of local sources for an append."""
    units = []
    for source in config.sources:
        if existing is not None:
            if isinstance(source, LocalFolder):
                consumed = existing.inputs.get(source.name, {})
                units += [local_unit(source, p) for p in local_files(source) if str(p) not in consumed]
            continue
        if isinstance(source, HubDataset) and source.name not in revisions:
            revisions[source.name] = resolve_revision(source)
        units += source_units(source, revisions)
    return units


def build_corpus(
    config: CorpusConfig,
    out_dir: Path,
    version: str,
    *,
    test_data_folder: str | None = None,
    test_sets: Literal["hub", "packages"] = "packages",
    on_ray: bool | None = None,
    log: Callable[[str], None] = lambda line: None,
    before_tasks: Callable[[], None] = lambda: None,
) -> tuple[CorpusManifest, bool]:
    """Write shard-NNNNN.parquet files and the manifest; returns (manifest, reused).

    The corpus is append-only: files that appear later in a local source folder become new shards (deduplicated
    against everything before), and the shards already written, with all work done on them, stay as they are.
    Test sets for decontamination are read as the evaluation reads them: ``test_data_folder``, else ``test_sets``.
    ``on_ray`` (default ``config.build_on_ray``) runs the tasks on the Ray cluster this process is connected to;
    ``before_tasks`` is called once there is work for them (to connect to it then, and not for a reused corpus).
    """
    existing = load_manifest(out_dir, version)
    revisions = dict(existing.revisions) if existing else {}
    units = _pending_units(config, existing, revisions)
    if existing is not None and not units:
        remove_tree(out_dir / WORK)  # what a build that finished left behind
        return existing, True
    on_ray = config.build_on_ray if on_ray is None else on_ray
    before_tasks()
    before = list(existing.shards) if existing else []
    work = out_dir / WORK
    folders = [str(work / "units" / content_hash(version, u.key, length=16)) for u in units]
    build = work / "builds" / content_hash(version, [u.key for u in units], len(before), length=16)
    build.mkdir(parents=True, exist_ok=True)
    sources = {s.name: s for s in config.sources}
    tasks = {"on_ray": on_ray, "log": log}

    scans = run_tasks(
        scan_unit,
        [(u, sources[u.source], config, f, test_data_folder, test_sets) for u, f in zip(units, folders, strict=True)],
        what="corpus: read and clean files",
        **tasks,
    )
    earlier = [str(out_dir / SHARD_IDS / f"{s['name']}.parquet") for s in before]
    buckets = config.dedup_buckets
    dedups = run_tasks(
        dedup_bucket,
        [(b, buckets, folders, earlier, str(build / f"keep-{b:03d}.parquet")) for b in range(buckets)],
        what="corpus: exact dedup by id bucket",
        **tasks,
    )
    near = None
    if config.near_dedup is not None:
        [near] = run_tasks(
            near_pass,
            [(config, folders, str(build), str(out_dir / MINHASH), str(build / MINHASH))],
            what="corpus: near-dedup",
            **tasks,
        )
    kept = [sum(d["kept_by_unit"].get(str(i), 0) for d in dedups) for i in range(len(units))]
    if near is not None:
        kept = [n - near["near_duplicates"].get(str(i), 0) for i, n in enumerate(kept)]
    take = _capped(config, units, kept, existing)
    plan = _shard_plan(folders, take, config.documents_per_shard)
    names = [f"shard-{len(before) + i:05d}" for i in range(len(plan))]
    shards = _write_shards(out_dir, build, names, plan, tasks)

    reports = _reports(config, existing, units, scans, dedups, near, take)
    all_shards = before + [shards[n] for n in names]
    if not all_shards:
        raise EmptyCorpusError(f"corpus is empty after filtering: {reports}")
    inputs = {name: dict(files) for name, files in (existing.inputs if existing else {}).items()}
    for unit, scan in zip(units, scans, strict=True):
        if unit.kind == "local" and not scan["vanished"]:  # a file that vanished is read when it is back
            path = Path(unit.location)
            inputs.setdefault(unit.source, {})[str(path)] = [int(x) for x in unit.key.rsplit(":", 2)[1:]]
    contamination = _record_contamination(config, out_dir, folders, scans, existing)
    if near is not None:
        move(build / MINHASH, out_dir / MINHASH)
    data = {"version": version, "shards": all_shards, "sources": reports, "inputs": inputs}
    write_json(out_dir / MANIFEST, data | {"contamination": contamination, "revisions": revisions})
    remove_tree(work)
    log(f"corpus: {sum(take)} documents from {len(units)} files in {len(names)} new shards")
    return load_manifest(out_dir, version), False


def _capped(config: CorpusConfig, units: list[Unit], kept: list[int], existing: CorpusManifest | None) -> list[int]:
    """Documents taken from each unit: all survivors, up to each source's ``max_documents`` in reading order."""
    accepted = {name: data["accepted"] for name, data in (existing.sources if existing else {}).items()}
    caps = {s.name: s.max_documents for s in config.sources}
    take = []
    for unit, n in zip(units, kept, strict=True):
        cap = caps[unit.source]
        room = n if cap is None else max(0, min(n, cap - accepted.get(unit.source, 0)))
        accepted[unit.source] = accepted.get(unit.source, 0) + room
        take.append(room)
    return take


def _shard_plan(folders: list[str], take: list[int], per_shard: int) -> list[list[tuple[str, int, int, int]]]:
    """Slices (unit folder, unit index, first kept rank, count) of each new shard, in reading order."""
    plan, current, room = [], [], per_shard
    for index, (folder, n) in enumerate(zip(folders, take, strict=True)):
        first = 0
        while n > 0:
            k = min(n, room)
            current.append((folder, index, first, k))
            first, n, room = first + k, n - k, room - k
            if room == 0:
                plan.append(current)
                current, room = [], per_shard
    if current:
        plan.append(current)
    return plan


def _write_shards(out_dir: Path, build: Path, names: list[str], plan: list, tasks: dict) -> dict[str, dict]:
    """Each shard once: those recorded in the build's progress (and whole on disk) are not rewritten; a shard
    file a crash truncated is written again."""
    progress_path = build / "shards.json"
    done = read_json(progress_path) if progress_path.exists() else {}
    done = {n: s for n, s in done.items() if _intact(out_dir / f"{n}.parquet", s["sha256"])}
    todo = [i for i, n in enumerate(names) if n not in done]

    def record(i: int, shard: dict) -> None:
        done[names[todo[i]]] = shard
        write_json(progress_path, done)

    run_tasks(
        write_shard,
        [
            (
                plan[i],
                str(build),
                str(out_dir / f"{names[i]}.parquet"),
                str(out_dir / SHARD_IDS / f"{names[i]}.parquet"),
            )
            for i in todo
        ],
        what="corpus: write shards",
        done=record,
        **tasks,
    )
    return done


def _intact(path: Path, sha256: str) -> bool:
    return path.exists() and file_sha256(path) == sha256


def _reports(config, existing, units, scans, dedups, near, take) -> dict[str, dict]:
    """Per source: documents accepted and every skip by reason (with examples), over every build of the corpus."""
    reports = {name: _skips_from(data) for name, data in (existing.sources if existing else {}).items()}
    accepted = {name: data["accepted"] for name, data in (existing.sources if existing else {}).items()}
    for source in config.sources:
        reports.setdefault(source.name, Skips())
        accepted.setdefault(source.name, 0)
    for i, (unit, scan) in enumerate(zip(units, scans, strict=True)):
        skips = reports[unit.source]
        skips.counts.update(scan["skips"]["counts"])
        for reason, examples in scan["skips"]["examples"].items():
            for example in examples:
                skips.add(reason, example, n=0)
        for dedup in dedups:
            n = dedup["duplicates"].get(str(i), 0)
            if n:
                skips.add("duplicate", dedup["examples"][str(i)][0], n=n)
        if near is not None and near["near_duplicates"].get(str(i)):
            skips.add("near_duplicate", near["examples"][str(i)][0], n=near["near_duplicates"][str(i)])
        accepted[unit.source] += take[i]
    out = {}
    for name, skips in reports.items():
        skips.counts = +skips.counts  # reasons counted zero times are not reported
        out[name] = {"accepted": accepted[name], **skips.as_dict()}
    return out


def _skips_from(data: dict) -> Skips:
    skips = Skips()
    skips.counts.update(data["counts"])
    skips.examples.update(data["examples"])
    return skips


def _record_contamination(config, out_dir: Path, folders: list[str], scans: list[dict], existing) -> dict:
    """Contamination records of every build in one file; totals per benchmark over every build."""
    if config.decontamination is None:
        return {}
    before = existing.contamination if existing else {}
    path = out_dir / CONTAMINATION
    tables = [read_table(path)] if path.exists() else []
    tables += [read_table(as_path(f) / UNIT_CONTAMINATION) for f in folders]
    records = pa.concat_tables(tables).cast(CONTAMINATION_SCHEMA) if tables else CONTAMINATION_SCHEMA.empty_table()
    write_parquet(path, records)
    index = next((s["index"] for s in scans if s.get("index")), None) or before
    by_benchmark = dict.fromkeys(index["test_items"], 0)
    for benchmark in records["benchmark"].to_pylist():
        by_benchmark[benchmark] += 1
    return {
        "checked": before.get("checked", 0) + sum(s["checked"] for s in scans),
        "dropped": sum(by_benchmark.values()),
        "by_benchmark": by_benchmark,
        "ngram": index["ngram"],
        "test_items": index["test_items"],
        "test_items_too_short": index["test_items_too_short"],
        "max_contaminated_fraction": config.decontamination.max_contaminated_fraction,
    }


def read_contamination(out_dir: Path) -> pa.Table:
    path = out_dir / CONTAMINATION
    return read_table(path) if path.exists() else CONTAMINATION_SCHEMA.empty_table()


def read_shard(out_dir: Path, shard: str, columns: list[str] | None = None) -> pa.Table:
    return read_table(out_dir / f"{shard}.parquet", columns=columns)

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from tpt.config import Experiment, LocalFolder
from tpt.corpus.sources import LOCAL_PATTERNS


def corpus_fingerprint(folders: list[Path]) -> str:
    """Changes when a corpus file appears, disappears or changes size or time; cheap (stat only, no reads)."""
    digest = hashlib.sha256()
    for folder in folders:
        files = sorted({p for pattern in LOCAL_PATTERNS for p in folder.rglob(pattern)}) if folder.is_dir() else []
        for path in files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def new_corpus_files_sensor(experiment: Experiment, job: "UnresolvedAssetJobDefinition") -> dg.SensorDefinition | None:
    """Runs the graph when the local corpus folders change; the cursor is the folders' fingerprint, so a restarted
    daemon neither misses a change nor repeats a run for one it already saw."""
    folders = [Path(s.path).expanduser() for s in experiment.corpus.sources if isinstance(s, LocalFolder)]
    if not folders:
        return None

    @dg.sensor(
        name=f"{experiment.name}_new_corpus_files",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Watches {', '.join(map(str, folders))} and runs the graph when corpus files change.",
    )
    def watch(context: dg.SensorEvaluationContext):
        fingerprint = corpus_fingerprint(folders)
        if fingerprint == context.cursor:
            return dg.SkipReason("no new or changed corpus files")
        context.update_cursor(fingerprint)
        return dg.RunRequest(run_key=fingerprint, tags={"experiment": experiment.name, "trigger": "corpus_files"})

    return watch

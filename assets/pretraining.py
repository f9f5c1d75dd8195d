"""Pretraining: a LLaMA-architecture model trained on each variant's mixture, one partition per scale of the
experiment matrix, in the Dagster process or on Ray Train; resumes from its last checkpoint; final model in Hugging
Face format."""

from pathlib import Path

from assets.mixture import packed_shards
from assets.stage import StageResult, StageRun, png_markdown
from resources.ray_cluster import RayAsk
from tpt.catalog.schema import TABLES
from tpt.config import Experiment, TrainingConfig
from tpt.errors import InputError
from tpt.models import resolve_model
from tpt.plots import line_plot
from tpt.stages import Instance, Read, Stage
from tpt.tokenization.mixture import ResolvedMixture
from tpt.training import TrainResult, train
from tpt.training.planner import compute_optimal
from tpt.training.ray_launch import Data, opener, train_on_ray
from tpt.versioning import folder_digest, versioned_fields


class MixtureMissingError(InputError, RuntimeError):
    pass


def _own(experiment: Experiment, instance: Instance) -> dict:
    training = versioned_fields(experiment.training_for(instance.scale)) if instance.scale else None
    if training and training["init"] is None:  # a fresh model: the version it had before init existed
        del training["init"]
    return {"variant": instance.variant, "training": training}


def checkpoint(run: StageRun) -> StageResult:
    out, training = run.output, run.experiment.training_for(run.instance.scale)
    result = TrainResult.load(out.path)
    reused = result is not None
    if result is None:
        _train(run, training)
        result = TrainResult.load(out.path)
    curve = result.read_curve()
    return StageResult(
        reused,
        _figures(run.instance, result, curve),
        training_rows(run, result, curve),
        content_version=folder_digest(result.final_model, out.path / "final.sha256"),
        extra_metadata=loss_plot(run, curve, "training"),
    )


def _train(run: StageRun, training: TrainingConfig) -> None:
    mixture_dir = run.input("data_mixture").path
    if not ResolvedMixture.exists(mixture_dir):
        raise MixtureMissingError(f"no resolved mixture for {run.instance.label}; materialize data_mixture first")
    launch_training(
        run,
        training,
        packed_shards(run.outputs, run.instance.variant).paths,
        tokenizer_dir=resolve_model(run.experiment.tokenizer, weights=False),
        init_dir=resolve_model(training.init) if training.init else None,
        mixture_dir=mixture_dir,
    )


def launch_training(
    run: StageRun,
    training: TrainingConfig,
    data: Data,
    *,
    tokenizer_dir: Path,
    init_dir: Path | None,
    mixture_dir: Path | None = None,
) -> None:
    """The trainer's launcher: in the Dagster process or on Ray Train, resuming from the last checkpoint in the
    output folder either way (pretraining and SFT alike)."""
    trainer = run.resources.trainer
    common = {"tokenizer_dir": tokenizer_dir, "init_dir": init_dir, "device": trainer.resolved_device()}
    common |= {"log": run.log, "memory_limit_bytes": trainer.memory_limit_bytes}
    if trainer.launcher == "ray":
        run.resources.ray_cluster.ensure(RayAsk.for_trainer(trainer))
        train_on_ray(
            training,
            data,
            run.output.path,
            mixture_dir=mixture_dir,
            workers=trainer.workers,
            threads_per_worker=trainer.threads_per_worker,
            strategy=trainer.strategy,
            max_failures=trainer.max_failures,
            **common,
        )
    else:
        order = ResolvedMixture.load(mixture_dir) if mixture_dir else None
        train(training, opener(data)(), run.output.path, order=order, **common)


def training_rows(run: StageRun, result: TrainResult, curve: list[dict], prefix: str = "") -> dict[str, list[dict]]:
    """The catalog's rows of one trained model: ``checkpoints`` and ``loss_curve`` (``sft_`` ones for SFT)."""
    version_column = TABLES[f"{prefix}checkpoints"].version
    fixed = {"experiment": run.experiment.name, "variant": run.instance.variant, version_column: run.output.version}
    return {
        f"{prefix}checkpoints": [fixed | {"scale": run.instance.scale} | _catalog_row(result)],
        f"{prefix}loss_curve": [
            fixed | {"step": int(r["step"]), "loss": r["loss"], "lr": r["lr"], "tokens_seen": int(r["tokens_seen"])}
            for r in curve
        ],
    }


def loss_plot(run: StageRun, curve: list[dict], what: str) -> dict:
    plot = line_plot(
        {run.instance.variant: ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])},
        title=f"{run.experiment.name} {run.instance.label}: {what} loss",
        xlabel="tokens",
        ylabel="loss",
    )
    return {"loss_curve": png_markdown(plot, "loss curve")}


def _catalog_row(result: TrainResult) -> dict:
    return {
        "path": str(result.final_model),
        "tokens_seen": result.tokens_seen,
        "steps": result.steps,
        "epochs": result.data_passes,
        "parameters": result.n_params,
        "final_loss": result.final_loss,
        "tokens_per_s": result.tokens_per_s,
    }


def _figures(instance: Instance, result: TrainResult, curve: list[dict]) -> dict:
    optimal = compute_optimal(result.flops_per_token * result.tokens_seen)
    figures = {
        "variant": instance.variant,
        "scale": instance.scale,
        "final_model": str(result.final_model),
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "data_passes": round(result.data_passes, 3),
        "parameters": result.n_params,
        "flops_per_token": result.flops_per_token,
        "first_loss": curve[0]["loss"],
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "device": result.device,
        "tokens_per_parameter": round(result.tokens_seen / result.n_params, 2),
        "compute_optimal_parameters": round(optimal.parameters),
    }
    measured = {  # in the worker that trained, on its own device
        "device_name": result.device_name,
        "world_size": result.world_size,
        "tokens_per_s_per_device": round(result.tokens_per_s_per_device, 1),
        "mfu": result.mfu,
        "peak_flops": result.peak_flops,
        "estimated_memory_bytes": result.estimated_memory_bytes,
    }
    return figures | {k: v for k, v in measured.items() if v is not None}


STAGE = Stage(
    name="checkpoint",
    posix=True,
    revision=4,  # 3: meta-device init, per-parameter seeds, sharded checkpoints; 4: micro-batches cut to their longest
    own=_own,
    reads=(Read("data_mixture"), Read("token_shards", every_partition=True)),
    partitioning="scales",
    per_variant=True,
    settings=("trainer",),
    resources=("ray_cluster",),
    job="training",
    kinds=frozenset({"pytorch", "transformers"}),
    accelerator=True,
    retried=True,
    description="A fresh LLaMA-architecture model (or training.init's checkpoint, mid-trained) trained on the "
    "{variant} mixture, one partition per scale (model size x token budget) of the experiment matrix; resumes from "
    "its last checkpoint; final model in Hugging Face format.",
    compute=checkpoint,
)

"""Pretraining: a LLaMA-architecture model trained on each variant's mixture, one partition per scale of the
experiment matrix, in the Dagster process or on Ray Train; resumes from its last checkpoint; final model in Hugging
Face format."""

from assets.mixture import packed_shards
from assets.stage import StageResult, StageRun, png_markdown
from resources.ray_cluster import RayAsk
from tpt.config import Experiment
from tpt.errors import InputError
from tpt.models import resolve_model
from tpt.plots import line_plot
from tpt.stages import Instance, Read, Stage
from tpt.tokenization.mixture import ResolvedMixture
from tpt.training import TrainResult, train
from tpt.training.planner import compute_optimal
from tpt.training.ray_launch import train_on_ray
from tpt.versioning import folder_digest, versioned_fields


class MixtureMissingError(InputError, RuntimeError):
    pass


def _own(experiment: Experiment, instance: Instance) -> dict:
    training = versioned_fields(experiment.training_for(instance.scale)) if instance.scale else None
    if training and training["init"] is None:  # a fresh model: the version it had before init existed
        del training["init"]
    return {"variant": instance.variant, "training": training}


def checkpoint(run: StageRun) -> StageResult:
    out, training, trainer = run.output, run.experiment.training_for(run.instance.scale), run.resources.trainer
    result = TrainResult.load(out.path)
    reused = result is not None
    if result is None:
        _train(run, training, trainer)
        result = TrainResult.load(out.path)
    curve = result.read_curve()
    fixed = {"experiment": run.experiment.name, "variant": run.instance.variant, "checkpoint_version": out.version}
    rows = {
        "checkpoints": [fixed | {"scale": run.instance.scale} | _catalog_row(result)],
        "loss_curve": [
            fixed | {"step": int(r["step"]), "loss": r["loss"], "lr": r["lr"], "tokens_seen": int(r["tokens_seen"])}
            for r in curve
        ],
    }
    plot = line_plot(
        {run.instance.variant: ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])},
        title=f"{run.experiment.name} {run.instance.label}: training loss",
        xlabel="tokens",
        ylabel="loss",
    )
    return StageResult(
        reused,
        _figures(run.instance, result, curve),
        rows,
        content_version=folder_digest(result.final_model, out.path / "final.sha256"),
        extra_metadata={"loss_curve": png_markdown(plot, "loss curve")},
    )


def _train(run: StageRun, training, trainer) -> None:
    """In the Dagster process or on Ray Train, resuming from the last checkpoint in the output folder."""
    mixture_dir = run.input("data_mixture").path
    mixture = ResolvedMixture.finished(mixture_dir)
    if mixture is None:
        raise MixtureMissingError(f"no resolved mixture for {run.instance.label}; materialize data_mixture first")
    shards = packed_shards(run.outputs, run.instance.variant)
    tokenizer_dir, device = resolve_model(run.experiment.tokenizer, weights=False), trainer.resolved_device()
    common = {"tokenizer_dir": tokenizer_dir, "device": device, "log": run.log}
    common["memory_limit_bytes"] = trainer.memory_limit_bytes
    common["init_dir"] = resolve_model(training.init) if training.init else None
    if trainer.launcher == "ray":
        run.resources.ray_cluster.ensure(RayAsk.for_trainer(trainer))
        train_on_ray(
            training,
            shards.paths,
            run.output.path,
            mixture_dir=mixture_dir,
            workers=trainer.workers,
            threads_per_worker=trainer.threads_per_worker,
            strategy=trainer.strategy,
            max_failures=trainer.max_failures,
            **common,
        )
    else:
        train(training, shards, run.output.path, order=mixture, **common)


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
    revision=3,  # 3: meta-device init with per-parameter seeds (other initial weights), sharded checkpoints
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

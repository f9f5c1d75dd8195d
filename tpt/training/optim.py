"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedule (nanoGPT's recipe)."""

from __future__ import annotations

import math
from typing import Any

import torch

from tpt.config import TrainingConfig


def make_optimizer(model: torch.nn.Module, config: TrainingConfig, device: str) -> torch.optim.AdamW:
    """Decay only >= 2-D tensors (matmul weights, embeddings); norms' gains and biases are left undecayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.startswith("cuda")  # fused kernels are CUDA-only; the CPU path stays the reference one
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


class Schedule:
    """LR multiplier for step ``s`` (0-based): linear warmup over ``warmup_steps``, then constant or cosine.

    Cosine decays to ``min_ratio`` (10%) of the peak at the last step, as nanoGPT and Chinchilla do. A plain
    class, not a lambda, so ``LambdaLR.state_dict()`` records it and a checkpoint carries the schedule.
    """

    def __init__(self, warmup_steps: int, total_steps: int, kind: str, min_ratio: float = 0.1):
        self.warmup_steps, self.total_steps, self.kind, self.min_ratio = warmup_steps, total_steps, kind, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        span = max(self.total_steps - 1 - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int) -> Any:
    schedule = Schedule(config.warmup_steps, total_steps, config.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

"""The model and its next-token loss as one module, so DDP and FSDP wrap a single forward that returns the loss.

Unchunked, the LM head's logits for the whole micro-batch are computed and upcast to fp32 at once: at 8k context
and a 128k vocabulary that is 4.2 GB of fp32 logits per sequence, three times over in the backward. With
``chunk_tokens`` the LM head and cross-entropy run over that many tokens at a time inside
``torch.utils.checkpoint``, so the forward keeps only the final hidden states and the backward recomputes one
chunk's logits at a time: the logits' memory becomes ``chunk_tokens x vocab`` whatever the context.

Chunked is not bit-equal to unchunked on CPU fp32: the loss is a sum of chunk sums, and the LM head's weight
gradient a sum of per-chunk matmuls, both added in another order than one reduction (measured on the test model,
6 steps, chunks of 16 tokens: largest loss gap 1.9e-6 at a loss of 10.7, ``tests/tpt/training/test_loop.py``).
``TrainingConfig.loss_chunk_tokens`` is therefore versioned. Chunked runs are themselves exactly reproducible and
resume bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


class CausalLMLoss(torch.nn.Module):
    """``forward(inputs, targets)`` -> the summed cross-entropy over the targets that are not ``IGNORE``."""

    def __init__(self, lm: torch.nn.Module, chunk_tokens: int | None = None):
        super().__init__()
        self.lm, self.chunk_tokens = lm, chunk_tokens

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.chunk_tokens is None:
            logits = self.lm(input_ids=inputs).logits
            return _token_loss_sum(logits, targets.flatten())
        hidden = self.lm.model(input_ids=inputs).last_hidden_state.flatten(0, 1)
        targets = targets.flatten()
        head = self.lm.lm_head
        total = hidden.new_zeros((), dtype=torch.float32)
        for lo in range(0, len(targets), self.chunk_tokens):
            hi = lo + self.chunk_tokens
            total = total + checkpoint(_head_loss_sum, head, hidden[lo:hi], targets[lo:hi], use_reentrant=False)
        return total


def _head_loss_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _token_loss_sum(head(hidden), targets)


def _token_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, -2), targets, ignore_index=IGNORE, reduction="sum")

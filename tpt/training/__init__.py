"""Pretraining a LLaMA-architecture model on packed token shards: plain torch, no orchestration imports."""

from tpt.training.checkpoint import CheckpointError, training_fingerprint
from tpt.training.loop import TrainingInputError, TrainResult, train
from tpt.training.memory import MemoryEstimate, ModelTooLargeError, check_fits, memory_estimate, training_memory
from tpt.training.model import SpecialTokens, build_model, flops_per_token, llama_config, param_count

__all__ = [
    "CheckpointError",
    "MemoryEstimate",
    "ModelTooLargeError",
    "SpecialTokens",
    "TrainResult",
    "TrainingInputError",
    "build_model",
    "check_fits",
    "flops_per_token",
    "llama_config",
    "memory_estimate",
    "param_count",
    "train",
    "training_fingerprint",
    "training_memory",
]

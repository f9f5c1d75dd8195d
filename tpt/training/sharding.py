"""FSDP2 for the training loop: weights, gradients and AdamW moments sharded over the data-parallel ranks.

Each decoder layer is one FSDP unit (its weights are all-gathered for its forward and its backward, then freed
again); the root unit holds the embeddings, the final norm and the LM head. Checkpoints keep the single-process
format: the full state is gathered to rank 0's CPU one tensor at a time and written there, and on resume every
rank reads the whole checkpoint and keeps its shard, so a run can stop under one launch mode and resume under
the other. ``torch.distributed`` must already be up (Ray Train starts it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from tpt.training.export import export_hf
from tpt.training.model import build_model

TO_RANK_0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: torch.nn.Module, device: str) -> None:
    """Shard a model built whole on the CPU (from the seed a single process uses, so both start from the same
    weights); each rank's shards move to ``device``, so the whole model never sits on one accelerator."""
    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):  # sum, not mean: the loss is already divided by the global batch
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM(1 / factor)


def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Model and optimizer state as one process's ``state_dict()`` has them (the optimizer's keyed by parameter
    index), on rank 0's CPU; the other ranks get empty dicts. Every rank must call it: it all-gathers."""
    model_state, optim_state = get_state_dict(model, optimizer, options=TO_RANK_0)
    if dist.get_rank() != 0:
        return {}, {}
    index = {name: i for i, name in enumerate(_names(model, optimizer))}
    return model_state, {
        "state": {index[name]: s for name, s in optim_state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim_state["param_groups"]],
    }


def restore_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
) -> None:
    """Load a full (single-process format) checkpoint that every rank has read; each rank keeps its shard."""
    names = _names(model, optimizer)
    by_name = {
        "state": {names[i]: s for i, s in optim_state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optim_state["param_groups"]],
    }
    options = StateDictOptions(full_state_dict=True)
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=by_name, options=options)


def export_sharded(model: torch.nn.Module, tokenizer_dir: str | Path, target: Path) -> Path | None:
    """The final model in Hugging Face format, written by rank 0 from the gathered weights into an unsharded
    ``LlamaForCausalLM`` (built on the meta device: no second initialisation). Every rank must call it."""
    state = get_model_state_dict(model, options=TO_RANK_0)
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):
        whole = build_model(model.config)
    whole.load_state_dict(state, assign=True)
    whole.tie_weights()  # assign=True replaced the shared tensor of tied embeddings by two copies
    return export_hf(whole, tokenizer_dir, target)


def _names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the order ``optimizer.state_dict()`` numbers the parameters."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for group in optimizer.param_groups for p in group["params"]]

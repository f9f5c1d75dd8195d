"""DDP and FSDP2 for the training loop, both built from ``torch.distributed`` (Ray Train starts the process group).

DDP (``DistributedDataParallel``): every rank holds the whole model; gradients are all-reduced in buckets while the
backward still runs, and only on a step's last micro-batch (``no_sync`` on the others).

FSDP2 (``fully_shard``): weights, gradients and AdamW moments sharded over the ranks. Each decoder layer is one unit
(its weights all-gathered for its forward and its backward, then freed again); the root unit holds the embeddings,
the final norm and the LM head. The model is sharded while still on the meta device, so no rank ever builds it
whole. On GPUs the mixed-precision policy computes in bf16 and all-gathers and reduce-scatters in bf16 (half of
fp32's traffic; gradients accumulated over a step's micro-batches are then bf16 too); on CPUs everything stays fp32,
so the tests can compare with one process. Gradients are reduce-scattered on a step's last micro-batch only
(``set_requires_gradient_sync``), at the cost of holding the layers' unsharded gradients until then.

Both reduce with a plain sum, not the libraries' mean: the loss is already divided by the global batch's targets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from tpt.training.export import export_hf
from tpt.training.loss import CausalLMLoss
from tpt.training.model import empty_model


def shard_model(net: CausalLMLoss, device: str) -> None:
    """Shard ``net`` (still on the meta device) over all ranks and allocate each rank's shards on ``device``."""
    kind = torch.device(device).type
    mesh = init_device_mesh(kind, (dist.get_world_size(),))
    bf16 = kind == "cuda"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16) if bf16 else None
    for layer in net.lm.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy or MixedPrecisionPolicy())
    fully_shard(net, mesh=mesh, mp_policy=policy or MixedPrecisionPolicy())
    for module in net.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM(1 / factor)
    net.to_empty(device=device)


def replicate(net: CausalLMLoss, device: str) -> DistributedDataParallel:
    """DDP over all ranks, its bucketed all-reduce summing (not averaging) the gradients."""
    ddp = DistributedDataParallel(net, device_ids=[torch.device(device)] if device.startswith("cuda") else None)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def _sum_hook(state, bucket):  # unannotated: DDP rejects the string annotations of this module
    """DDP's default all-reduce (of a ``dist.GradBucket``) without its division by the world size."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


@contextlib.contextmanager
def gradient_sync(net: torch.nn.Module, last: bool) -> Iterator[None]:
    """Reduce gradients over the ranks only on a step's last micro-batch (a no-op in one process)."""
    if isinstance(net, DistributedDataParallel) and not last:
        with net.no_sync():
            yield
        return
    if isinstance(net, FSDPModule):
        net.set_requires_gradient_sync(last)
    yield


def export_sharded(lm: torch.nn.Module, tokenizer_dir: str | Path, target: Path) -> Path | None:
    """The final model in Hugging Face format, written by rank 0 from the gathered weights into an unsharded
    ``LlamaForCausalLM`` (built on the meta device: no second initialisation). Every rank must call it."""
    state = get_model_state_dict(lm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    whole = empty_model(lm.config)
    whole.load_state_dict(state, assign=True)
    whole.tie_weights()  # assign=True replaced the shared tensor of tied embeddings by two copies
    return export_hf(whole, tokenizer_dir, target)

"""The run both distributed tests (DDP and FSDP) compare with one process: a tiny model, 6 steps of 4 sequences,
so each of 2 ranks takes one micro-batch of 2 a step, with a checkpoint every 3 steps."""

from tpt.config import ModelShape, TrainingConfig

CONFIG = TrainingConfig(
    model=ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64),
    seq_len=32,
    batch_tokens=4 * 32,  # 4 sequences a step: 2 per rank, one micro-batch each
    token_budget=6 * 4 * 32,
    lr=3e-3,
    warmup_steps=2,
    micro_batch_size=2,
    checkpoint_every=3,
)
TEXTS = [f"Worker {i} reads sequence {i * 7} and adds {i + 3} to the running total of the batch." for i in range(12)]

"""The distributed path: two Ray Train workers on gloo train to the same losses as one process on the same batch."""

import pytest
import ray

from tests.tpt.training.two_ranks import CONFIG, TEXTS
from tpt.atomic import read_json
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import train
from tpt.training.ray_launch import train_on_ray

pytestmark = pytest.mark.slow

# Summation order differs (per-rank sums, then one all-reduce), so equality is to float rounding, not bitwise.
TOLERANCE = 1e-4


def test_two_gloo_workers_match_a_single_process_run(tmp_path, tokenizer_dir):
    stats = tokenize_and_pack(TEXTS, tokenizer_dir, CONFIG.seq_len, tmp_path / "s.bin")
    single = train(CONFIG, PackedShards([stats.path]), tmp_path / "single", tokenizer_dir=tokenizer_dir, log=print)

    lines: list[str] = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        train_on_ray(
            CONFIG,
            [stats.path],
            tmp_path / "ddp",
            tokenizer_dir=tokenizer_dir,
            mixture_dir=None,
            workers=2,
            log=lines.append,
        )
    finally:
        ray.shutdown()
    distributed = read_json(tmp_path / "ddp" / "train_result.json")
    assert len(distributed["losses"]) == len(single.losses) == 6
    gaps = [abs(a - b) for a, b in zip(distributed["losses"], single.losses, strict=True)]
    assert max(gaps) < TOLERANCE, (distributed["losses"], single.losses)
    assert distributed["losses"][-1] < distributed["losses"][0]
    assert (tmp_path / "ddp" / "final" / "config.json").exists()
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    assert any(line.startswith("trained 6 steps") for line in lines)  # rank 0's log reached the caller

"""The distributed path: two Ray Train workers on gloo (DDP) train to the same losses as one process on the same
batch, and a worker killed mid-run is replaced within the same fit, the run repeating the uninterrupted curve."""

import os
import signal

import pytest
import ray

from tests.tpt.training.two_ranks import CONFIG, TEXTS
from tpt.atomic import read_json
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import train
from tpt.training.ray_launch import LOG_FILE, train_on_ray

pytestmark = pytest.mark.slow

# Summation order differs (per-rank sums, then one all-reduce), so equality is to float rounding, not bitwise.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def shard(tmp_path_factory, tokenizer_dir):
    return tokenize_and_pack(TEXTS, tokenizer_dir, CONFIG.seq_len, tmp_path_factory.mktemp("data") / "s.bin").path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, local_ray, shard, tokenizer_dir):
    out, lines = tmp_path_factory.mktemp("ddp"), []
    train_on_ray(CONFIG, [shard], out, tokenizer_dir=tokenizer_dir, mixture_dir=None, workers=2, log=lines.append)
    return read_json(out / "train_result.json"), out, lines


def test_two_gloo_workers_match_a_single_process_run(tmp_path, ddp_run, shard, tokenizer_dir):
    single = train(CONFIG, PackedShards([shard]), tmp_path / "single", tokenizer_dir=tokenizer_dir, log=print)
    distributed, out, lines = ddp_run
    assert len(distributed["losses"]) == len(single.losses) == 6
    gaps = [abs(a - b) for a, b in zip(distributed["losses"], single.losses, strict=True)]
    assert max(gaps) < TOLERANCE, (distributed["losses"], single.losses)
    assert distributed["losses"][-1] < distributed["losses"][0]
    assert (out / "final" / "config.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    assert any(line.startswith("trained 6 steps") for line in lines)  # rank 0's log reached the caller
    # Throughput measured inside the workers; no data-sheet peak for a CPU, so no MFU.
    assert distributed["world_size"] == 2 and distributed["strategy"] == "ddp"
    assert distributed["tokens_per_s_per_device"] == pytest.approx(distributed["tokens_per_s"] / 2)
    assert distributed["device_name"] and distributed["peak_flops"] is None and distributed["mfu"] is None
    # Each of the two ranks wrote its part of every checkpoint (DCP spreads replicated tensors over the ranks).
    shards = {p.name for p in (out / "checkpoints" / "step-00000006").glob("*.distcp")}
    assert {name.split("_")[2] for name in shards} == {"0", "1"}, shards


def test_a_killed_worker_is_replaced_and_the_run_repeats_the_uninterrupted_curve(
    tmp_path, ddp_run, shard, tokenizer_dir
):
    """Rank 1 kills its own process (SIGKILL) right after step 4; Ray Train's failure policy starts a new worker
    group within the same ``fit``, which resumes from the step-3 checkpoint and finishes the run."""
    unbroken, *_ = ddp_run
    marker = tmp_path / "killed-once"

    def kill_rank_1_after_step_4(step, *_):
        if step == 4 and ray.train.get_context().get_world_rank() == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "run"
    train_on_ray(
        CONFIG,
        [shard],
        out,
        tokenizer_dir=tokenizer_dir,
        mixture_dir=None,
        workers=2,
        max_failures=1,
        on_step=kill_rank_1_after_step_4,
        log=lambda _: None,
    )
    assert marker.exists(), "the worker was not killed"
    result = read_json(out / "train_result.json")
    assert result["resumed_from_step"] == 3
    assert "resuming from" in (out / LOG_FILE).read_text()
    assert result["losses"] == unbroken["losses"]  # bit for bit: same ranks, same reductions, restored state

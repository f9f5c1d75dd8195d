"""The distributed path: two Ray Train workers on gloo (DDP) train to the same losses as one process on the same
batch (pretraining and SFT), and a worker killed mid-run is replaced within the same fit, the run repeating the
uninterrupted curve."""

import os
import shutil
import signal
from functools import partial

import pytest
import ray

from tests.tpt.training.two_ranks import CONFIG, TEXTS
from tpt.atomic import read_json
from tpt.config import ChatWheelFile, ModelSource, SFTConfig
from tpt.sft import SFTSequences, build_sft_sequences
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import train
from tpt.training.data import DataOrder
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


def test_a_ddp_checkpoint_resumes_in_one_process(tmp_path, ddp_run, shard, tokenizer_dir):
    """2 DDP ranks -> 1 process: the checkpoint's parts, spread over two ranks' files, load into one model."""
    unbroken, out, _ = ddp_run
    shutil.copytree(out / "checkpoints" / "step-00000003", tmp_path / "checkpoints" / "step-00000003")
    one = train(CONFIG, PackedShards([shard]), tmp_path, tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert one.resumed_from_step == 3 and one.losses[:3] == unbroken["losses"][:3]
    assert max(abs(a - b) for a, b in zip(one.losses, unbroken["losses"], strict=True)) < TOLERANCE


def test_sft_on_two_workers_matches_a_single_process_run(tmp_path, local_ray, tokenizer_dir, tiny_checkpoint):
    """SFT through the same launcher: each worker opens the built SFT rows itself, and the assistant-token loss is
    normalised over the whole batch's assistant tokens, so two ranks whose shares hold different numbers of
    assistant tokens still take the single process's steps."""
    wheel = ChatWheelFile(name="w", wheel="evals", members=("evals/registry/data/math_for_5th-grader/samples.jsonl",))
    sft = SFTConfig(sources=[wheel], seq_len=256, epochs=0.4, sequences_per_step=4, micro_batch_size=1, lr=1e-3)
    data, _ = build_sft_sequences(sft, tokenizer_dir, tmp_path / "data")
    training = sft.training(ModelSource(kind="local", name=str(tiny_checkpoint)), len(data))
    common = {"tokenizer_dir": tiny_checkpoint, "init_dir": tiny_checkpoint, "log": lambda _: None}
    single = train(training, data, tmp_path / "single", **common)
    train_on_ray(training, partial(SFTSequences.load, tmp_path / "data"), tmp_path / "ray", workers=2, **common)
    distributed = read_json(tmp_path / "ray" / "train_result.json")["losses"]
    shares = [data.batch(DataOrder(len(data), training.seed).indices(0, 4)[r::2])[2].sum() for r in (0, 1)]
    assert shares[0] != shares[1]  # the ranks' shares of the first step differ in assistant tokens
    assert len(distributed) == len(single.losses) == 2
    assert max(abs(a - b) for a, b in zip(distributed, single.losses, strict=True)) < TOLERANCE

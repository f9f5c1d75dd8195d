"""SFT data: the real SmolLM2 chat template, the loss mask on assistant tokens only (checked against the labels the
loop trains on), counted skips for bad conversations, and the offline evals-registry source."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tpt.config import ChatLocalFolder, ChatWheelFile, SFTConfig
from tpt.corpus.decontaminate import NgramIndex
from tpt.sft import SFTDataError, SFTSequences, build_sft_sequences, render_masked
from tpt.tokenization.tokenizer import load_tokenizer
from tpt.training.loop import IGNORE, _train_step
from tpt.training.loss import CausalLMLoss

CHAT = [
    {"role": "system", "content": "You solve arithmetic."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "And times 4?"},
    {"role": "assistant", "content": "5 * 4 = 20."},
]
WHEEL = ChatWheelFile(
    name="word_problems", wheel="evals", members=("evals/registry/data/math_for_5th-grader/samples.jsonl",)
)


def test_mask_covers_exactly_the_assistant_turns(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    ids, mask = render_masked(tokenizer, CHAT)
    assert tokenizer.decode(ids[mask]) == "2 + 3 = 5.<|im_end|>\n5 * 4 = 20.<|im_end|>\n"
    outside = tokenizer.decode(ids[~mask])
    assert "What is 2 + 3?" in outside and "You solve arithmetic." in outside and "= 5" not in outside


def test_a_tokenizer_without_a_template_gets_chatml(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    saved, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        ids, mask = render_masked(tokenizer, CHAT[1:3])
    finally:
        tokenizer.chat_template = saved
    assert tokenizer.decode(ids).startswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(ids[mask]) == "2 + 3 = 5.<|im_end|>\n"


@pytest.mark.parametrize("chunk", [None, 7])
def test_the_loop_takes_the_loss_only_where_labels_are_not_ignored(chunk, tokenizer_dir, tiny_checkpoint, tmp_path):
    """labels = next token on assistant positions, -100 everywhere else: the loop's loss is that cross-entropy,
    through the chunked LM-head loss too."""
    tokenizer = load_tokenizer(tokenizer_dir)
    ids, mask = render_masked(tokenizer, CHAT)
    seq_len = len(ids) + 5
    padded, full_mask = np.zeros((1, seq_len), np.int64), np.zeros((1, seq_len), bool)
    padded[0, : len(ids)], full_mask[0, : len(ids)] = ids, mask
    labels = np.where(full_mask, padded, IGNORE)[:, 1:]
    assert (labels != IGNORE).sum() == mask[1:].sum() and set(labels[0, len(ids) - 1 :]) == {IGNORE}
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    config = SFTConfig(sources=[WHEEL], seq_len=seq_len, micro_batch_size=1, sequences_per_step=1)
    training = config.training(init=_local(tiny_checkpoint), n_samples=1).model_copy(
        update={"loss_chunk_tokens": chunk}
    )
    net, real = CausalLMLoss(model, chunk), np.array([len(ids)])
    off = torch.autocast("cpu", enabled=False)
    loss, _ = _train_step(net, model, padded, real, training, "cpu", off, None, full_mask)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(padded[:, :-1])).logits
    expected = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(labels).flatten(), ignore_index=IGNORE)
    assert loss == pytest.approx(float(expected), rel=1e-5)


def _local(path):
    from tpt.config import ModelSource

    return ModelSource(kind="local", name=str(path))


def test_build_counts_bad_conversations_and_reuses_the_finished_data(tokenizer_dir, tmp_path):
    folder = tmp_path / "chats"
    folder.mkdir()
    lines = [
        {"messages": CHAT},
        {"messages": CHAT[:2]},  # no assistant turn
        {"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]},  # too long
        {
            "messages": [
                {
                    "role": "user",
                    "content": "Natalia sold clips to 48 of her friends in April, and then "
                    "she sold half as many clips in May.",
                },
                {"role": "assistant", "content": "72"},
            ]
        },
        {"messages": "not a list"},
    ]
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    index = NgramIndex({"gsm8k": ["Natalia sold clips to 48 of her friends in April, and then she sold half"]}, 8)
    config = SFTConfig(sources=[ChatLocalFolder(name="mine", path=str(folder))], seq_len=128)
    sequences, report = build_sft_sequences(config, tokenizer_dir, tmp_path / "out", contamination=index)
    counts = report["sources"]["mine"]["counts"]
    assert report["sources"]["mine"]["accepted"] == 1 and len(sequences) == 1
    assert counts == {
        "no_assistant_turn": 1,
        "longer_than_seq_len": 1,
        "contaminated:gsm8k": 1,
        "not_a_conversation": 1,
        "bad_json": 1,
    }
    again = SFTSequences.load(tmp_path / "out")
    assert again.fingerprint == sequences.fingerprint and again.batch([0])[2].sum() == report["assistant_tokens"]


def test_no_usable_conversation_is_one_line(tokenizer_dir, tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"messages": CHAT[:2]}) + "\n")
    config = SFTConfig(sources=[ChatLocalFolder(name="mine", path=str(tmp_path))], seq_len=64)
    with pytest.raises(SFTDataError, match="no usable SFT conversation"):
        build_sft_sequences(config, tokenizer_dir, tmp_path / "out")


def test_the_offline_evals_word_problems_become_conversations(tokenizer_dir, tmp_path):
    config = SFTConfig(sources=[WHEEL], seq_len=256)
    sequences, report = build_sft_sequences(config, tokenizer_dir, tmp_path)
    assert report["sources"]["word_problems"]["accepted"] == 20 == len(sequences)
    tokenizer = load_tokenizer(tokenizer_dir)
    ids, lengths, mask = sequences.batch([0])
    assert tokenizer.decode(ids[0][mask[0]]) == "[1440]<|im_end|>\n"


def test_sft_trains_from_a_checkpoint_and_resumes_exactly(tokenizer_dir, tiny_checkpoint, tmp_path):
    from tpt.training import train

    config = SFTConfig(sources=[WHEEL], seq_len=256, sequences_per_step=4, micro_batch_size=2, lr=1e-3, warmup_steps=0)
    data, _ = build_sft_sequences(config, tokenizer_dir, tmp_path / "data")
    training = config.training(_local(tiny_checkpoint), len(data)).model_copy(update={"checkpoint_every": 2})
    common = {"tokenizer_dir": tiny_checkpoint, "init_dir": tiny_checkpoint, "log": lambda line: None}
    full = train(training, data, tmp_path / "full", **common)
    assert full.steps == 5 and full.losses[-1] < full.losses[0]

    class Stop(Exception):
        pass

    def stop(step, *_):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(training, data, tmp_path / "cut", on_step=stop, **common)
    resumed = train(training, data, tmp_path / "cut", **common)
    assert resumed.resumed_from_step == 2 and resumed.losses == full.losses

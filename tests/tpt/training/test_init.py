"""A student that starts from a checkpoint: any transformers causal LM (a tiny random Qwen2 here, biases and all),
trained by the same loop, resumed exactly, estimated from its own config, and refused before compute when it is
not a causal LM or cannot embed the tokenizer's ids."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel, Qwen2Config, Qwen2ForCausalLM

from tpt.config import ModelSource, TrainingConfig
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import TrainingInputError, train, training_memory
from tpt.training.init import InitModelError, exact_param_count, make_student
from tpt.training.model import SpecialTokens, empty_model, init_buffers

TEXTS = [f"{n} has {i} pears and eats {i - 1}, so {n} keeps one pear." for i, n in enumerate("ABCDEF", start=2)]


def _config(init_dir, **kw) -> TrainingConfig:
    fields = dict(seq_len=32, batch_tokens=2 * 32, token_budget=4 * 2 * 32, micro_batch_size=1, checkpoint_every=2)
    return TrainingConfig(init=ModelSource(kind="local", name=str(init_dir)), **(fields | kw))


def _qwen(tmp_path_factory, tokenizer_dir, tied: bool):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer) + 64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        eos_token_id=tokenizer.eos_token_id,
        dtype=torch.bfloat16,  # as hub checkpoints are saved: the student still trains fp32 master weights
    )
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("tiny_qwen2")
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random Qwen2 (attention biases, untied head) whose embedding table is padded past the tokenizer."""
    return _qwen(tmp_path_factory, tokenizer_dir, tied=False)


@pytest.fixture(scope="module")
def tied_qwen_dir(tmp_path_factory, tokenizer_dir):
    """The same with a tied LM head (as SmolLM2 and small Qwen2.5 models have): saved without lm_head.weight."""
    return _qwen(tmp_path_factory, tokenizer_dir, tied=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer_dir) -> PackedShards:
    folder = tmp_path_factory.mktemp("shards")
    tokenize_and_pack(TEXTS, tokenizer_dir, 32, folder / "part-0.bin")
    return PackedShards.from_dir(folder)


def test_continued_training_defaults_and_exactly_one_start(qwen_dir):
    config = _config(qwen_dir)
    assert (config.lr, config.schedule, config.weight_decay) == (3e-5, "cosine", 0.0)
    assert _config(qwen_dir, lr=1e-4).lr == 1e-4
    with pytest.raises(ValueError, match="exactly one of model"):
        TrainingConfig(seq_len=32, batch_tokens=32, token_budget=32)


def test_estimate_comes_from_the_loaded_config(qwen_dir, shards):
    config = _config(qwen_dir)
    student = make_student(config, shards.vocab_size, SpecialTokens(0, 0), init_dir=qwen_dir)
    lm = empty_model(student.hf_config)
    assert type(lm).__name__ == "Qwen2ForCausalLM" and not lm.config.use_cache
    assert all(p.is_meta and p.dtype == torch.float32 for p in lm.parameters())
    loaded = AutoModelForCausalLM.from_pretrained(qwen_dir)
    assert student.n_params == sum(p.numel() for p in loaded.parameters())  # biases included
    assert student.vocab_rows == shards.vocab_size + 64
    estimate = training_memory(config, shards.vocab_size, student=student)
    assert estimate.weights == 4 * student.n_params and estimate.optimizer == 8 * student.n_params
    with pytest.raises(ValueError, match="pass the student"):
        training_memory(config, shards.vocab_size)


@pytest.mark.parametrize("tied", [False, True])
def test_the_student_starts_from_the_checkpoints_weights(tied, qwen_dir, tied_qwen_dir, shards):
    """Built on the meta device from the checkpoint's config, materialised, then filled tensor by tensor (bf16 on
    disk, fp32 in the student); a tied head stays one tensor with the embedding."""
    folder = tied_qwen_dir if tied else qwen_dir
    student = make_student(_config(folder), shards.vocab_size, SpecialTokens(0, 0), init_dir=folder)
    lm = empty_model(student.hf_config)
    lm.to_empty(device="cpu")
    lm.tie_weights()
    init_buffers(lm)
    student.initialise(lm, seed=0)
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    expected = reference.state_dict()
    assert lm.state_dict().keys() == expected.keys()
    assert all(torch.equal(t, expected[name]) for name, t in lm.state_dict().items())
    assert (lm.lm_head.weight is lm.model.embed_tokens.weight) == tied
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(lm(input_ids=ids).logits, reference(input_ids=ids).logits)  # rotary buffers too


def test_mid_training_lowers_the_loss_and_resumes_exactly(qwen_dir, shards, tokenizer_dir, tmp_path):
    config = _config(qwen_dir, lr=3e-3, warmup_steps=1)
    full = train(config, shards, tmp_path / "full", tokenizer_dir=tokenizer_dir, init_dir=qwen_dir, log=print)
    assert full.losses[-1] < full.losses[0]
    start = AutoModelForCausalLM.from_pretrained(qwen_dir)
    trained = AutoModelForCausalLM.from_pretrained(full.final_model)
    assert type(trained).__name__ == "Qwen2ForCausalLM"
    assert not torch.equal(start.model.layers[0].self_attn.q_proj.bias, trained.model.layers[0].self_attn.q_proj.bias)

    class Stop(Exception):
        pass

    def stop_at_2(step, *_):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config, shards, tmp_path / "cut", tokenizer_dir=tokenizer_dir, init_dir=qwen_dir, on_step=stop_at_2)
    resumed = train(config, shards, tmp_path / "cut", tokenizer_dir=tokenizer_dir, init_dir=qwen_dir)
    assert resumed.resumed_from_step == 2 and resumed.losses == full.losses


def test_a_model_that_is_not_a_causal_lm_is_refused_before_compute(tmp_path, shards, tokenizer_dir):
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(InitModelError, match="'bert' model saved as \\['BertModel'\\] is not a causal LM"):
        train(_config(tmp_path), shards, tmp_path / "out", tokenizer_dir=tokenizer_dir, init_dir=tmp_path)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, shards, tokenizer_dir):
    small = Qwen2Config(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    Qwen2ForCausalLM(small).save_pretrained(tmp_path)
    with pytest.raises(InitModelError, match="the model embeds only 1000"):
        train(_config(tmp_path), shards, tmp_path / "out", tokenizer_dir=tokenizer_dir, init_dir=tmp_path)
    assert exact_param_count(Qwen2ForCausalLM(small).config) > 0


def test_init_without_a_resolved_folder_is_refused(qwen_dir, shards, tokenizer_dir, tmp_path):
    with pytest.raises(InitModelError, match="no resolved model folder"):
        train(_config(qwen_dir), shards, tmp_path, tokenizer_dir=tokenizer_dir)
    assert issubclass(InitModelError, ValueError) and not issubclass(TrainingInputError, InitModelError)


@pytest.mark.slow
def test_fsdp_workers_continue_the_checkpoint_as_one_process_does(qwen_dir, tokenizer_dir, tmp_path):
    """Two FSDP workers (gloo, through Ray Train) shard the loaded student on the meta device, each fills only its
    slices from the checkpoint, and train to the single process's losses (equal to float rounding)."""
    import ray

    from tpt.atomic import read_json
    from tpt.training.ray_launch import train_on_ray

    shard = tokenize_and_pack(TEXTS, tokenizer_dir, 32, tmp_path / "part-0.bin").path
    config = _config(qwen_dir, lr=3e-3, warmup_steps=1, batch_tokens=4 * 32, micro_batch_size=2)
    single = train(config, PackedShards([shard]), tmp_path / "single", tokenizer_dir=tokenizer_dir, init_dir=qwen_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        train_on_ray(
            config,
            [shard],
            tmp_path / "fsdp",
            tokenizer_dir=tokenizer_dir,
            mixture_dir=None,
            workers=2,
            strategy="fsdp",
            init_dir=qwen_dir,
        )
    finally:
        ray.shutdown()
    losses = read_json(tmp_path / "fsdp" / "train_result.json")["losses"]
    assert max(abs(a - b) for a, b in zip(losses, single.losses, strict=True)) < 1e-4, (losses, single.losses)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "final")
    assert type(exported).__name__ == "Qwen2ForCausalLM"

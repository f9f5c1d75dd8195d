import pytest

from tpt.config import ModelShape
from tpt.training import (
    ModelTooLargeError,
    SpecialTokens,
    build_model,
    check_fits,
    flops_per_token,
    llama_config,
    memory_estimate,
    param_count,
)
from tpt.training.model import layer_params

TOKENS = SpecialTokens(eos_id=2, pad_id=2, bos_id=1)


@pytest.mark.parametrize(
    "shape",
    [
        ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64),
        ModelShape(
            hidden_size=48, num_layers=3, num_heads=6, num_kv_heads=6, intermediate_size=96, tie_embeddings=True
        ),
    ],
)
def test_param_count_matches_the_built_model(shape):
    model = build_model(llama_config(shape, 1000, 16, TOKENS))
    assert param_count(shape, 1000) == sum(p.numel() for p in model.parameters())
    assert model.config.tie_word_embeddings is shape.tie_embeddings
    assert model.config.num_key_value_heads == shape.num_kv_heads
    assert model.config.rope_parameters["rope_theta"] == shape.rope_theta


def test_flops_per_token_is_6n_plus_attention():
    shape = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=128)
    vocab, seq = 1000, 32
    non_embedding = param_count(shape, vocab) - vocab * 64  # the input embedding is a lookup, the LM head a matmul
    assert flops_per_token(shape, vocab, seq) == 6 * non_embedding + 12 * 2 * 64 * seq
    tied = shape.model_copy(update={"tie_embeddings": True})
    assert flops_per_token(tied, vocab, seq) == 6 * param_count(tied, vocab) + 12 * 2 * 64 * seq
    # An 8B LLaMA-3 at 8k context: about 6 * 8e9 + attention, the number MFU reports rest on.
    llama3_8b = ModelShape(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336)
    assert param_count(llama3_8b, 128_256) == 8_030_261_248
    assert 4.8e10 < flops_per_token(llama3_8b, 128_256, 8192) < 6.0e10


def test_memory_estimate_refuses_what_cannot_fit():
    big = ModelShape(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336)
    estimate = memory_estimate(big, 128_256, 8192, 1)
    assert estimate.weights + estimate.gradients + estimate.optimizer == 16 * param_count(big, 128_256)
    assert estimate.total > 128 * 2**30  # an 8B model does not train in fp32 AdamW on one 80 GB GPU
    with pytest.raises(ModelTooLargeError, match="GiB") as refused:
        check_fits(estimate, "cpu", limit_bytes=80 * 2**30)
    assert "\n" not in str(refused.value)
    small = ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    check_fits(memory_estimate(small, 1000, 16, 4), "cpu")  # what this machine has now
    longer = memory_estimate(small, 1000, 64, 4)
    assert longer.activations > memory_estimate(small, 1000, 16, 4).activations


def test_fsdp_divides_the_sharded_state_and_adds_what_it_gathers():
    """LLaMA-3 8B at 2k context, bf16 activations: refused on one 80 GiB GPU, accepted on eight under FSDP."""
    shape = ModelShape(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336)
    vocab, n = 128_256, param_count(shape, 128_256)
    whole = memory_estimate(shape, vocab, 2048, 1, activation_bytes=2)
    sharded = memory_estimate(shape, vocab, 2048, 1, activation_bytes=2, shards=8)
    assert (sharded.weights, sharded.gradients, sharded.optimizer) == (4 * n // 8, 4 * n // 8, 8 * n // 8)
    assert sharded.activations == whole.activations and whole.gathered == 0
    root = 2 * vocab * 4096 + 4096  # embeddings, LM head, final norm: gathered for the whole step
    assert sharded.gathered == 8 * (root + 2 * layer_params(shape))  # weights + grads, root + two layers
    with pytest.raises(ModelTooLargeError, match="FSDP over more Ray workers"):
        check_fits(whole, "cuda", limit_bytes=80 * 2**30)
    check_fits(sharded, "cuda", limit_bytes=80 * 2**30)
    assert sharded.total < whole.total / 2

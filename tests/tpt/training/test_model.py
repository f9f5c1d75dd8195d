import pytest
import torch

from tpt.config import ModelShape
from tpt.training import SpecialTokens, build_model, flops_per_token, llama_config, param_count
from tpt.training.model import empty_model

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


def test_init_is_the_same_for_every_layout_and_transformers_like():
    """Drawn per parameter from (seed, name): a model built on the meta device and materialised later gets the
    same weights as one built directly, whatever else ran before; the seed changes them."""
    shape = ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    config = llama_config(shape, 1000, 16, TOKENS)
    a = build_model(config, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    b = build_model(config, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.lm_head.weight, build_model(config, seed=4).lm_head.weight)
    assert a.lm_head.weight.std().item() == pytest.approx(config.initializer_range, rel=0.05)
    assert torch.equal(a.model.norm.weight, torch.ones(32)) and not a.model.embed_tokens.weight[TOKENS.pad_id].any()
    assert torch.equal(a.model.rotary_emb.inv_freq, type(a.model.rotary_emb)(config).inv_freq)
    assert all(p.is_meta for p in empty_model(config).parameters())
    tied = build_model(llama_config(shape.model_copy(update={"tie_embeddings": True}), 1000, 16, TOKENS))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight

"""The transformers engine's refill decoder: the same tokens as the model's own generate, one prompt at a time; a
finished row's place goes to the next prompt at once (fewer forwards than batch by batch, never wider than its
rows); per-row seeds; forced lengths for the benchmark; stop strings."""

import pytest
import torch

from tpt.config import SamplingConfig
from tpt.generation.engines import EngineSpec, TransformersEngine

PROMPTS = [
    "The mitochondria is",
    "Binary search works by halving the interval, so that after each comparison",
    "Ohm's law",
    "In 1648 the Treaty of Westphalia ended the Thirty Years' War and",
    "Merge sort",
]
GREEDY = SamplingConfig(max_thinking_tokens=10, temperature=0.0, stop=())


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> TransformersEngine:
    return TransformersEngine(EngineSpec("transformers", str(tiny_checkpoint), torch_threads=2, max_num_seqs=2))


def _widths(engine: TransformersEngine) -> list[int]:
    widths: list[int] = []
    engine.model.register_forward_pre_hook(
        lambda _m, _a, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return widths


def test_greedy_tokens_equal_the_models_own_generate_one_prompt_at_a_time(engine):
    assert engine.refills
    got = engine.generate(PROMPTS, GREEDY, [0] * len(PROMPTS))
    tok = engine.tokenizer
    for prompt, completion in zip(PROMPTS, got, strict=True):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = engine.model.generate(**ids, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id)
        expected = out[0, ids["input_ids"].shape[1] :].tolist()
        assert completion.text == tok.decode(expected, skip_special_tokens=True)
        assert completion.output_tokens == len(expected)


def test_a_finished_row_makes_room_for_the_next_prompt_at_once(tiny_checkpoint):
    """Rows of 2 over forced lengths 8, 1, 1, 1, 8: the short ones pass through the second row while the first
    decodes, so the call takes 4 prefills + 7 decodes = 11 forwards; batch by batch ([8, 1], [1, 1], [8]) it
    would decode 8 + 1 + 8 = 17 times. No forward is wider than 2 rows."""
    engine = TransformersEngine(EngineSpec("transformers", str(tiny_checkpoint), torch_threads=2, max_num_seqs=2))
    widths = _widths(engine)
    lengths = [8, 1, 1, 1, 8]
    got = engine.generate(PROMPTS, GREEDY, [0] * 5, forced_lengths=lengths)
    assert [c.output_tokens for c in got] == lengths and {c.finish_reason for c in got} == {"length"}
    assert len(widths) == 11 and max(widths) == 2
    # Each completion carries when it entered and left the batch: never more than 2 at once.
    events = sorted([(c.started_at, 1) for c in got] + [(c.finished_at, -1) for c in got], key=lambda e: (e[0], e[1]))
    running = [sum(step for _, step in events[: i + 1]) for i in range(len(events))]
    assert all(c.started_at <= c.finished_at for c in got) and max(running) == 2


def test_each_row_samples_from_its_own_seed_whatever_its_mates(engine):
    sampling = SamplingConfig(max_thinking_tokens=12, temperature=1.0, top_p=0.95, stop=())
    alone = engine.generate([PROMPTS[0]], sampling, [11])[0].text
    crowded = engine.generate([PROMPTS[3], PROMPTS[1], PROMPTS[0], PROMPTS[4]], sampling, [5, 6, 11, 7])
    assert crowded[2].text == alone  # third in the queue: admitted when a row freed up, same sample
    assert engine.generate([PROMPTS[0]], sampling, [12])[0].text != alone


def test_a_stop_string_ends_its_row_where_it_appears(engine):
    """The stop marker is the text of the greedy continuation's first 3 tokens: the row ends at its third token."""
    tok = engine.tokenizer
    ids = tok(PROMPTS[1], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = engine.model.generate(**ids, do_sample=False, max_new_tokens=3, pad_token_id=tok.pad_token_id)
    marker = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert marker.strip()
    stopped = engine.generate([PROMPTS[1]], GREEDY.model_copy(update={"stop": (marker,)}), [0])[0]
    assert stopped.finish_reason == "stop" and stopped.output_tokens == 3 and stopped.text == marker


def test_calls_in_flight_share_the_rows_and_each_gets_its_own_results(tiny_checkpoint):
    """Two callers' batches on one decode loop of 2 rows: the second caller's prompts fill the rows the first one's
    short requests leave, and each caller gets exactly its own continuations (those one call alone gives)."""
    import asyncio

    engine = TransformersEngine(EngineSpec("transformers", str(tiny_checkpoint), torch_threads=2))
    alone = [engine.generate(PROMPTS[:2], GREEDY, [0, 0]), engine.generate(PROMPTS[2:], GREEDY, [0, 0, 0])]
    widths = _widths(engine)

    async def both():
        return await asyncio.gather(
            engine.generate_async(PROMPTS[:2], GREEDY, [0, 0], rows=2, forced_lengths=None),
            engine.generate_async(PROMPTS[2:], GREEDY, [0, 0, 0], rows=2, forced_lengths=None),
        )

    together = asyncio.run(both())
    assert [[c.text for c in call] for call in together] == [[c.text for c in call] for call in alone]
    assert max(widths) == 2

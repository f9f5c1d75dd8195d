import pytest
from transformers import AutoTokenizer

from tpt.config import PAPER_PROMPT, PromptConfig
from tpt.generation.prompt import build_prompt, cut_document, extract_thinking


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_long_document_is_cut_to_the_token_limit(tokenizer):
    document = " ".join(f"word{i}" for i in range(400))
    text, n_tokens, cut = cut_document(document, tokenizer, 50)
    assert cut and n_tokens == 50
    assert document.startswith(text[:20]) and len(text) < len(document)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 52  # decode/encode may merge at the edge


def test_short_document_is_untouched(tokenizer):
    assert cut_document("A short note.", tokenizer, 50) == ("A short note.", 4, False)


def test_prompt_wraps_the_document_in_the_papers_template_and_chat_format(tokenizer):
    built = build_prompt("The moon raises tides.", tokenizer, PromptConfig(version="v1"), 2048)
    instruction = PAPER_PROMPT.replace("{{CONTEXT}}", "")
    assert "The moon raises tides.\n## End of the context\nSimulate an expert’s" in built.text
    assert instruction.strip() in built.text
    assert built.text.rstrip().endswith("<|im_start|>assistant")
    raw = build_prompt("The moon.", tokenizer, PromptConfig(version="v1", use_chat_template=False), 2048)
    assert raw.text == PAPER_PROMPT.replace("{{CONTEXT}}", "The moon.")


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("<think>\nStep one. Step two.</think>\nFinal answer: 4", ("Step one. Step two.", True)),
        ("Plain reasoning that ran out of tokens", ("Plain reasoning that ran out of tokens", False)),
        ("  reasoning </think> answer </think> more", ("reasoning", True)),
        ("", ("", False)),
    ],
)
def test_thinking_is_cut_at_the_stop_marker(generated, expected):
    assert extract_thinking(generated, ("</think>",)) == expected

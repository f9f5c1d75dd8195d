"""The paper's prompt: a document cut to a token limit, the template around it, the chat template on top,
and the model's answer cut at ``</think>`` (what follows the thinking is dropped)."""

from __future__ import annotations

from dataclasses import dataclass

from tpt.config import PromptConfig

CONTEXT_SLOT = "{{CONTEXT}}"
THINK_OPEN = "<think>"


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    document_tokens: int  # tokens of the document actually placed in the prompt
    cut: bool  # whether the document was longer than the limit


def cut_document(document: str, tokenizer, max_tokens: int) -> tuple[str, int, bool]:
    """The document's first ``max_tokens`` tokens, decoded back to text with the thinking model's tokenizer."""
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return document, len(ids), False
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), max_tokens, True


def build_prompt(document: str, tokenizer, prompt: PromptConfig, max_document_tokens: int) -> BuiltPrompt:
    context, n_tokens, cut = cut_document(document, tokenizer, max_document_tokens)
    text = prompt.template.replace(CONTEXT_SLOT, context)
    if prompt.use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return BuiltPrompt(text, n_tokens, cut)


def extract_thinking(generated: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """The thinking part of a generation and whether a stop marker ended it.

    Engines usually stop at the marker themselves; this also handles engines that run past it, and drops a
    leading ``<think>`` that reasoning models emit.
    """
    cut_at = min((i for i in (generated.find(s) for s in stop) if i >= 0), default=-1)
    stopped = cut_at >= 0
    thinking = generated[:cut_at] if stopped else generated
    thinking = thinking.lstrip()
    if thinking.startswith(THINK_OPEN):
        thinking = thinking[len(THINK_OPEN) :]
    return thinking.strip(), stopped

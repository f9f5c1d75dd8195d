"""A conversation rendered with the student's own chat template, and the mask of the tokens the loss is taken on.

Assistant spans are found from the template itself: the text of ``messages[:i]`` with the generation prompt ends where
assistant turn ``i`` begins, and the text of ``messages[:i + 1]`` ends where it ends (its end-of-turn token included,
so the model learns to stop). A template whose renderings are not prefixes of each other cannot be masked this way
and is refused. Tokens are assigned to spans by their character offsets in the one tokenization of the whole text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tpt.errors import InputError

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, for a tokenizer that defines no template (a base model): the format Qwen2.5 and SmolLM2 use."""


class ChatTemplateError(InputError, ValueError):
    pass


def render_masked(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the rendered conversation and a bool mask, true exactly on assistant tokens."""
    template = getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE

    def render(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], chat_template=template, tokenize=False, add_generation_prompt=prompt
        )

    text = render(len(messages), False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = render(i, True), render(i + 1, False)
        if not (text.startswith(end) and end.startswith(start)):
            raise ChatTemplateError(f"the chat template of {tokenizer.name_or_path} does not render turns as prefixes")
        spans.append((len(start), len(end)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=bool)
    for t, (lo, hi) in enumerate(encoded["offset_mapping"]):
        mask[t] = any(lo >= a and hi <= b and hi > lo for a, b in spans)
    return ids, mask

"""Supervised fine-tuning data: chat conversations read from the hub, a local folder or a registry wheel,
decontaminated against the test sets, rendered with the student's chat template and masked so that only assistant
tokens are trained on. One conversation per sequence (no packing): no sample ever attends to another."""

from tpt.sft.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplateError, render_masked
from tpt.sft.data import SFTDataError, iter_conversations
from tpt.sft.sequences import SFTSequences, build_sft_sequences

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatTemplateError",
    "SFTDataError",
    "SFTSequences",
    "build_sft_sequences",
    "iter_conversations",
    "render_masked",
]

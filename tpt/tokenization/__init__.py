"""Tokenize documents with the HF fast tokenizer and pack them into fixed-length, memory-mappable shards."""

from tpt.tokenization.pack import ShardStats, index_path_for, token_dtype, tokenize_and_pack
from tpt.tokenization.reader import PackedShards, ShardError
from tpt.tokenization.tokenizer import TokenizerError, load_tokenizer, special_ids

__all__ = [
    "PackedShards",
    "ShardError",
    "ShardStats",
    "TokenizerError",
    "index_path_for",
    "load_tokenizer",
    "special_ids",
    "token_dtype",
    "tokenize_and_pack",
]

"""Corpus download, cleaning, exact dedup and sharding."""

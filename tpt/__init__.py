"""Thinking Augmented Pre-Training engines: plain Python, callable with or without Dagster."""

"""Thinking-trajectory generation: prompts, engines (transformers, vLLM) and the Ray runner."""

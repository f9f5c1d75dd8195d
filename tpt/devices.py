"""``auto`` means the GPU when torch sees one; every component that places work resolves devices the same way."""


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_device_args(on_gpu: bool) -> dict:
    """The vLLM engine settings each device kind needs, for every place that starts an engine. On GPUs vLLM's own
    defaults (graph compilation) and 90% of device memory. On CPUs: no graph compilation (minutes there), a fifth of
    host memory for weights and KV cache, and prompts prefilled whole (chunked prefill rewinds a seeded request's
    torch.Generator, which CPU generators cannot do: "CPU Generator does not use offset")."""
    if on_gpu:
        return {"gpu_memory_utilization": 0.9}
    return {"enforce_eager": True, "gpu_memory_utilization": 0.2, "enable_chunked_prefill": False}

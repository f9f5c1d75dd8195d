"""``auto`` means the GPU when torch sees one; every component that places work resolves devices the same way."""


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

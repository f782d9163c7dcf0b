"""Device choice shared by the CLI and the widgets: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""

from __future__ import annotations


def available_devices() -> list[str]:
    import torch

    devices = ["auto", "cpu"]
    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto"):
    """A ``torch.device``; ``auto`` prefers CUDA, then MPS, then CPU. Unknown or absent: ValueError."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' asked for, but this torch build sees no CUDA GPU; use cpu or auto")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}' asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but MPS is not available on this machine")
    return device


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def out_of_memory_message(err) -> str | None:
    """One line for a GPU out-of-memory error (torch's own is a paragraph), or None for any other error."""
    if type(err).__name__ != "OutOfMemoryError":
        return None
    import re

    tried = re.search(r"Tried to allocate ([\d.]+ \w+)", str(err))
    return ("the GPU ran out of memory" + (f" (tried to allocate {tried.group(1)})" if tried else "") +
            ": use a smaller --batch-size or --width, or --device cpu; checkpoints saved before are kept")

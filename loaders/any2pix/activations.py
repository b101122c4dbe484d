"""The activation functions named by transformers configs (`hidden_act` / `activation_function`), as
transformers 4.34.1 `activations.py` `ACT2FN` computes them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """NewGELUActivation (GPT-2's "gelu_new"): the tanh approximation, written as transformers writes it."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """QuickGELUActivation (OpenAI CLIP): x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "relu": F.relu,
}


def activation(name: str):
    """The function for a config's activation name; ValueError naming the supported ones otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]

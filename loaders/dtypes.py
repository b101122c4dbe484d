"""The dtype names the pack's nodes and command line accept, in one place."""

from __future__ import annotations

import torch

NAMED_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

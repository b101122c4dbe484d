"""Merging SmartEdit's LoRA into the base weights equals peft's unmerged LoRA forward."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lmm_edit.loaders.smartedit.files import LoraSettings
from lmm_edit.loaders.smartedit.load import merge_lora


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)


def test_merged_lora_equals_peft_lora_forward():
    torch.manual_seed(0)
    d, r, alpha = 32, 8, 16  # data/adapter_config.json: r 8, lora_alpha 16
    model = get_peft_model(
        _Attention(d), LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p)  # peft initialises B to zero; make the LoRA matter
    model.eval()
    x = torch.randn(3, d)
    state = {}
    for name in ("q_proj", "v_proj"):
        layer = getattr(model.base_model.model, name)
        state[f"{name}.weight"] = layer.base_layer.weight.detach().clone()
        state[f"{name}.lora_A.weight"] = layer.lora_A["default"].weight.detach().clone()
        state[f"{name}.lora_B.weight"] = layer.lora_B["default"].weight.detach().clone()
    merged = merge_lora(dict(state), LoraSettings(r, alpha, ("q_proj", "v_proj"), "test"), Path("test"))
    assert set(merged) == {"q_proj.weight", "v_proj.weight"}
    with torch.no_grad():
        for name in ("q_proj", "v_proj"):
            ours = x @ merged[f"{name}.weight"].T
            theirs = getattr(model.base_model.model, name)(x)
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)

"""The InstructAny2Pix LLM: a LLaMA-2 (Vicuna-7B-v1.5) with an input projector and an output head.

Reference: jacklishufan/InstructAny2Pix @ d11e49be50f0dde117ce99b58f6b7aab5dc9bddf
- `instructany2pix/llm/model/language_model/any2pix_llama.py` (`InstructAny2PixLMForCausalLM.forward`,
  the `extra_replacement` branch used at inference);
- `instructany2pix/llm/model/any2pix_arch.py` (`vae_projector_image`, `vae_predictor_image`);
- `instructany2pix/llm/model/multimodal_projector/builder.py` (`build_vision_projector`,
  `build_vision_predictor`: `linear` or `mlp{N}x_gelu`).

Numerics of the decoder: transformers 4.34.1's LlamaModel (`loaders/llama.py` with `norm_output="input"`,
`rope_theta` and `rms_norm_eps` from config.json). Only `vae_projector_image` / `vae_predictor_image` are used
at inference (audio inputs also go through the image projector); the vision tower, `mm_projector` and the
audio projector/predictor stored in the file are not loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelFileError
from ..llama import LlamaConfig, LlamaLM
from ..operations import DEFAULT_OPERATIONS

PROJECTOR = "vae_projector_image"
PREDICTOR = "vae_predictor_image"


def mlp_depth(projector_type: str, path: str | Path) -> int:
    """Number of Linear layers of LLaVA's `mm_projector_type` (`linear` -> 1, `mlp2x_gelu` -> 2, ...)."""
    if projector_type == "linear":
        return 1
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match is None:
        raise ModelFileError(
            path, "mm_projector_type `linear` or `mlp<N>x_gelu` (InstructAny2Pix: mlp2x_gelu)",
            f"mm_projector_type {projector_type!r}", "use the config.json of the InstructAny2Pix LLM release",
        )
    return int(match.group(1))


VICUNA_15_CONTEXT = 4096  # lmsys/vicuna-7b-v1.5 config.json max_position_embeddings (the LLM's base)


@dataclass(frozen=True)
class Any2PixLLMConfig:
    """Sizes of the LLM, its projector (embedding -> hidden) and predictor (hidden -> embedding)."""

    llama: LlamaConfig
    depth: int  # Linear layers in the projector and in the predictor
    embed_in: int  # projector input width (ImageBind embedding, 1024)
    embed_out: int  # predictor output width (1024)
    context: int = VICUNA_15_CONTEXT  # positions the LLM was trained on (config.json max_position_embeddings)

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], config: dict, path: str | Path) -> Any2PixLLMConfig:
        """Sizes from the tensor shapes (file keys `model.*`, `lm_head.weight`); heads, eps, RoPE from config.json."""

        def shape(key: str) -> tuple[int, ...]:
            if key not in shapes:
                raise ModelFileError(
                    path, f"the InstructAny2Pix LLM tensor {key}", f"{len(shapes)} tensors without it",
                    "use the llm-retrained folder of the release (a LLaMA checkpoint with vae_projector_image / "
                    "vae_predictor_image, saved by InstructAny2PixLMForCausalLM)",
                )
            return shapes[key]

        vocab, hidden = shape("model.embed_tokens.weight")
        layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("model.layers."))
        intermediate = shape("model.layers.0.mlp.gate_proj.weight")[0]
        heads = int(config.get("num_attention_heads", 0))
        if heads <= 0 or hidden % heads:
            raise ModelFileError(
                path, f"num_attention_heads dividing the hidden width {hidden}", f"{config.get('num_attention_heads')!r}",
                "use the config.json of the LLM release (Vicuna-7B: 32 heads)",
            )
        kv_heads = int(config.get("num_key_value_heads") or heads)
        rope_scaling = config.get("rope_scaling")
        if kv_heads != heads or rope_scaling or config.get("attention_bias"):
            raise ModelFileError(
                path, "a LLaMA-2-7B layout: num_key_value_heads == num_attention_heads, no rope_scaling, no attention_bias",
                f"num_key_value_heads {kv_heads}, rope_scaling {rope_scaling!r}, attention_bias {config.get('attention_bias')!r}",
                "use the InstructAny2Pix LLM release (Vicuna-7B-v1.5 based); other LLaMA variants are not supported",
            )
        depth = mlp_depth(str(config.get("mm_projector_type", "linear")), path)
        first = "0.weight" if depth > 1 else "weight"
        last = f"{2 * (depth - 1)}.weight" if depth > 1 else "weight"
        proj_in = shape(f"model.{PROJECTOR}.{first}")
        pred_out = shape(f"model.{PREDICTOR}.{last}")
        if proj_in[0] != hidden or pred_out[1] != hidden:
            raise ModelFileError(
                path, f"{PROJECTOR} -> width {hidden} and {PREDICTOR} from width {hidden} (the LLM width)",
                f"{PROJECTOR}.{first} {list(proj_in)}, {PREDICTOR}.{last} {list(pred_out)}",
                "use the weights and config.json of the same InstructAny2Pix LLM release",
            )
        llama = LlamaConfig(
            hidden=hidden, layers=layers, heads=heads, intermediate=intermediate, vocab=vocab,
            rms_eps=float(config.get("rms_norm_eps", 1e-6)), rope_theta=float(config.get("rope_theta", 10000.0)),
            norm_output="input",  # transformers 4.34.1 LlamaRMSNorm
        )
        context = int(config.get("max_position_embeddings", VICUNA_15_CONTEXT))
        return cls(llama=llama, depth=depth, embed_in=proj_in[1], embed_out=pred_out[0], context=context)


def gelu_mlp(widths: list[int], operations=DEFAULT_OPERATIONS) -> nn.Sequential:
    """Linear, GELU, Linear, ... (no GELU after the last); keys `0.*`, `2.*`, ... as LLaVA's nn.Sequential."""
    modules: list[nn.Module] = []
    for i in range(len(widths) - 1):
        if i:
            modules.append(nn.GELU())  # exact (erf) GELU, torch.nn.GELU() default
        modules.append(operations.Linear(widths[i], widths[i + 1]))
    return nn.Sequential(*modules)


class Any2PixLLM(nn.Module):
    """`llm` (LlamaLM: embed_tokens, layers, norm, lm_head), `vae_projector_image`, `vae_predictor_image`."""

    def __init__(self, config: Any2PixLLMConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        h = config.llama.hidden
        self.llm = LlamaLM(config.llama, operations)
        # build_vision_projector: Linear(in, H) then (GELU, Linear(H, H)) x (depth - 1)
        self.vae_projector_image = gelu_mlp([config.embed_in] + [h] * config.depth, operations)
        # build_vision_predictor: (Linear(H, H), GELU) x (depth - 1) then Linear(H, out)
        self.vae_predictor_image = gelu_mlp([h] * config.depth + [config.embed_out], operations)

    def prompt_embeddings(self, input_ids: torch.Tensor, aux: torch.Tensor, video_id: int) -> torch.Tensor:
        """Token embeddings [1, T, H] with `vae_projector_image(aux[i])` ADDED at the i-th `<video>` (i < N).

        input_ids [1, T]; aux [N, D] (ImageBind embeddings renormalised to norm 20). The reference zeroes the
        embeddings it replaces through a boolean-mask copy, which writes nothing, so the token embedding of
        `<video>` stays under the projection (fixture README quirk 5); training did the same.
        """
        embeds = self.llm.embed(input_ids)
        if aux.shape[0] == 0:
            return embeds
        rows, cols = torch.where(input_ids == video_id)
        if rows.numel() < aux.shape[0]:
            raise ValueError(
                f"the prompt has {rows.numel()} <video> slots for {aux.shape[0]} inputs: each image/audio input needs "
                "its [imageN]/[audioN] marker in the instruction"
            )
        projected = self.vae_projector_image(aux.to(embeds.dtype))
        added = torch.zeros_like(embeds)
        added[rows[: aux.shape[0]], cols[: aux.shape[0]]] = projected
        return embeds + added

    def execution_device(self) -> torch.device:
        """Where an encode runs: where ComfyUI's ModelPatcher loaded the module (it sets ``device``; under partial
        loading some weights stay offloaded and are cast per layer), else where the weights are."""
        placed = self.__dict__.get("device")
        return placed if isinstance(placed, torch.device) else self.llm.norm.weight.device

    def working_memory(self, new_tokens: int) -> int:
        """Bytes an encode needs beyond the weights: the KV cache of a full-context prompt plus ``new_tokens``, the
        prompt pass's MLP activations, and the logits of each step."""
        llama, itemsize = self.config.llama, self.llm.norm.weight.element_size()
        positions = self.config.context + new_tokens
        kv_cache = 2 * llama.layers * llama.hidden * positions * itemsize
        activations = 4 * positions * llama.intermediate * itemsize
        return kv_cache + activations + 4 * llama.vocab * new_tokens

    def predict_embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """`vae_predictor_image` of last-layer states [..., H] -> embeddings [..., D]."""
        return self.vae_predictor_image(hidden)

    @torch.no_grad()
    def hidden_states(self, inputs_embeds: torch.Tensor) -> list[torch.Tensor]:
        """transformers' `output_hidden_states` of one full forward: [inputs_embeds, after layer 0, ...,
        after layer L-2, final-norm output], each [B, T, H] (L + 1 entries)."""
        captured: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out)) for layer in self.llm.layers]
        try:
            final = self.llm(inputs_embeds)
        finally:
            for hook in hooks:
                hook.remove()
        return [inputs_embeds, *captured[:-1], final]

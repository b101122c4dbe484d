"""Assembling SmartEdit's LMM (LLaVA-1.1 LLaMA + LoRA, CLIP vision tower, mm_projector, tokenizer).

Weight sources, as the reference (fixture README "Where the LLM weights come from"):
- decoder layers, final norm, LoRA A/B: `LLM-*/adapter_model.*` (keys `model.base_model.model.*`);
- embed_tokens: rows [0, V0) from the LLaVA-1.1 base, rows [V0, V0+35) from the LLM file;
- lm_head: rows [0, V0) from the LLaVA-1.1 base, rows [V0, V0+35) from the embeddings_qformer file;
- mm_projector: the embeddings_qformer file (LLaVA's own projector is never used);
- vision tower: CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, transformers key layout).
Widths, depth and vocabulary come from tensor shapes; the LoRA is merged as W + (alpha / r) * B @ A in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..llama import LlamaConfig, LlamaLM, rope_inv_freq
from .bundle import LoraSettings, SmartEditBundle
from .errors import SmartEditLoadError
from .files import read_json, read_shapes, read_tensors
from .llava_base import base_rows, open_llava_base
from .tokenizer import ADDED_TOKENS, IMAGE_TOKEN_COUNT, LLAVA_EXTRA_ROWS, LlamaSlowTokenizer
from .vision import ClipVisionTower, clip_config_from_shapes, clip_state_to_tower

LLM_PREFIX = "model.base_model.model."  # SmartEdit LLMSDTrainer._save filter for the LoRA-wrapped LlamaModel
CLIP_PREFIX = "vision_model."
ADDED_ROWS = len(ADDED_TOKENS)  # 35 rows appended by setup_tokens_for_conversation


@dataclass
class LMMInfo:
    """Facts about the loaded LMM that the encoder needs."""

    base_vocab: int
    image_token_ids: list[int]
    eos_id: int
    select_layer: int
    family: str = "llava-1.1"
    sources: dict[str, str] = field(default_factory=dict)


class SmartEditLMM(nn.Module):
    """The LMM handle: `llm` (LlamaLM), `vision` (ClipVisionTower), `mm_projector`, plus tokenizer and info."""

    def __init__(self, llm: LlamaLM, vision: ClipVisionTower, mm_projector: nn.Linear, tokenizer: LlamaSlowTokenizer, info: LMMInfo):
        super().__init__()
        self.llm = llm
        self.vision = vision
        self.mm_projector = mm_projector
        self.tokenizer = tokenizer
        self.info = info


def _strip_llm_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = key[len(LLM_PREFIX) :].replace(".base_layer.", ".")  # newer peft wraps the base Linear
        name = name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        out[name] = value
    if "embed_tokens.weight" not in out:
        raise SmartEditLoadError(
            path, f"keys {LLM_PREFIX}* with embed_tokens.weight (SmartEdit's LLM-*/adapter_model.bin)",
            f"{len(state)} tensors, none of them the LLM's", "point the loader at the SmartEdit bundle folder",
        )
    return out


def merge_lora(state: dict[str, torch.Tensor], lora: LoraSettings, path: Path) -> dict[str, torch.Tensor]:
    """Fold every `X.lora_A` / `X.lora_B` pair into `X.weight`: W + (alpha / r) * B @ A, computed in fp32.

    Works in place (each old weight is released as soon as its merged copy exists) and returns `state`.
    """
    for key in [k for k in state if k.endswith(".lora_A.weight")]:
        base = key[: -len(".lora_A.weight")]
        a, b = state.pop(key).float(), state.pop(base + ".lora_B.weight").float()
        if a.shape[0] != lora.r:
            raise SmartEditLoadError(
                path, f"LoRA rank r={lora.r} (from {lora.source})", f"{key} of shape {list(a.shape)}",
                "use the adapter_config.json that belongs to this LLM file",
            )
        weight = state[base + ".weight"]
        state[base + ".weight"] = (weight.float() + lora.scale * (b @ a)).to(weight.dtype)
    return state


def _llm_config(layers_state: dict[str, torch.Tensor], llava_config: dict, lora_path: Path) -> LlamaConfig:
    vocab, hidden = layers_state["embed_tokens.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in layers_state if k.startswith("layers."))
    intermediate = layers_state["layers.0.mlp.gate_proj.weight"].shape[0]
    inv_freq = layers_state.get("layers.0.self_attn.rotary_emb.inv_freq")
    if inv_freq is not None:
        heads = hidden // (2 * inv_freq.shape[0])
    elif "num_attention_heads" in llava_config:
        heads = int(llava_config["num_attention_heads"])
    else:
        raise SmartEditLoadError(lora_path, "rotary_emb.inv_freq or a LLaVA config with num_attention_heads", "neither", "use the LLaVA-1.1 config.json")
    return LlamaConfig(hidden, layers, heads, intermediate, vocab, float(llava_config.get("rms_norm_eps", 1e-6)))


def _load_vision(clip_path: Path, select_layer: int, dtype: torch.dtype) -> ClipVisionTower:
    file = clip_path
    config_json = None
    if clip_path.is_dir():
        file = next((clip_path / n for n in ("model.safetensors", "pytorch_model.bin") if (clip_path / n).is_file()), clip_path / "model.safetensors")
    if (file.parent / "config.json").is_file():
        config_json = read_json(file.parent / "config.json")
    shapes = read_shapes(file)
    # openai/clip-vit-large-patch14 and ComfyUI clip_vision files: `vision_model.*`; a CLIPVisionModel saved by
    # transformers 5: the same keys without the prefix
    prefix = CLIP_PREFIX if CLIP_PREFIX + "embeddings.patch_embedding.weight" in shapes else ""
    if prefix + "embeddings.patch_embedding.weight" not in shapes:
        raise SmartEditLoadError(
            file, "a CLIP vision model in transformers layout (keys vision_model.*), e.g. openai/clip-vit-large-patch14",
            f"{len(shapes)} tensors without vision_model.embeddings.patch_embedding.weight",
            "use openai/clip-vit-large-patch14 (model.safetensors, or ComfyUI's clip_vision ViT-L/14 file)",
        )
    config = clip_config_from_shapes(shapes, prefix, config_json)
    with torch.device("meta"):
        tower = ClipVisionTower(config, select_layer)
    state = clip_state_to_tower(read_tensors(file, lambda k: k.startswith(prefix), dtype), prefix, tower)
    tower.load_state_dict(state, strict=True, assign=True)
    return tower


def _check_vocab(llm_rows: int, head_rows: int, llava, tokenizer: LlamaSlowTokenizer, bundle: SmartEditBundle) -> int:
    """The base vocabulary V0, after checking LLaVA (V0 + 3 rows), tokenizer (V0 pieces) and both SmartEdit
    files (V0 + 35 rows) agree; the error names the one that disagrees."""
    pieces = tokenizer.base_vocab
    if llava.rows != pieces + LLAVA_EXTRA_ROWS:
        if llava.rows == pieces:
            base_rows(llava, pieces, llava.width, torch.float32)  # raises the LLaVA-1.5 / plain-LLaMA error
        if llava.rows - LLAVA_EXTRA_ROWS + ADDED_ROWS == llm_rows:
            raise SmartEditLoadError(
                tokenizer.model_file, f"a LLaMA tokenizer of {llm_rows - ADDED_ROWS} pieces (the base vocabulary of the weights)",
                f"{pieces} pieces", "use tokenizer.model of Vicuna-1.1 / LLaVA-1.1 (the LLaMA-1 tokenizer, 32000 pieces)",
            )
        raise SmartEditLoadError(
            llava.embed_file, f"{pieces + LLAVA_EXTRA_ROWS} embedding rows (LLaVA-1.1: base vocabulary + 3)",
            f"{llava.rows} rows", "use the LLaVA-1.1 base that matches the SmartEdit bundle and the tokenizer",
        )
    for rows, path, what in ((llm_rows, bundle.llm, "embed_tokens"), (head_rows, bundle.embeddings_qformer, "lm_head")):
        if rows != pieces + ADDED_ROWS:
            raise SmartEditLoadError(
                path, f"{what} with {pieces + ADDED_ROWS} rows: the base vocabulary {pieces} plus the {ADDED_ROWS} SmartEdit "
                "rows <img>, <im_start>, <im_end>, <img_0>..<img_31>",
                f"{rows} rows" + (" (the <img_k> rows are missing)" if rows < pieces + ADDED_ROWS else ""),
                "use the SmartEdit release files as published (re-download LLM-15000 if it predates 2024-04-28)",
            )
    return pieces


def load_lmm(
    bundle: SmartEditBundle,
    llava_dir: str | Path,
    clip_path: str | Path,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> SmartEditLMM:
    """Build the LMM on CPU in `dtype` from a bundle, the LLaVA-1.1 base folder and the CLIP vision weights.

    tokenizer_path: the LLaMA tokenizer.model (default: `<llava_dir>/tokenizer.model`).
    """
    llava = open_llava_base(llava_dir)
    tokenizer = LlamaSlowTokenizer(tokenizer_path or Path(llava_dir) / "tokenizer.model")
    # base weights are cast while read (one copy at the target dtype); LoRA factors and RoPE stay as stored
    small = (".lora_A.", ".lora_B.", "rotary_emb.inv_freq")
    state = read_tensors(bundle.llm, lambda k: k.startswith(LLM_PREFIX) and not any(s in k for s in small), dtype)
    state.update(read_tensors(bundle.llm, lambda k: k.startswith(LLM_PREFIX) and any(s in k for s in small)))
    state = _strip_llm_keys(state, bundle.llm)
    config = _llm_config(state, llava.config, bundle.llm)
    head_rows = read_shapes(bundle.embeddings_qformer).get("lm_head.weight", (0,))[0]
    base_vocab = _check_vocab(config.vocab, head_rows, llava, tokenizer, bundle)
    embed_base, head_base = base_rows(llava, base_vocab, config.hidden, dtype)
    extra = read_tensors(bundle.embeddings_qformer, lambda k: k in ("lm_head.weight", "mm_projector.weight", "mm_projector.bias"))
    llm_state = merge_lora(state, bundle.lora, bundle.llm)
    inv_freq = llm_state.get("layers.0.self_attn.rotary_emb.inv_freq")
    for key in [k for k in llm_state if "rotary_emb" in k]:
        del llm_state[key]
    llm_state["embed_tokens.weight"] = torch.cat([embed_base, llm_state["embed_tokens.weight"][base_vocab:].to(dtype)])
    llm_state["lm_head.weight"] = torch.cat([head_base, extra.pop("lm_head.weight")[base_vocab:].to(dtype)])
    llm_state["inv_freq"] = inv_freq.float() if inv_freq is not None else rope_inv_freq(config.head_dim)
    with torch.device("meta"):
        llm = LlamaLM(config)
    llm.load_state_dict(llm_state, strict=True, assign=True)
    select_layer = int(llava.config.get("mm_vision_select_layer", -2))
    vision = _load_vision(Path(clip_path), select_layer, dtype)
    proj_w = extra["mm_projector.weight"]
    if tuple(proj_w.shape) != (config.hidden, vision.config.hidden):
        raise SmartEditLoadError(
            bundle.embeddings_qformer, f"mm_projector.weight [{config.hidden}, {vision.config.hidden}] (LLM width, CLIP width)",
            f"{list(proj_w.shape)}", "use the CLIP ViT-L/14 (224 px) vision tower LLaVA-1.1 was trained with",
        )
    with torch.device("meta"):
        projector = nn.Linear(vision.config.hidden, config.hidden)
    projector.load_state_dict({"weight": proj_w.to(dtype), "bias": extra["mm_projector.bias"].to(dtype)}, assign=True)
    info = LMMInfo(
        base_vocab=base_vocab,
        image_token_ids=[tokenizer.token_id(f"<img_{i}>") for i in range(IMAGE_TOKEN_COUNT)],
        eos_id=tokenizer.eos_id,
        select_layer=select_layer,
        sources={"llm": str(bundle.llm), "llava": str(llava.folder), "clip": str(clip_path), "tokenizer": str(tokenizer.model_file)},
    )
    return SmartEditLMM(llm, vision, projector, tokenizer, info).eval()

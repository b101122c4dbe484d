"""Assembling SmartEdit from its files: the LMM (LLaVA-1.1 LLaMA + LoRA, CLIP tower, mm_projector, tokenizer),
the bridge (Q-Former + BIM) and the UNet's state dict.

LMM weight sources:

- decoder layers, final norm, LoRA A/B: `LLM-*/adapter_model.*` (keys `model.base_model.model.*`);
- embed_tokens: rows [0, V0) from the LLaVA-1.1 base, rows [V0, V0+35) from the LLM file;
- lm_head: rows [0, V0) from the LLaVA-1.1 base, rows [V0, V0+35) from the embeddings_qformer file;
- mm_projector: the embeddings_qformer file (LLaVA's own projector is never used);
- vision tower: CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, transformers key layout).
Widths, depth and vocabulary come from tensor shapes; the LoRA is merged as W + (alpha / r) * B @ A in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..ip2p.unet_keys import DIFFUSERS_PREFIX, LDM_PREFIX, diffusers_unet_to_ldm
from ..llama import LlamaConfig, LlamaLM, rope_inv_freq
from ..operations import DEFAULT_OPERATIONS
from ..storage import store_weights
from ..weight_files import read_json, read_shapes
from .bim import BIM, BIMConfig
from .conditioning import SmartEditBridge
from .files import FileFormat, SmartEditBundle, find_bundle, merge_lora, read_tensors
from .llava_base import base_rows, check_vocab, open_llava_base
from .lmm import LMMInfo, SmartEditLMM
from .qformer import QFormer, QFormerConfig
from .tokenizer import IMAGE_TOKEN_COUNT, LlamaSlowTokenizer
from .vision import ClipVisionConfig, ClipVisionTower, clip_state_to_tower

LLM_PREFIX = "model.base_model.model."  # SmartEdit LLMSDTrainer._save filter for the LoRA-wrapped LlamaModel
CLIP_PREFIX = "vision_model."
CLIP_IMAGE_SIZE = 224  # LLaVA-1.1 / SmartEdit: openai/clip-vit-large-patch14, 224 px (16 x 16 patches)


def _strip_llm_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = key[len(LLM_PREFIX) :].replace(".base_layer.", ".")  # newer peft wraps the base Linear
        name = name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        out[name] = value
    if "embed_tokens.weight" not in out:
        raise ModelFileError(
            path, f"keys {LLM_PREFIX}* with embed_tokens.weight (SmartEdit's LLM-*/adapter_model.bin)",
            f"{len(state)} tensors, none of them the LLM's", "point the loader at the SmartEdit bundle folder",
        )
    return out


def _llm_config(state: dict[str, torch.Tensor], llava_config: dict, lora_path: Path) -> LlamaConfig:
    """LlamaConfig.from_shapes, with the head count from RoPE's inv_freq (saved by transformers 4.28) or LLaVA's config."""
    hidden = state["embed_tokens.weight"].shape[1]
    inv_freq = state.get("layers.0.self_attn.rotary_emb.inv_freq")
    if inv_freq is not None:
        heads = hidden // (2 * inv_freq.shape[0])
    elif "num_attention_heads" in llava_config:
        heads = int(llava_config["num_attention_heads"])
    else:
        raise ModelFileError(lora_path, "rotary_emb.inv_freq or a LLaVA config with num_attention_heads", "neither",
                             "use the LLaVA-1.1 config.json")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return LlamaConfig.from_shapes(shapes, heads, float(llava_config.get("rms_norm_eps", 1e-6)))


def _load_vision(clip_path: Path, select_layer: int, dtype: torch.dtype, operations=DEFAULT_OPERATIONS) -> ClipVisionTower:
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
        raise ModelFileError(
            file, "a CLIP vision model in transformers layout (keys vision_model.*), e.g. openai/clip-vit-large-patch14",
            f"{len(shapes)} tensors without vision_model.embeddings.patch_embedding.weight",
            "use openai/clip-vit-large-patch14 (model.safetensors, or ComfyUI's clip_vision ViT-L/14 file)",
        )
    config = ClipVisionConfig.from_shapes(shapes, prefix, config_json)
    with torch.device("meta"):
        tower = ClipVisionTower(config, select_layer, operations=operations)
    state = clip_state_to_tower(read_tensors(file, lambda k: k.startswith(prefix), dtype), prefix, tower)
    tower.load_state_dict(state, strict=True, assign=True)
    return tower


def load_lmm(
    bundle: SmartEditBundle,
    llava_dir: str | Path,
    clip_path: str | Path,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    operations=DEFAULT_OPERATIONS,
    storage: torch.dtype | None = None,
) -> SmartEditLMM:
    """Build the LMM on CPU in `dtype` from a bundle, the LLaVA-1.1 base folder and the CLIP vision weights.

    tokenizer_path: the LLaMA tokenizer.model (default: `<llava_dir>/tokenizer.model`). storage: the dtype the
    Linear and Embedding weights are kept in (e.g. fp8; default `dtype`), computed in `dtype` by layers that
    cast per call (loaders/storage.py).
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
    base_vocab = check_vocab(config.vocab, head_rows, llava, tokenizer, bundle)
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
        llm = LlamaLM(config, operations=operations)
    llm.load_state_dict(llm_state, strict=True, assign=True)
    select_layer = int(llava.config.get("mm_vision_select_layer", -2))
    vision = _load_vision(Path(clip_path), select_layer, dtype, operations)
    proj_w = extra["mm_projector.weight"]
    if tuple(proj_w.shape) != (config.hidden, vision.config.hidden):
        raise ModelFileError(
            bundle.embeddings_qformer, f"mm_projector.weight [{config.hidden}, {vision.config.hidden}] (LLM width, CLIP width)",
            f"{list(proj_w.shape)}", "use the CLIP ViT-L/14 (224 px) vision tower LLaVA-1.1 was trained with",
        )
    with torch.device("meta"):
        projector = operations.Linear(vision.config.hidden, config.hidden)
    projector.load_state_dict({"weight": proj_w.to(dtype), "bias": extra["mm_projector.bias"].to(dtype)}, assign=True)
    info = LMMInfo(
        base_vocab=base_vocab,
        image_token_ids=[tokenizer.token_id(f"<img_{i}>") for i in range(IMAGE_TOKEN_COUNT)],
        eos_id=tokenizer.eos_id,
        select_layer=select_layer,
        sources={"llm": str(bundle.llm), "llava": str(llava.folder), "clip": str(clip_path), "tokenizer": str(tokenizer.model_file)},
    )
    lmm = SmartEditLMM(llm, vision, projector, tokenizer, info).eval()
    store_weights(lmm, storage or dtype, dtype, operations)
    return lmm


QFORMER_PREFIX = "sd_qformer."
QUERY_KEY = "sd_query_tokens"
BIM_PREFIXES = (
    "modulate_head.", "modulate_transformer.", "pe_layer.",
    "dimension_reduction_head_zeroconv.", "dimension_reduction_head_qformer_out.",
)


def check_vision_size(lmm: SmartEditLMM, clip_path: str | Path) -> None:
    """SmartEdit's LLaVA-1.1 was trained on 224 px CLIP features (256 patches); refuse another tower."""
    size = lmm.vision.config.image_size
    if size != CLIP_IMAGE_SIZE:
        raise ModelFileError(
            clip_path, f"CLIP ViT-L/14 for {CLIP_IMAGE_SIZE} px images (openai/clip-vit-large-patch14)",
            f"a vision tower for {size} px images", "pick the 224 px ViT-L/14 (the 336 px one belongs to LLaVA-1.5)",
        )


def _qformer(bundle: SmartEditBundle, dtype: torch.dtype, heads: int | None, operations=DEFAULT_OPERATIONS) -> QFormer:
    raw = read_tensors(bundle.embeddings_qformer, lambda k: k.startswith(QFORMER_PREFIX) or k == QUERY_KEY, dtype)
    if QUERY_KEY not in raw or not any(k.startswith(QFORMER_PREFIX + "encoder.layer.") for k in raw):
        raise ModelFileError(
            bundle.embeddings_qformer, f"{QUERY_KEY} and {QFORMER_PREFIX}encoder.layer.* (SmartEdit's embeddings_qformer file)",
            f"{len(raw)} matching tensors", "use embeddings_qformer/checkpoint-<step>_embeddings_qformer.bin of the release",
        )
    state = {k[len(QFORMER_PREFIX) :]: v for k, v in raw.items() if k.startswith(QFORMER_PREFIX)}
    state.pop("embeddings.position_ids", None)  # buffer of the removed position embeddings
    state["query_tokens"] = raw[QUERY_KEY]
    config = QFormerConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()}, heads)
    with torch.device("meta"):
        model = QFormer(config, operations=operations)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _bim(bundle: SmartEditBundle, dtype: torch.dtype, operations=DEFAULT_OPERATIONS) -> BIM:
    state = read_tensors(bundle.bim, lambda k: k.startswith(BIM_PREFIXES), dtype)
    if "modulate_head.weight" not in state or "dimension_reduction_head_zeroconv.weight" not in state:
        raise ModelFileError(
            bundle.bim, "the BIM tensors modulate_head.*, modulate_transformer.*, pe_layer.*, dimension_reduction_head_*",
            f"{len(state)} of them", "use modulate-<step>/adapter_model.bin of the release",
        )
    config = BIMConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = BIM(config, operations=operations)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_bridge(bundle: SmartEditBundle, dtype: torch.dtype = torch.float32, qformer_heads: int | None = None,
                operations=DEFAULT_OPERATIONS) -> SmartEditBridge:
    """Q-Former + BIM on CPU in `dtype`. qformer_heads: BERT head count (default width / 64: 12 for SmartEdit's 768)."""
    qformer = _qformer(bundle, dtype, qformer_heads, operations)
    bim = _bim(bundle, dtype, operations)
    if bim.config.text != qformer.config.hidden:
        raise ModelFileError(
            bundle.bim, f"modulate_head.weight [*, {qformer.config.hidden}] (the Q-Former width)",
            f"[*, {bim.config.text}]", "use the modulate-* and embeddings_qformer files of the same bundle",
        )
    return SmartEditBridge(qformer, bim).eval()


@dataclass
class SmartEditModels:
    lmm: SmartEditLMM
    bridge: SmartEditBridge
    unet_ldm: dict[str, torch.Tensor]  # `model.diffusion_model.*` keys, 8 input channels
    bundle: SmartEditBundle


def load_unet_ldm(bundle: SmartEditBundle, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The SmartEdit UNet as an LDM state dict (`model.diffusion_model.*`), for ComfyUI's own UNet loading."""
    state = read_tensors(bundle.unet, lambda k: k.startswith((DIFFUSERS_PREFIX, LDM_PREFIX)), dtype)
    if any(k.startswith(LDM_PREFIX) for k in state):
        return {k: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    if "unet.conv_in.weight" not in state:
        raise ModelFileError(
            bundle.unet, "UNet tensors unet.* (diffusers layout, 8-channel conv_in)", f"{len(state)} of them",
            "use unet-<step>/adapter_model.bin of the release",
        )
    try:
        return diffusers_unet_to_ldm(state)
    except (KeyError, ValueError) as err:
        raise ModelFileError(
            bundle.unet, "an SD1.5-layout diffusers UNet", str(err), "use unet-<step>/adapter_model.bin of the release"
        ) from err


def load_smartedit(
    bundle_dir: str | Path,
    llava_dir: str | Path,
    clip_path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    unet_dtype: torch.dtype | None = None,
    qformer_heads: int | None = None,
    step: int | None = None,
    file_format: FileFormat = "auto",
) -> SmartEditModels:
    """Load every SmartEdit component on CPU. LMM and bridge in `dtype`; UNet tensors cast to `unet_dtype`
    (None: as stored)."""
    bundle = find_bundle(bundle_dir, step=step, file_format=file_format)
    return SmartEditModels(
        lmm=load_lmm(bundle, llava_dir, clip_path, tokenizer_path, dtype),
        bridge=load_bridge(bundle, dtype, qformer_heads),
        unet_ldm=load_unet_ldm(bundle, unet_dtype),
        bundle=bundle,
    )

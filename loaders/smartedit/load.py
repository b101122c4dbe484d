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
from ..ip2p.unet_keys import DIFFUSERS_PREFIX, LDM_PREFIX, check_ip2p_conv_in, diffusers_unet_to_ldm
from ..llama import LlamaConfig, LlamaLM, rope_inv_freq
from ..operations import DEFAULT_OPERATIONS
from ..state_checks import check_float_tensors, load_checked, reading_shapes
from ..storage import store_weights
from ..weight_files import read_shapes
from .bim import BIM, BIMConfig
from .conditioning import SmartEditBridge
from .files import FileFormat, SmartEditBundle, find_bundle, merge_lora, read_tensors
from .llava_base import base_rows, check_vocab, open_llava_base
from .lmm import LLAMA1_CONTEXT, LMMInfo, SmartEditLMM
from .qformer import QFormer, QFormerConfig
from .tokenizer import IMAGE_TOKEN_COUNT, LlamaSlowTokenizer
from .vision_file import CLIP_IMAGE_SIZE, check_vision_size, load_vision  # noqa: F401 (re-exported)

LLM_PREFIX = "model.base_model.model."  # SmartEdit LLMSDTrainer._save filter for the LoRA-wrapped LlamaModel
RELEASE_FIX = "use the SmartEdit release files as published (TencentARC/SmartEdit-7B or -13B); download the file again"


def _llm_key(key: str) -> str:
    return LLM_PREFIX + key


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
    if heads <= 0 or hidden % heads:
        raise ModelFileError(lora_path, f"a head count dividing the LLM width {hidden}", f"{heads} heads (from "
                             f"{'rotary_emb.inv_freq' if inv_freq is not None else 'the LLaVA config.json'})",
                             "use the LLaVA-1.1 config.json and the SmartEdit LLM file of the same model size")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    with reading_shapes(lora_path, "the LLaMA decoder of SmartEdit's LLM file", RELEASE_FIX, _llm_key):
        return LlamaConfig.from_shapes(shapes, heads, float(llava_config.get("rms_norm_eps", 1e-6)))


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
    check_float_tensors(state, bundle.llm, RELEASE_FIX, _llm_key)
    config = _llm_config(state, llava.config, bundle.llm)
    head_rows = read_shapes(bundle.embeddings_qformer).get("lm_head.weight", (0,))[0]
    base_vocab = check_vocab(config.vocab, head_rows, llava, tokenizer, bundle)
    embed_base, head_base = base_rows(llava, base_vocab, config.hidden, dtype)
    extra_keys = ("lm_head.weight", "mm_projector.weight", "mm_projector.bias")
    extra = read_tensors(bundle.embeddings_qformer, lambda k: k in extra_keys)
    if set(extra) != set(extra_keys):
        raise ModelFileError(bundle.embeddings_qformer, f"the tensors {', '.join(extra_keys)}",
                             f"{', '.join(sorted(extra)) or 'none of them'}", RELEASE_FIX)
    check_float_tensors(extra, bundle.embeddings_qformer, RELEASE_FIX)
    llm_state = merge_lora(state, bundle.lora, bundle.llm)
    inv_freq = llm_state.get("layers.0.self_attn.rotary_emb.inv_freq")
    for key in [k for k in llm_state if "rotary_emb" in k]:
        del llm_state[key]
    llm_state["embed_tokens.weight"] = torch.cat([embed_base, llm_state["embed_tokens.weight"][base_vocab:].to(dtype)])
    llm_state["lm_head.weight"] = torch.cat([head_base, extra.pop("lm_head.weight")[base_vocab:].to(dtype)])
    llm_state["inv_freq"] = inv_freq.float() if inv_freq is not None else rope_inv_freq(config.head_dim)
    with torch.device("meta"):
        llm = LlamaLM(config, operations=operations)
    load_checked(llm, llm_state, bundle.llm, "the LLaMA decoder", RELEASE_FIX, _llm_key)
    select_layer = int(llava.config.get("mm_vision_select_layer", -2))
    vision = load_vision(Path(clip_path), select_layer, dtype, operations)
    proj_w = extra["mm_projector.weight"]
    if tuple(proj_w.shape) != (config.hidden, vision.config.hidden):
        raise ModelFileError(
            bundle.embeddings_qformer, f"mm_projector.weight [{config.hidden}, {vision.config.hidden}] (LLM width, CLIP width)",
            f"{list(proj_w.shape)}", "use the CLIP ViT-L/14 (224 px) vision tower LLaVA-1.1 was trained with",
        )
    with torch.device("meta"):
        projector = operations.Linear(vision.config.hidden, config.hidden)
    load_checked(projector, {"weight": proj_w.to(dtype), "bias": extra["mm_projector.bias"].to(dtype)},
                 bundle.embeddings_qformer, "the mm_projector", RELEASE_FIX, lambda k: f"mm_projector.{k}")
    info = LMMInfo(
        base_vocab=base_vocab,
        image_token_ids=[tokenizer.token_id(f"<img_{i}>") for i in range(IMAGE_TOKEN_COUNT)],
        eos_id=tokenizer.eos_id,
        select_layer=select_layer,
        context=int(llava.config.get("max_position_embeddings", LLAMA1_CONTEXT)),
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
    qformer_key = lambda k: QUERY_KEY if k == "query_tokens" else QFORMER_PREFIX + k  # noqa: E731
    with reading_shapes(bundle.embeddings_qformer, "SmartEdit's Q-Former", RELEASE_FIX, qformer_key):
        config = QFormerConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()}, heads)
    with torch.device("meta"):
        model = QFormer(config, operations=operations)
    return load_checked(model, state, bundle.embeddings_qformer, "SmartEdit's Q-Former", RELEASE_FIX, qformer_key)


def _bim(bundle: SmartEditBundle, dtype: torch.dtype, operations=DEFAULT_OPERATIONS) -> BIM:
    state = read_tensors(bundle.bim, lambda k: k.startswith(BIM_PREFIXES), dtype)
    if "modulate_head.weight" not in state or "dimension_reduction_head_zeroconv.weight" not in state:
        raise ModelFileError(
            bundle.bim, "the BIM tensors modulate_head.*, modulate_transformer.*, pe_layer.*, dimension_reduction_head_*",
            f"{len(state)} of them", "use modulate-<step>/adapter_model.bin of the release",
        )
    with reading_shapes(bundle.bim, "SmartEdit's BIM", RELEASE_FIX):
        config = BIMConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = BIM(config, operations=operations)
    return load_checked(model, state, bundle.bim, "SmartEdit's BIM", RELEASE_FIX)


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
    """The SmartEdit UNet as an LDM state dict (`model.diffusion_model.*`), for ComfyUI's own UNet loading.

    Checked here for every caller: float tensors, an 8-channel conv_in (InstructPix2Pix)."""
    fix = "use unet-<step>/adapter_model.bin of the release"
    state = read_tensors(bundle.unet, lambda k: k.startswith((DIFFUSERS_PREFIX, LDM_PREFIX)), dtype)
    check_float_tensors(state, bundle.unet, fix)
    if any(k.startswith(LDM_PREFIX) for k in state):
        ldm = {k: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
        check_ip2p_conv_in(ldm, bundle.unet, fix)
        return ldm
    if "unet.conv_in.weight" not in state:
        raise ModelFileError(
            bundle.unet, "UNet tensors unet.* (diffusers layout, 8-channel conv_in)", f"{len(state)} of them", fix,
        )
    try:
        ldm = diffusers_unet_to_ldm(state)
    except (KeyError, ValueError) as err:
        raise ModelFileError(bundle.unet, "an SD1.5-layout diffusers UNet", str(err), fix) from err
    check_ip2p_conv_in(ldm, bundle.unet, fix, file_key=DIFFUSERS_PREFIX + "conv_in.weight")
    return ldm


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

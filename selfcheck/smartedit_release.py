"""Tiny SmartEdit bundles in the RELEASE layout, with their LLaVA-1.1 base, CLIP tower and tokenizer.

Layout and keys as TencentARC/SmartEdit's `LLMSDTrainer._save` writes them (see the parity fixture README):
`LLM-<step>/adapter_model.bin` (+ `adapter_config.json` at the bundle root), `embeddings_qformer/
checkpoint-<step>_embeddings_qformer.bin`, `modulate-<step>/adapter_model.bin`, `unet-<step>/adapter_model.bin`.
As in the real release (DeepSpeed ZeRO-2), every trainable tensor is a view of ONE flat buffer and every
`.bin` file carries that whole buffer. Sources differ on purpose: the LLM file's and the embeddings_qformer
file's rows [0, V0) differ from LLaVA's, and LLaVA's mm_projector differs from SmartEdit's, so a loader
taking a wrong source computes something else.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

ADDED = 35  # <img>, <im_start>, <im_end>, <img_0>..<img_31>
LLAVA_EXTRA = 3  # LLaVA-1.1's <im_patch>, <im_start>, <im_end>
ADAPTER_CONFIG = {  # TencentARC/SmartEdit data/adapter_config.json
    "base_model_name_or_path": "vicuna", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
    "init_lora_weights": True, "lora_alpha": 16, "lora_dropout": 0.05, "modules_to_save": None,
    "peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM",
}


@dataclass(frozen=True)
class TinySizes:
    base_vocab: int = 320
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 96
    clip_hidden: int = 32
    clip_layers: int = 2
    clip_heads: int = 4
    clip_intermediate: int = 64
    image_size: int = 224
    patch: int = 14
    qformer_hidden: int = 24
    qformer_layers: int = 6
    qformer_heads: int = 4
    qformer_intermediate: int = 48
    queries: int = 77
    bim_mlp: int = 64
    bim_depth: int = 2
    unet_channels: tuple[int, ...] = (8, 16)
    lora_r: int = 8
    step: int = 15000


@dataclass(frozen=True)
class ReleasePaths:
    bundle: Path
    llava: Path
    clip: Path
    tokenizer: Path
    sizes: TinySizes
    qformer_heads: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # file -> key -> tensor


def train_tokenizer(vocab: int) -> bytes:
    """A SentencePiece BPE model in LLaMA conventions (<unk>=0, <s>=1, </s>=2), trained on SmartEdit's prompts."""
    from ..loaders.smartedit.prompt import SYSTEM, TEMPLATES

    text = [SYSTEM, *(h for h, _ in TEMPLATES), *(g for _, g in TEMPLATES)]
    text += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()-"] * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab, model_type="bpe", unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    return model.getvalue()


class _Rand:
    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * scale


def _llm_state(s: TinySizes, r: _Rand, vocab: int) -> dict[str, torch.Tensor]:
    p = "model.base_model.model."
    d, head_dim = s.hidden, s.hidden // s.heads
    out = {p + "embed_tokens.weight": r(vocab, d, scale=1.0), p + "norm.weight": 1 + r(d)}
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    for i in range(s.layers):
        q = f"{p}layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[q + f"self_attn.{name}.weight"] = r(d, d, scale=d**-0.5)
        for name in ("q_proj", "v_proj"):
            out[q + f"self_attn.{name}.lora_A.default.weight"] = r(s.lora_r, d)
            out[q + f"self_attn.{name}.lora_B.default.weight"] = r(d, s.lora_r)
        out[q + "self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        out[q + "mlp.gate_proj.weight"] = r(s.intermediate, d, scale=d**-0.5)
        out[q + "mlp.up_proj.weight"] = r(s.intermediate, d, scale=d**-0.5)
        out[q + "mlp.down_proj.weight"] = r(d, s.intermediate, scale=s.intermediate**-0.5)
        out[q + "input_layernorm.weight"] = 1 + r(d)
        out[q + "post_attention_layernorm.weight"] = 1 + r(d)
    return out


def _qformer_state(s: TinySizes, r: _Rand, vocab: int) -> dict[str, torch.Tensor]:
    h, w, m = s.qformer_hidden, s.hidden, s.qformer_intermediate
    out = {
        "sd_query_tokens": r(1, s.queries, h, scale=1.0), "lm_head.weight": r(vocab, s.hidden),
        "mm_projector.weight": r(s.hidden, s.clip_hidden), "mm_projector.bias": r(s.hidden),
        "sd_qformer.embeddings.position_ids": torch.arange(512).unsqueeze(0),
        "sd_qformer.embeddings.LayerNorm.weight": 1 + r(h), "sd_qformer.embeddings.LayerNorm.bias": r(h),
    }
    for i in range(s.qformer_layers):
        blocks = [("attention", h)] + ([("crossattention", w)] if i % 2 == 0 else [])  # cross_attention_freq 2
        for block, kv in blocks:
            p = f"sd_qformer.encoder.layer.{i}.{block}."
            out[p + "self.query.weight"], out[p + "self.query.bias"] = r(h, h, scale=h**-0.5), r(h)
            out[p + "self.key.weight"], out[p + "self.key.bias"] = r(h, kv, scale=kv**-0.5), r(h)
            out[p + "self.value.weight"], out[p + "self.value.bias"] = r(h, kv, scale=kv**-0.5), r(h)
            out[p + "output.dense.weight"], out[p + "output.dense.bias"] = r(h, h, scale=h**-0.5), r(h)
            out[p + "output.LayerNorm.weight"], out[p + "output.LayerNorm.bias"] = 1 + r(h), r(h)
        p = f"sd_qformer.encoder.layer.{i}."
        out[p + "intermediate_query.dense.weight"], out[p + "intermediate_query.dense.bias"] = r(m, h, scale=h**-0.5), r(m)
        out[p + "output_query.dense.weight"], out[p + "output_query.dense.bias"] = r(h, m, scale=m**-0.5), r(h)
        out[p + "output_query.LayerNorm.weight"], out[p + "output_query.LayerNorm.bias"] = 1 + r(h), r(h)
    return out


def _bim_state(s: TinySizes, r: _Rand) -> dict[str, torch.Tensor]:
    e, t, inner = s.clip_hidden, s.qformer_hidden, s.clip_hidden // 2  # attention_downsample_rate 2
    out = {
        "modulate_head.weight": r(e, t, scale=t**-0.5), "modulate_head.bias": r(e),
        "pe_layer.positional_encoding_gaussian_matrix": r(2, e // 2, scale=1.0),
        "dimension_reduction_head_zeroconv.weight": r(s.unet_channels[0], e, 1, 1, scale=e**-0.5),
        "dimension_reduction_head_zeroconv.bias": r(s.unet_channels[0]),
        "dimension_reduction_head_qformer_out.weight": r(t, e, scale=e**-0.5),
        "dimension_reduction_head_qformer_out.bias": r(t),
    }

    def attention(prefix: str, internal: int) -> None:
        for name in ("q_proj", "k_proj", "v_proj"):
            out[f"{prefix}.{name}.weight"], out[f"{prefix}.{name}.bias"] = r(internal, e, scale=e**-0.5), r(internal)
        out[f"{prefix}.out_proj.weight"], out[f"{prefix}.out_proj.bias"] = r(e, internal, scale=internal**-0.5), r(e)

    for i in range(s.bim_depth):
        p = f"modulate_transformer.layers.{i}"
        attention(f"{p}.self_attn", e)
        attention(f"{p}.cross_attn_token_to_image", inner)
        attention(f"{p}.cross_attn_image_to_token", inner)
        for n in (1, 2, 3, 4):
            out[f"{p}.norm{n}.weight"], out[f"{p}.norm{n}.bias"] = 1 + r(e), r(e)
        out[f"{p}.mlp.lin1.weight"], out[f"{p}.mlp.lin1.bias"] = r(s.bim_mlp, e, scale=e**-0.5), r(s.bim_mlp)
        out[f"{p}.mlp.lin2.weight"], out[f"{p}.mlp.lin2.bias"] = r(e, s.bim_mlp, scale=s.bim_mlp**-0.5), r(e)
    attention("modulate_transformer.final_attn_token_to_image", inner)
    out["modulate_transformer.norm_final_attn.weight"] = 1 + r(e)
    out["modulate_transformer.norm_final_attn.bias"] = r(e)
    return out


def unet_config(s: TinySizes) -> dict:
    """A tiny SD1.5-shaped UNet2DConditionModel config with an 8-channel conv_in (InstructPix2Pix)."""
    n = len(s.unet_channels)
    return {
        "in_channels": 8, "out_channels": 4, "block_out_channels": list(s.unet_channels), "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "cross_attention_dim": s.qformer_hidden, "attention_head_dim": 2, "norm_num_groups": 4, "sample_size": 32,
    }


def _unet_state(s: TinySizes, seed: int) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(s))
    return {"unet." + k: v.detach().clone() for k, v in unet.state_dict().items()}


def _clip_state(s: TinySizes, r: _Rand) -> dict[str, torch.Tensor]:
    d, m, grid = s.clip_hidden, s.clip_intermediate, s.image_size // s.patch
    p = "vision_model."
    out = {
        p + "embeddings.class_embedding": r(d), p + "embeddings.patch_embedding.weight": r(d, 3, s.patch, s.patch),
        p + "embeddings.position_embedding.weight": r(grid * grid + 1, d),
        p + "embeddings.position_ids": torch.arange(grid * grid + 1).unsqueeze(0),
        p + "pre_layrnorm.weight": 1 + r(d), p + "pre_layrnorm.bias": r(d),
        p + "post_layernorm.weight": 1 + r(d), p + "post_layernorm.bias": r(d),
    }
    for i in range(s.clip_layers):
        q = f"{p}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[q + f"self_attn.{name}.weight"], out[q + f"self_attn.{name}.bias"] = r(d, d, scale=d**-0.5), r(d)
        for n in (1, 2):
            out[q + f"layer_norm{n}.weight"], out[q + f"layer_norm{n}.bias"] = 1 + r(d), r(d)
        out[q + "mlp.fc1.weight"], out[q + "mlp.fc1.bias"] = r(m, d, scale=d**-0.5), r(m)
        out[q + "mlp.fc2.weight"], out[q + "mlp.fc2.bias"] = r(d, m, scale=m**-0.5), r(d)
    return out


def _save_sharing_one_buffer(files: dict[Path, dict[str, torch.Tensor]]) -> None:
    """torch.save each file's dict with every float tensor a view of one flat buffer (ZeRO-2 style)."""
    floats = [(path, k, t) for path, sd in files.items() for k, t in sd.items() if t.is_floating_point()]
    flat = torch.cat([t.reshape(-1) for _, _, t in floats])
    offset = 0
    views: dict[Path, dict[str, torch.Tensor]] = {p: dict(sd) for p, sd in files.items()}
    for path, key, t in floats:
        views[path][key] = flat[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    for path, sd in views.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, path)


def write_smartedit_release(root: Path, seed: int = 0, sizes: TinySizes | None = None, safetensors_copies: bool = True) -> ReleasePaths:
    """Write bundle (`root/SmartEdit-7B`), LLaVA base (`root/LLaVA-7B-v1`, with tokenizer.model) and CLIP tower."""
    s = sizes or TinySizes()
    r = _Rand(seed)
    tokenizer_bytes = train_tokenizer(s.base_vocab)
    pieces = spm.SentencePieceProcessor(model_proto=tokenizer_bytes).get_piece_size()
    if pieces != s.base_vocab:
        raise ValueError(f"the tiny tokenizer has {pieces} pieces, not {s.base_vocab}; choose another base_vocab")
    vocab = s.base_vocab + ADDED
    llm, qformer, bim = _llm_state(s, r, vocab), _qformer_state(s, r, vocab), _bim_state(s, r)
    unet = _unet_state(s, seed)
    bundle = root / "SmartEdit-7B"
    files = {
        bundle / f"LLM-{s.step}" / "adapter_model.bin": llm,
        bundle / "embeddings_qformer" / f"checkpoint-{s.step}_embeddings_qformer.bin": qformer,
        bundle / f"modulate-{s.step}" / "adapter_model.bin": bim,
        bundle / f"unet-{s.step}" / "adapter_model.bin": unet,
    }
    _save_sharing_one_buffer(files)
    if safetensors_copies:
        for path, sd in files.items():
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path.with_suffix(".safetensors")))
    adapter = dict(ADAPTER_CONFIG, r=s.lora_r, lora_alpha=2 * s.lora_r)
    (bundle / "adapter_config.json").write_text(json.dumps(adapter, indent=2))

    llava = root / "LLaVA-7B-v1"
    llava.mkdir(parents=True, exist_ok=True)
    base_embed, base_head = r(s.base_vocab + LLAVA_EXTRA, s.hidden, scale=1.0), r(s.base_vocab + LLAVA_EXTRA, s.hidden)
    shard1 = {"model.embed_tokens.weight": base_embed}
    shard1.update({"model." + k[len("model.base_model.model.") :]: v for k, v in llm.items() if ".layers." in k and "lora" not in k})
    shard2 = {
        "model.norm.weight": llm["model.base_model.model.norm.weight"], "lm_head.weight": base_head,
        "model.mm_projector.weight": r(s.hidden, s.clip_hidden), "model.mm_projector.bias": r(s.hidden),
    }
    names = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
    for name, shard in zip(names, (shard1, shard2)):
        torch.save({k: v.clone() for k, v in shard.items()}, llava / name)
    index = {"metadata": {}, "weight_map": {k: n for n, sd in zip(names, (shard1, shard2)) for k in sd}}
    (llava / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    (llava / "config.json").write_text(json.dumps({
        "model_type": "llava", "hidden_size": s.hidden, "num_attention_heads": s.heads, "num_hidden_layers": s.layers,
        "intermediate_size": s.intermediate, "rms_norm_eps": 1e-6, "vocab_size": s.base_vocab + LLAVA_EXTRA,
        "mm_hidden_size": s.clip_hidden, "mm_use_im_start_end": True, "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
    }, indent=2))
    (llava / "tokenizer.model").write_bytes(tokenizer_bytes)

    clip = root / "clip-vit-large-patch14"
    clip.mkdir(parents=True, exist_ok=True)
    save_file(_clip_state(s, r), str(clip / "model.safetensors"))
    (clip / "config.json").write_text(json.dumps({
        "model_type": "clip_vision_model", "hidden_size": s.clip_hidden, "num_attention_heads": s.clip_heads,
        "num_hidden_layers": s.clip_layers, "intermediate_size": s.clip_intermediate, "image_size": s.image_size,
        "patch_size": s.patch, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    }, indent=2))
    return ReleasePaths(
        bundle=bundle, llava=llava, clip=clip, tokenizer=llava / "tokenizer.model", sizes=s, qformer_heads=s.qformer_heads,
        tensors={"llm": llm, "embeddings_qformer": qformer, "bim": bim, "unet": unet, "llava_embed": base_embed, "llava_head": base_head},
    )

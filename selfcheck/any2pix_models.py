"""Tiny random InstructAny2Pix files in the RELEASE layouts the loaders read (`models/lmm_edit/any2pix/<release>/`).

Layout as jacklishufan/InstructAny2Pix @ d11e49b `pipeline.py` reads `ckpts/`: `llm-retrained/` (config.json
with `model_type: instructany2pix`, `generation_config.json`, `model.safetensors` with keys `model.*` +
`lm_head.weight`, `tokenizer/tokenizer.json` with the nine added tokens), `imagebind_huge.pth` (a `torch.save` of
ImageBindModel's vision/audio keys, plus `imagebind_kwargs.json` for the tiny head counts), `prior/model.bin`
(`torch.save` of the prior state dict, GPT-2 `Conv1D` weights as [in, out], CLIP text under
`cond_stage_models.0.model.`) and `sdxl/ip_adapter_global_local_2_view.bin` ({"image_proj", "ip_adapter"}).

The LLM is random except for a rigged BIGRAM path, so that sampling at any temperature writes a valid answer
(`<base>▁<im_gen>[caption]<video></s>` by default): each token of the answer chain (and the prompt's last
token ":") gets its own basis direction in the embedding, and lm_head maps that direction to the next token
with a large margin; attention and MLP outputs are small but nonzero, so the hidden states (hence the output
embedding) still depend on the instruction and the injected image/audio embeddings. `answer` changes the chain
(e.g. one without `<im_gen>` for the error tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

ADDED = ("<im_gen_start>", "<im_gen>", "<mask_gen>", "<audio_gen>", "<audio_gen_start>", "<audio>", "<video>",
         "<base>", "<base_null>")  # instructany2pix/llm/constants.py, in initialize_vision_tokenizer's order
SPACE = "\u2581"
EMBED = 1024  # ImageBind output = LLM projector input = predictor output = prior width = IP clip dim, as released
DEFAULT_ANSWER = ("<base>", SPACE, "<im_gen>", "[", "r", "e", "d", "]", "<video>", "</s>")
DEFAULT_CAPTION = "red"
PROMPT_LAST = ":"  # vicuna_v1 prompt ends with "ASSISTANT:"


# -- tokenizer ----------------------------------------------------------------------------------------------------
def tokenizer_vocab() -> dict[str, int]:
    """<unk>, <s>, </s>, the 256 byte pieces, "▁"; then the nine added tokens."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab[SPACE] = len(vocab)
    return vocab


def write_tokenizer(folder: Path) -> dict[str, int]:
    """A LlamaTokenizerFast `tokenizer.json` (BPE, byte fallback, no merges) + config files; returns all ids."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer_vocab()
    added = {name: len(vocab) + i for i, name in enumerate(ADDED)}

    def token(content: str, i: int) -> dict:
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [token(n, vocab[n]) for n in ("<unk>", "<s>", "</s>")] + [token(n, i) for n, i in added.items()],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE}, {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab, "merges": []},
    }
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (folder / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False}),
        encoding="utf-8")
    return {**vocab, **added}


def _token_id(ids: dict[str, int], piece: str) -> int:
    """An answer piece: an added/special token, "▁", or one ASCII character (its byte piece)."""
    if piece in ids:
        return ids[piece]
    if len(piece) == 1 and ord(piece) < 128:
        return ids[f"<0x{ord(piece):02X}>"]
    raise ValueError(f"answer piece {piece!r} is not a token of the tiny tokenizer")


# -- LLM ----------------------------------------------------------------------------------------------------------
def write_llm(folder: Path, answer: tuple[str, ...] = DEFAULT_ANSWER, hidden: int = 32, layers: int = 2,
              heads: int = 4, intermediate: int = 64, embed: int = EMBED, seed: int = 0) -> Path:
    """`llm-retrained/`: config.json, generation_config.json, model.safetensors, tokenizer/."""
    folder = Path(folder)
    ids = write_tokenizer(folder / "tokenizer")
    vocab = max(ids.values()) + 1
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    chain = [PROMPT_LAST, *answer]
    if len(chain) - 1 > hidden:
        raise ValueError(f"an answer of {len(answer)} tokens needs hidden >= {len(chain) - 1}")
    embed_tokens = rand(vocab, hidden, scale=0.05)
    lm_head = rand(vocab, hidden, scale=0.05)
    for k, (piece, nxt) in enumerate(zip(chain[:-1], chain[1:])):
        embed_tokens[_token_id(ids, piece)] = torch.nn.functional.one_hot(torch.tensor(k), hidden).float()
        lm_head[_token_id(ids, nxt)] += torch.nn.functional.one_hot(torch.tensor(k), hidden).float() * 20.0
    state = {"model.embed_tokens.weight": embed_tokens, "lm_head.weight": lm_head,
             "model.norm.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in "qkv":
            state[p + f"self_attn.{n}_proj.weight"] = rand(hidden, hidden, scale=hidden**-0.5)
        state[p + "self_attn.o_proj.weight"] = rand(hidden, hidden, scale=0.02)
        state[p + "mlp.gate_proj.weight"] = rand(intermediate, hidden, scale=hidden**-0.5)
        state[p + "mlp.up_proj.weight"] = rand(intermediate, hidden, scale=hidden**-0.5)
        state[p + "mlp.down_proj.weight"] = rand(hidden, intermediate, scale=0.02)
        state[p + "input_layernorm.weight"] = torch.ones(hidden)
        state[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
    # mlp2x_gelu projector (embed -> hidden -> hidden) and predictor (hidden -> hidden -> embed), N(0, 1/fan_in)
    for name, widths in (("vae_projector_image", (embed, hidden, hidden)), ("vae_predictor_image", (hidden, hidden, embed))):
        for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            state[f"model.{name}.{2 * j}.weight"] = rand(b, a, scale=a**-0.5)
            state[f"model.{name}.{2 * j}.bias"] = rand(b, scale=0.02)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = {
        "architectures": ["InstructAny2PixLMForCausalLM"], "model_type": "instructany2pix", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "attention_bias": False, "vocab_size": vocab, "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": embed,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}), encoding="utf-8")
    return folder


# -- ImageBind ----------------------------------------------------------------------------------------------------
IMAGEBIND_TINY_ARGS = {"vision_embed_dim": 32, "vision_num_blocks": 1, "vision_num_heads": 2, "audio_embed_dim": 32,
                       "audio_num_blocks": 1, "audio_num_heads": 2, "audio_stride": 10, "out_embed_dim": EMBED}


def write_imagebind(path: Path, seed: int = 1) -> Path:
    """`imagebind_huge.pth`-shaped file (release key names, tiny widths) + `imagebind_kwargs.json` next to it."""
    from lmm_edit.loaders.any2pix.imagebind import ImageBind
    from lmm_edit.loaders.any2pix.imagebind_encoders import AudioEncoderConfig, VisionEncoderConfig
    from lmm_edit.loaders.any2pix.imagebind_file import LOGIT_SCALE_KEY, ImageBindConfig, release_key
    from lmm_edit.loaders.any2pix.imagebind_trunk import TrunkConfig

    a = IMAGEBIND_TINY_ARGS
    vision = VisionEncoderConfig(TrunkConfig(a["vision_embed_dim"], a["vision_num_blocks"], a["vision_num_heads"],
                                             4 * a["vision_embed_dim"], True, False), EMBED, (2, 14, 14), (1, 16, 16))
    audio = AudioEncoderConfig(TrunkConfig(a["audio_embed_dim"], a["audio_num_blocks"], a["audio_num_heads"],
                                           4 * a["audio_embed_dim"], False, True), EMBED, 16, 10, (12, 19))
    torch.manual_seed(seed)
    model = ImageBind(ImageBindConfig(vision, audio))
    state = {}
    for modality, encoder in (("vision", model.vision), ("audio", model.audio)):
        for name, value in encoder.state_dict().items():
            if name.endswith(("cls_token", "pos_embed", "bias_k", "bias_v")):
                value = torch.randn(value.shape) * 0.02
            key = LOGIT_SCALE_KEY if name == "log_logit_scale" else release_key(modality, name)
            state[key] = value.detach().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    (path.parent / "imagebind_kwargs.json").write_text(json.dumps(a, indent=1), encoding="utf-8")
    return path


# -- prior --------------------------------------------------------------------------------------------------------
def write_prior(folder: Path, seed: int = 2) -> Path:
    """`prior/model.bin`: one GPT-2 layer of width EMBED with gpt2-medium's 16 heads (inner width EMBED), a 64-wide
    one-head CLIP text tower; saved in fp16 to keep it small (the loader casts to its dtype)."""
    from lmm_edit.loaders.any2pix.clip_text import ClipTextConfig
    from lmm_edit.loaders.any2pix.gpt2 import GPT2Config
    from lmm_edit.loaders.any2pix.prior import CLIP_PREFIX, SCORE_EMBED_DIM, Any2PixPrior, PriorConfig

    clip = ClipTextConfig(width=64, layers=1, heads=1, intermediate=128, vocab=10, positions=8)
    config = PriorConfig(embed_dim=EMBED, linear_dims={1: EMBED, 2: 64, 3: SCORE_EMBED_DIM}, sos_rows=8,
                         modality_rows=10, gpt2=GPT2Config(EMBED, 1, 16, EMBED, 32), clip=clip)
    torch.manual_seed(seed)
    prior = Any2PixPrior(config)
    state = {}
    for key, value in prior.state_dict().items():
        value = value.detach().clone()
        if key.startswith("model."):
            conv = key.endswith(".weight") and any(s in key for s in (".c_attn.", ".c_proj.", ".c_fc."))
            state[key] = value.t().contiguous() if conv else value
        elif key.startswith("clip."):
            state[CLIP_PREFIX + "text_model." + key[len("clip."):]] = value
        else:
            state[key] = value
    state["model.wte.weight"] = torch.randn(16, EMBED) * 0.02  # present in the release file, unused
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "model.bin")
    return folder / "model.bin"


def write_release(root: Path, answer: tuple[str, ...] = DEFAULT_ANSWER) -> dict[str, Path]:
    """A whole tiny release folder. The SDXL adapter depends on the SDXL checkpoint's layers: selfcheck/
    ip_adapter_files.py `tiny_global_local_adapter_state` (clip_dim EMBED)."""
    root = Path(root)
    return {"llm": write_llm(root / "llm-retrained", answer), "imagebind": write_imagebind(root / "imagebind_huge.pth"),
            "prior": write_prior(root / "prior").parent}

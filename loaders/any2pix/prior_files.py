"""Loading the refinement prior `ckpts/prior/model.bin` (or `model.safetensors` with the same keys).

The file is `torch.save(InstructAny2PixPrior.state_dict())`, loaded strictly by the reference
(jacklishufan/InstructAny2Pix @ d11e49b, `pipeline.py`): `start_of_sequence_tokens`, `end_of_sequence_tokens`,
`input_sequence_embed_linear.{1,2,3}`, `modality_embedding`, `model.*` (GPT2Model) and
`cond_stage_models.0.model.text_model.*` (the frozen CLIP ViT-H/14 text tower, stored in the file).

What shapes cannot tell comes from the configs the reference loads by name, when given: GPT-2 heads, eps and
activation from `gpt2-medium/config.json` (default: gpt2-medium's 16 heads, 1e-5, gelu_new); CLIP text heads,
eps, activation from `laion/CLIP-ViT-H-14-laion2B-s32B-b79K/config.json` `text_config` (default: head_dim 64,
1e-5, gelu). The token ids of "" (BOS, EOS) come from that folder's tokenizer files (`special_tokens_map.json`
+ `vocab.json`) or, without them, from the CLIP BPE convention that `<|startoftext|>`, `<|endoftext|>` are the
last two rows of the token embedding (49406, 49407 of 49408).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..operations import DEFAULT_OPERATIONS
from ..state_checks import load_checked
from ..weight_files import read_json, read_tensors
from .gpt2 import conv1d_to_linear
from .prior import CLIP_PREFIX, GPT2_PREFIX, SCORE_EMBED_DIM, Any2PixPrior, PriorConfig

PRIOR_FIX = "use the InstructAny2Pix release file ckpts/prior/model.bin"
REQUIRED = (
    "start_of_sequence_tokens.weight", "end_of_sequence_tokens.weight", "modality_embedding.weight",
    "input_sequence_embed_linear.1.weight", "input_sequence_embed_linear.2.weight",
    "input_sequence_embed_linear.3.weight", GPT2_PREFIX + "wpe.weight", GPT2_PREFIX + "h.0.mlp.c_fc.weight",
    CLIP_PREFIX + "text_model.embeddings.token_embedding.weight",
    CLIP_PREFIX + "text_model.embeddings.position_embedding.weight",
    CLIP_PREFIX + "text_model.encoder.layers.0.mlp.fc1.weight",
)


def _json(path: Path) -> dict:
    return read_json(path, fix="restore the file")


def empty_text_ids(vocab_rows: int, tokenizer_dir: str | Path | None = None) -> list[int]:
    """CLIP token ids of "" (`padding=True`, no padding needed): [BOS, EOS]."""
    if tokenizer_dir is not None:
        folder = Path(tokenizer_dir)
        special, vocab_file = folder / "special_tokens_map.json", folder / "vocab.json"
        if special.is_file() and vocab_file.is_file():
            names = _json(special)
            vocab = _json(vocab_file)
            ids = []
            for role in ("bos_token", "eos_token"):
                entry = names.get(role)
                content = entry.get("content") if isinstance(entry, dict) else entry
                if content not in vocab:
                    raise ModelFileError(
                        vocab_file, f"the {role} {content!r} of special_tokens_map.json", "no such token",
                        "use the tokenizer files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                    )
                ids.append(int(vocab[content]))
            return ids
    return [vocab_rows - 2, vocab_rows - 1]


@dataclass
class PriorBundle:
    prior: Any2PixPrior
    empty_text_ids: list[int]  # CLIP ids of "" (BOS, EOS)


def load_prior(
    path: str | Path, gpt2_config: str | Path | dict | None = None, clip_config: str | Path | dict | None = None,
    clip_tokenizer_dir: str | Path | None = None, dtype: torch.dtype = torch.float32, operations=DEFAULT_OPERATIONS,
) -> PriorBundle:
    """The prior (CPU, `dtype`) from its weight file and, optionally, the GPT-2 / CLIP configs and tokenizer."""
    path = Path(path)
    state = read_tensors(path, dtype=dtype, expected_object="the prior state dict", pickle_fix=PRIOR_FIX)
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ModelFileError(
            path, "the InstructAny2Pix prior state dict (GPT-2 `model.*`, CLIP text `cond_stage_models.0.model.*`, "
            "SOS/EOS, modality embedding, input_sequence_embed_linear.1-3)",
            f"{len(state)} tensors without {', '.join(missing[:3])}", PRIOR_FIX,
        )
    gpt2 = _json(gpt2_config) if isinstance(gpt2_config, (str, Path)) else gpt2_config
    clip = _json(clip_config) if isinstance(clip_config, (str, Path)) else clip_config
    text_config = clip.get("text_config", clip) if clip else None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = PriorConfig.from_shapes(shapes, gpt2, text_config)
    e = config.embed_dim
    widths = {"GPT-2 n_embd": config.gpt2.width, "modality_embedding": shapes["modality_embedding.weight"][1]}
    if any(w != e for w in widths.values()) or config.linear_dims.get(3) != SCORE_EMBED_DIM \
            or config.linear_dims.get(2) != config.clip.width:
        raise ModelFileError(
            path, f"one width {e} for SOS/EOS, GPT-2 and the modality embedding; input_sequence_embed_linear.2 from "
            f"the CLIP width {config.clip.width}; .3 from the {SCORE_EMBED_DIM}-d score embedding",
            f"{widths}, input widths {config.linear_dims}", PRIOR_FIX,
        )
    if config.gpt2.width % config.gpt2.heads or config.clip.width % config.clip.heads:
        raise ModelFileError(
            path, f"GPT-2 width {config.gpt2.width} divisible by n_head {config.gpt2.heads} and CLIP width "
            f"{config.clip.width} by its heads {config.clip.heads}", "widths that are not",
            "pass the gpt2-medium config.json and the CLIP config.json the prior was built with",
        )
    module_state = {k: v for k, v in state.items() if not k.startswith((GPT2_PREFIX, "cond_stage_models.", "output_proj."))}
    module_state.update({"model." + k: v for k, v in conv1d_to_linear(state, GPT2_PREFIX).items()})
    clip_prefix = CLIP_PREFIX + "text_model."
    module_state.update({
        "clip." + k[len(clip_prefix):]: v for k, v in state.items()
        if k.startswith(clip_prefix) and not k.endswith("position_ids")  # a buffer in files of transformers < 4.31
    })
    with torch.device("meta"):
        prior = Any2PixPrior(config, operations)
    load_checked(prior, module_state, path, "the prior (keys as the module names them)", PRIOR_FIX)
    vocab_rows = config.clip.vocab
    return PriorBundle(prior.eval(), empty_text_ids(vocab_rows, clip_tokenizer_dir))

"""What SmartEdit takes from the LLaVA-1.1 base: the embedding and lm_head rows of the base vocabulary.

The reference (`SmartEdit_model.init_visual_features_extractor`, `load_pretrained_LLaMA_for_inference`,
`load_pretrained_for_inference`) loads the whole LLaVA-1.1 model, then keeps only rows [0, V0) of
`model.embed_tokens.weight` and `lm_head.weight` (LLaVA's own 3 extra rows dropped); every layer weight is
overwritten by the SmartEdit LLM file and `mm_projector` comes from the embeddings_qformer file. So only
those two tensors are read here, from whichever shard holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..shard_index import read_shard_index, shape_in_shard
from ..weight_files import check_folder, read_json, read_rows, read_shapes
from .files import SmartEditBundle
from .tokenizer import ADDED_TOKENS, LLAVA_EXTRA_ROWS, LlamaSlowTokenizer

ADDED_ROWS = len(ADDED_TOKENS)  # 35 rows appended by setup_tokens_for_conversation
EMBED_KEY = "model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"
LLAVA_11_FIX = (
    "SmartEdit needs LLaVA-1.1 (7B: liuhaotian/LLaVA-Lightning-7B-delta-v1-1, 13B: liuhaotian/LLaVA-13b-delta-v1-1) "
    "merged onto the original LLaMA-1 weights with llava/model/apply_delta.py (save with safe_serialization=False "
    "or as safetensors; both load here); a community-merged 7B copy is mmaaz60/LLaVA-7B-Lightening-v1-1"
)


@dataclass(frozen=True)
class LlavaBase:
    folder: Path
    config: dict
    embed_file: Path
    lm_head_file: Path
    rows: int  # LLaVA vocabulary: V0 + 3
    width: int


def _weight_files(folder: Path) -> tuple[dict[str, Path], Path | None]:
    """Key -> file, from a shard index or a single weight file; and the index (None for a single file)."""
    for index_name in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
        index = folder / index_name
        if index.is_file():
            return read_shard_index(index), index
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return dict.fromkeys(read_shapes(folder / single), folder / single), None
    raise ModelFileError(
        folder,
        "a LLaVA-1.1 folder with config.json and pytorch_model*.bin or model*.safetensors (with its index.json)",
        f"contents {sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else 'no folder'}",
        LLAVA_11_FIX,
    )


def open_llava_base(folder: str | Path) -> LlavaBase:
    """Check that `folder` is a LLaVA-1.1 model and locate its embedding and lm_head."""
    folder = check_folder(folder, "a LLaVA-1.1 folder", LLAVA_11_FIX)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFileError(config_file, "the LLaVA-1.1 config.json", "no such file", LLAVA_11_FIX)
    config = read_json(config_file)
    files, index = _weight_files(folder)
    projector_type = config.get("mm_projector_type", "linear")
    if projector_type != "linear" or any(k.startswith("model.mm_projector.0.") for k in files):
        raise ModelFileError(
            folder,
            "LLaVA-1.1 (one linear mm_projector, vocabulary 32003, CLIP ViT-L/14 at 224 px)",
            f"a LLaVA-1.5 or later model (mm_projector_type {projector_type!r}, "
            f"vision tower {config.get('mm_vision_tower')!r})",
            LLAVA_11_FIX,
        )
    if EMBED_KEY not in files or LM_HEAD_KEY not in files:
        raise ModelFileError(
            folder, f"tensors {EMBED_KEY} and {LM_HEAD_KEY}", f"{len(files)} tensors without them", LLAVA_11_FIX
        )
    shape = shape_in_shard(files, EMBED_KEY, index)
    shape_in_shard(files, LM_HEAD_KEY, index)
    return LlavaBase(folder, config, files[EMBED_KEY], files[LM_HEAD_KEY], rows=shape[0], width=shape[1])


def base_rows(llava: LlavaBase, base_vocab: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [0, V0) of LLaVA's embedding and lm_head, after checking LLaVA's vocabulary is V0 + 3."""
    if llava.rows == base_vocab:
        raise ModelFileError(
            llava.embed_file,
            f"LLaVA-1.1's {base_vocab + LLAVA_EXTRA_ROWS}-row embedding (base vocabulary + <im_patch>, <im_start>, <im_end>)",
            f"{llava.rows} rows: a plain LLaMA/Vicuna or a LLaVA-1.5 checkpoint",
            LLAVA_11_FIX,
        )
    if llava.rows != base_vocab + LLAVA_EXTRA_ROWS or llava.width != width:
        raise ModelFileError(
            llava.embed_file,
            f"an embedding of [{base_vocab + LLAVA_EXTRA_ROWS}, {width}] matching the SmartEdit LLM file",
            f"[{llava.rows}, {llava.width}]",
            "use the LLaVA-1.1 model of the same size as the SmartEdit bundle (7B with 7B, 13B with 13B). " + LLAVA_11_FIX,
        )
    embed = read_rows(llava.embed_file, EMBED_KEY, base_vocab, dtype=torch.float32)
    lm_head = read_rows(llava.lm_head_file, LM_HEAD_KEY, base_vocab, dtype=torch.float32)
    return embed.to(dtype), lm_head.to(dtype)


def check_vocab(llm_rows: int, head_rows: int, llava, tokenizer: LlamaSlowTokenizer, bundle: SmartEditBundle) -> int:
    """The base vocabulary V0, after checking LLaVA (V0 + 3 rows), tokenizer (V0 pieces) and both SmartEdit
    files (V0 + 35 rows) agree; the error names the one that disagrees."""
    pieces = tokenizer.base_vocab
    if llava.rows != pieces + LLAVA_EXTRA_ROWS:
        if llava.rows == pieces:
            base_rows(llava, pieces, llava.width, torch.float32)  # raises the LLaVA-1.5 / plain-LLaMA error
        if llava.rows - LLAVA_EXTRA_ROWS + ADDED_ROWS == llm_rows:
            raise ModelFileError(
                tokenizer.model_file, f"a LLaMA tokenizer of {llm_rows - ADDED_ROWS} pieces (the base vocabulary of the weights)",
                f"{pieces} pieces", "use tokenizer.model of Vicuna-1.1 / LLaVA-1.1 (the LLaMA-1 tokenizer, 32000 pieces)",
            )
        raise ModelFileError(
            llava.embed_file, f"{pieces + LLAVA_EXTRA_ROWS} embedding rows (LLaVA-1.1: base vocabulary + 3)",
            f"{llava.rows} rows", "use the LLaVA-1.1 base that matches the SmartEdit bundle and the tokenizer",
        )
    for rows, path, what in ((llm_rows, bundle.llm, "embed_tokens"), (head_rows, bundle.embeddings_qformer, "lm_head")):
        if rows != pieces + ADDED_ROWS:
            raise ModelFileError(
                path, f"{what} with {pieces + ADDED_ROWS} rows: the base vocabulary {pieces} plus the {ADDED_ROWS} SmartEdit "
                "rows <img>, <im_start>, <im_end>, <img_0>..<img_31>",
                f"{rows} rows" + (" (the <img_k> rows are missing)" if rows < pieces + ADDED_ROWS else ""),
                "use the SmartEdit release files as published (re-download LLM-15000 if it predates 2024-04-28)",
            )
    return pieces

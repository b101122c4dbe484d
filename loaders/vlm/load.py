"""Loading a transformers vision-language model with its learned ``[MM]`` tokens (InsightEdit's bridge tokens).

InsightEdit (arXiv 2411.17323; docs/smartedit.md) appends ``r`` special tokens
``[MM_0] .. [MM_{r-1}]`` to the MLLM's input; their last-layer hidden states feed the bridge. A
folder fine-tuned for it (``save_pretrained`` of the model and tokenizer) already holds the tokens
and their trained embedding rows. For any other folder the tokens are added here, their rows set to
the mean of the existing rows (SmartEdit's initialisation, docs/smartedit.md), and the
bundle says they are untrained; learned rows can also come from a small file (``mm_embeddings``):

| key | shape | meaning |
|---|---|---|
| ``input_embeddings`` | ``[r, D_llm]`` | rows of the input embedding for ``[MM_0] .. [MM_{r-1}]`` |
| ``output_embeddings`` | ``[r, D_llm]`` | optional rows of the LM head (untied models) |

Images are preprocessed by the family's image processor with its PIL backend (the same numbers with
or without torchvision); the prompt is tokenised and its single image placeholder expanded to one
token per visual feature the model produces, as the transformers processors do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..weight_files import read_tensors
from .families import VLMFamily, recognise_vlm_family
from .weights import load_model, load_processor

MM_TOKEN_FORMAT = "[MM_{}]"  # InsightEdit's "[MM]" tokens; SmartEdit's analogue is <img_k>
DEFAULT_NUM_MM_TOKENS = 32  # r is not stated in the paper; SmartEdit uses 32 (docs/smartedit.md, InsightEdit)


@dataclass
class MLLMBundle:
    """A loaded VLM: ``model``, ``tokenizer``, ``image_processor``, its ``family`` and ``[MM]`` token ids."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    family: VLMFamily
    mm_token_ids: list[int]
    mm_tokens_trained: bool
    folder: str

    @property
    def image_marker(self) -> str:
        """What ``{image}`` becomes in a template: the placeholder token (Qwen: framed by vision start/end)."""
        config = self.model.config
        placeholder = self.tokenizer.convert_ids_to_tokens(config.image_token_id)
        if self.family.vision_kind == "qwen2-vl":
            start = self.tokenizer.convert_ids_to_tokens(config.vision_start_token_id)
            end = self.tokenizer.convert_ids_to_tokens(config.vision_end_token_id)
            return start + placeholder + end
        return placeholder


class VLMModule(torch.nn.Module):
    """One module for ComfyUI to move: ``vlm`` is the bundle's transformers model (the same object, so the
    bundle's encoder sees it where ComfyUI put it)."""

    def __init__(self, bundle: MLLMBundle) -> None:
        super().__init__()
        self.vlm = bundle.model

    @property
    def device(self) -> torch.device | None:
        """Where ComfyUI's ModelPatcher loaded the model (it sets ``device``), passed on to the encoder."""
        return self.vlm.__dict__.get(RUN_DEVICE)

    @device.setter
    def device(self, value: torch.device) -> None:
        self.vlm.__dict__[RUN_DEVICE] = value


RUN_DEVICE = "lmm_edit_run_device"


def run_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: where ComfyUI loaded it (partial loading leaves some weights offloaded, so the
    first weight's device, transformers' ``model.device``, may be the CPU), else ``model.device``."""
    placed = model.__dict__.get(RUN_DEVICE)
    return placed if placed is not None else model.device


def _mm_token_ids(tokenizer: object, names: list[str], folder: Path) -> list[int] | None:
    vocab = tokenizer.get_vocab()
    present = [name for name in names if name in vocab]
    if not present:
        return None
    if len(present) != len(names):
        existing = sorted(k for k in vocab if k.startswith("[MM_"))
        raise ModelFileError(
            folder,
            f"{len(names)} learned [MM] tokens {names[0]} .. {names[-1]}",
            f"{len(existing)} in the tokenizer ({', '.join(existing[:4])}{' ...' if len(existing) > 4 else ''})",
            f"set the number of [MM] tokens to {len(existing)}, the number this model was trained with",
        )
    return [vocab[name] for name in names]


def _add_mm_tokens(model: torch.nn.Module, tokenizer: object, names: list[str]) -> list[int]:
    old_rows = model.get_input_embeddings().weight.shape[0]
    known = len(tokenizer)
    tokenizer.add_tokens(names, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(names)
    if max(ids) >= old_rows:
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    with torch.no_grad():
        for embedding in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
            if embedding is not None:
                embedding.weight[ids] = embedding.weight[:known].mean(dim=0)
    return ids


def _load_mm_embeddings(model: torch.nn.Module, ids: list[int], path: Path) -> None:
    rows = read_tensors(path, expected_object="a file of [MM] embedding rows (input_embeddings, output_embeddings)")
    width = model.get_input_embeddings().weight.shape[1]
    for key in ("input_embeddings", "output_embeddings"):
        if key in rows and tuple(rows[key].shape) != (len(ids), width):
            raise ModelFileError(
                path,
                f"{key} of shape [{len(ids)}, {width}] (r [MM] tokens x the model's hidden size)",
                f"shape {tuple(rows[key].shape)}",
                "use the embeddings saved with this model and number of [MM] tokens",
            )
    if "input_embeddings" not in rows:
        raise ModelFileError(path, "an input_embeddings tensor", f"keys {sorted(rows)}", "save the trained rows")
    with torch.no_grad():
        inputs = model.get_input_embeddings().weight
        inputs[ids] = rows["input_embeddings"].to(inputs.dtype)
        outputs = model.get_output_embeddings()
        if "output_embeddings" in rows and outputs is not None and outputs.weight is not inputs:
            outputs.weight[ids] = rows["output_embeddings"].to(outputs.weight.dtype)


def load_mllm(
    folder: str | Path,
    num_mm_tokens: int = DEFAULT_NUM_MM_TOKENS,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    mm_embeddings: str | Path | None = None,
) -> MLLMBundle:
    """Load the VLM in ``folder`` (family from ``config.json``) with ``num_mm_tokens`` ``[MM]`` tokens.

    Raises ``ModelFileError`` for an unknown family, a folder without the files, missing, wrong-shape or
    unreadable weights (weights.py), or ``[MM]`` tokens that do not match ``num_mm_tokens``.
    """
    folder = Path(folder)
    if num_mm_tokens < 1:
        raise ModelFileError(
            folder, "at least one [MM] token", f"{num_mm_tokens}", "set the number of [MM] tokens to r >= 1"
        )
    family = recognise_vlm_family(folder)
    model = load_model(folder, family, dtype).to(device).eval()
    tokenizer = load_processor(folder, "tokenizer")
    image_processor = load_processor(folder, "image processor")

    names = [MM_TOKEN_FORMAT.format(k) for k in range(num_mm_tokens)]
    ids = _mm_token_ids(tokenizer, names, folder)
    trained = ids is not None
    if ids is None:
        ids = _add_mm_tokens(model, tokenizer, names)
    if mm_embeddings is not None:
        _load_mm_embeddings(model, ids, Path(mm_embeddings))
        trained = True
    return MLLMBundle(model, tokenizer, image_processor, family, ids, trained, str(folder))

"""Assembling SmartEdit's bridge (Q-Former from `embeddings_qformer`, BIM from `modulate-*`)."""

from __future__ import annotations

import torch

from .bim import BIM, bim_config_from_shapes
from .bundle import SmartEditBundle
from .conditioning import SmartEditBridge
from .errors import SmartEditLoadError
from .files import read_tensors
from .qformer import QFormer, qformer_config_from_shapes

QFORMER_PREFIX = "sd_qformer."
QUERY_KEY = "sd_query_tokens"
BIM_PREFIXES = (
    "modulate_head.", "modulate_transformer.", "pe_layer.",
    "dimension_reduction_head_zeroconv.", "dimension_reduction_head_qformer_out.",
)


def _qformer(bundle: SmartEditBundle, dtype: torch.dtype, heads: int | None) -> QFormer:
    raw = read_tensors(bundle.embeddings_qformer, lambda k: k.startswith(QFORMER_PREFIX) or k == QUERY_KEY, dtype)
    if QUERY_KEY not in raw or not any(k.startswith(QFORMER_PREFIX + "encoder.layer.") for k in raw):
        raise SmartEditLoadError(
            bundle.embeddings_qformer, f"{QUERY_KEY} and {QFORMER_PREFIX}encoder.layer.* (SmartEdit's embeddings_qformer file)",
            f"{len(raw)} matching tensors", "use embeddings_qformer/checkpoint-<step>_embeddings_qformer.bin of the release",
        )
    state = {k[len(QFORMER_PREFIX) :]: v for k, v in raw.items() if k.startswith(QFORMER_PREFIX)}
    state.pop("embeddings.position_ids", None)  # buffer of the removed position embeddings
    state["query_tokens"] = raw[QUERY_KEY]
    config = qformer_config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, heads)
    with torch.device("meta"):
        model = QFormer(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _bim(bundle: SmartEditBundle, dtype: torch.dtype) -> BIM:
    state = read_tensors(bundle.bim, lambda k: k.startswith(BIM_PREFIXES), dtype)
    if "modulate_head.weight" not in state or "dimension_reduction_head_zeroconv.weight" not in state:
        raise SmartEditLoadError(
            bundle.bim, "the BIM tensors modulate_head.*, modulate_transformer.*, pe_layer.*, dimension_reduction_head_*",
            f"{len(state)} of them", "use modulate-<step>/adapter_model.bin of the release",
        )
    config = bim_config_from_shapes({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = BIM(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_bridge(bundle: SmartEditBundle, dtype: torch.dtype = torch.float32, qformer_heads: int | None = None) -> SmartEditBridge:
    """Q-Former + BIM on CPU in `dtype`. qformer_heads: BERT head count (default width / 64: 12 for SmartEdit's 768)."""
    qformer = _qformer(bundle, dtype, qformer_heads)
    bim = _bim(bundle, dtype)
    if bim.config.text != qformer.config.hidden:
        raise SmartEditLoadError(
            bundle.bim, f"modulate_head.weight [*, {qformer.config.hidden}] (the Q-Former width)",
            f"[*, {bim.config.text}]", "use the modulate-* and embeddings_qformer files of the same bundle",
        )
    return SmartEditBridge(qformer, bim).eval()

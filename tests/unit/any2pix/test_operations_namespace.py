"""The InstructAny2Pix modules build their layers from the ``operations`` namespace they are given.

ComfyUI passes ``comfy.ops`` classes there (loaders/operations.py); here a namespace of recording
subclasses of torch.nn's layers stands in. Every Linear / LayerNorm / Embedding of the LLM (LLaMA
decoder, projector, predictor), the prior (GPT-2 body, CLIP text model, projections) and the
global-local image projection must be one of them, and the weights must load the same as with torch.nn.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lmm_edit.loaders.any2pix import load_global_local_adapter, load_llm, load_prior

LAYER_TYPES = ("Linear", "LayerNorm", "Embedding", "Conv2d")


def _recording_ops() -> SimpleNamespace:
    return SimpleNamespace(**{
        name: type(name, (getattr(torch.nn, name),), {"__module__": __name__}) for name in LAYER_TYPES
    })


def _assert_built_from(module: torch.nn.Module, ops: SimpleNamespace, expected: set[str]) -> None:
    layers = [m for m in module.modules() if isinstance(m, tuple(getattr(torch.nn, n) for n in LAYER_TYPES))]
    strays = sorted({type(m).__qualname__ for m in layers if type(m) not in vars(ops).values()})
    assert not strays, f"layers built outside the operations namespace: {strays}"
    assert {type(m).__name__ for m in layers} == expected


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_llm_layers_come_from_the_operations_namespace(fx, llm):
    ops = _recording_ops()
    model, _ = load_llm(fx.llm_dir, operations=ops)
    _assert_built_from(model, ops, {"Linear", "Embedding"})
    _same_state(model, llm[0])


def test_prior_layers_come_from_the_operations_namespace(fx, prior_bundle):
    ops = _recording_ops()
    bundle = load_prior(fx.prior_files[0], fx.gpt2_config, fx.clip_dir / "config.json", fx.clip_dir, operations=ops)
    _assert_built_from(bundle.prior, ops, {"Linear", "LayerNorm", "Embedding"})
    _same_state(bundle.prior, prior_bundle.prior)


def test_image_projection_layers_come_from_the_operations_namespace(fx):
    ops = _recording_ops()
    ours = load_global_local_adapter(fx.adapter_files[1], operations=ops)
    _assert_built_from(ours.image_proj, ops, {"Linear", "LayerNorm"})
    _same_state(ours.image_proj, load_global_local_adapter(fx.adapter_files[1]).image_proj)

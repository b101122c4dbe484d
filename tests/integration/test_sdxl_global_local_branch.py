"""The SDXL side of InstructAny2Pix in real ComfyUI: the tiny SDXL checkpoint through core CheckpointLoaderSimple,
and the pack's image branch fed an embedding through InstructAny2Pix's `ip_adapter_global_local_2_view` layout.

References: ComfyUI's own detection (comfy/supported_models.py SDXL family); the reference's projection written
out from the file's tensors (jacklishufan/InstructAny2Pix @ d11e49b ``ImageProjModel.forward``, mode global:
``LayerNorm(proj(x)[:4] + raw_embed[0])``; unconditional = the same of zeros) and IP-Adapter's decoupled
attention in float64 (image_branch_support.reference_decoupled_attention).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as functional

from .conftest import SDXL_CHECKPOINT
from .image_branch_support import record_attn2, reference_decoupled_attention, sample, write_into

ADAPTER_FILE = "ip_adapter_global_local_2_view.bin"  # the release name (ckpts/sdxl/)
EMBED_DIM = 1024  # ImageBind-huge / OpenCLIP ViT-H
ATTN2_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sdxl(comfyui, sdxl_checkpoint):
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(SDXL_CHECKPOINT)[:3]
    positive = nodes.CLIPTextEncode().encode(clip, "best quality, high qualitya red clock")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "monochrome, lowres, bad anatomy, worst quality, low quality")[0]
    latent = nodes.EmptyLatentImage().generate(64, 64)[0]
    return dict(model=model, clip=clip, vae=vae, positive=positive, negative=negative, latent=latent)


@pytest.fixture(scope="module")
def adapter_state(sdxl):
    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.selfcheck.ip_adapter_files import tiny_global_local_adapter_state

    layers = cross_attention_layers(sdxl["model"].model.model_config.unet_config)
    return tiny_global_local_adapter_state([layer.channels for layer in layers], context_dim=2048, clip_dim=EMBED_DIM)


@pytest.fixture(scope="module")
def adapter(comfyui, adapter_state):
    from lmm_edit.nodes.adapters import AdapterLoaderNode
    from lmm_edit.selfcheck.ip_adapter_files import write_adapter_file

    folder = comfyui.models_path / "ipadapter"
    comfyui.folder_paths.add_model_folder_path("ipadapter", str(folder))
    write_into(folder, ADAPTER_FILE, lambda path: write_adapter_file(adapter_state, path))
    return AdapterLoaderNode.execute(ADAPTER_FILE).result[0]


def reference_tokens(state: dict, embeds: torch.Tensor) -> torch.Tensor:
    proj = state["image_proj"]
    width = proj["norm.weight"].shape[0]
    tokens = (embeds.double() @ proj["proj.weight"].double().T + proj["proj.bias"].double()).reshape(1, -1, width)
    tokens = tokens + proj["raw_embed"][0].double()
    return functional.layer_norm(tokens, (width,), proj["norm.weight"].double(), proj["norm.bias"].double())


def test_the_tiny_checkpoint_loads_as_sdxl_through_core_nodes(sdxl):
    import comfy.model_base
    import comfy.supported_models

    model = sdxl["model"].model
    assert isinstance(model, comfy.model_base.SDXL)
    assert isinstance(model.model_config, comfy.supported_models.SDXL)
    text, extra = sdxl["positive"][0]
    assert text.shape == (1, 77, 2048) and extra["pooled_output"].shape == (1, 1280)
    image = sdxl["vae"].decode(sdxl["latent"]["samples"])
    assert image.shape == (1, 64, 64, 3) and bool(torch.isfinite(image).all())


def test_the_branch_fed_an_embedding_equals_the_reference_projection_and_attention(sdxl, adapter, adapter_state):
    from lmm_edit.loaders.ip_adapter import ANY2PIX_GLOBAL_LOCAL, cross_attention_layers
    from lmm_edit.nodes.adapters import IAAImageBranchNode

    assert adapter.model.family == ANY2PIX_GLOBAL_LOCAL
    embedding = torch.randn(1, EMBED_DIM, generator=torch.Generator().manual_seed(3))
    embedding = embedding / embedding.norm() * 20  # the fused embedding's norm (reference default norm=20)
    weight = 0.8
    model, positive, negative = IAAImageBranchNode.execute(
        sdxl["model"], adapter, sdxl["positive"], sdxl["negative"], weight, 0.0, 1.0, embedding=embedding).result
    recorded, calls = record_attn2(model)

    import comfy.samplers

    guider = comfy.samplers.CFGGuider(recorded)
    guider.set_conds(positive, negative)
    guider.set_cfg(5.0)
    out = sample(guider, sdxl["latent"], steps=1)
    assert bool(torch.isfinite(out).all())

    layers = cross_attention_layers(sdxl["model"].model.model_config.unet_config)
    index = {layer.block_key: n for n, layer in enumerate(layers)}
    assert {call["block"] for call in calls} == set(index)
    expected_rows = {0: reference_tokens(adapter_state, embedding), 1: reference_tokens(adapter_state, embedding * 0)}
    errors = []
    for call in calls:
        (key, tokens), = ((k, v) for k, v in call["extra"].items() if k.startswith("lmm_edit_image_tokens"))
        rows = torch.cat([expected_rows[c] for c in call["extra"]["cond_or_uncond"]])
        assert float((tokens.double() - rows).abs().max()) < 1e-5
        n = index[call["block"]]
        w_k, w_v = (adapter_state["ip_adapter"][f"{2 * n + 1}.to_{s}_ip.weight"] for s in ("k", "v"))
        expected = reference_decoupled_attention(call["q"], call["k"], call["v"], call["extra"]["n_heads"],
                                                 [(rows, w_k, w_v, weight, None)])
        errors.append(float((call["out"].double() - expected).abs().max() / expected.abs().max()))
    print(f"SDXL global-local branch: {len(calls)} attn2 calls, max relative error {max(errors):.2e}")
    assert max(errors) < ATTN2_TOLERANCE


def test_a_wrong_source_for_the_global_local_adapter_is_refused_with_the_fix(sdxl, adapter):
    from lmm_edit.nodes.adapters import IAAImageBranchNode

    with pytest.raises(ValueError, match="connect exactly one image source, embedding .*LMM_EDIT_EMBEDDING"):
        IAAImageBranchNode.execute(sdxl["model"], adapter, sdxl["positive"], sdxl["negative"], 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"reads an embedding \[images, 1024\]"):
        IAAImageBranchNode.execute(sdxl["model"], adapter, sdxl["positive"], sdxl["negative"], 1.0, 0.0, 1.0,
                                   embedding=torch.zeros(1, 768))

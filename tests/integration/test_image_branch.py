"""LMMEdit_AdapterLoader and LMMEdit_IAAImageBranch in real ComfyUI, on a tiny IP-Adapter for the tiny IP2P UNet.

References: diffusers' ``UNet2DConditionModel`` with ``load_ip_adapter``'s weights and
``IPAdapterAttnProcessor2_0`` on the same tensors (one UNet call); IP-Adapter's decoupled attention
written out in float64 (arXiv 2308.06721); tencent-ailab/IP-Adapter's ``ImageProjModel`` and its
zero-embeds unconditional; ComfyUI's untouched UNet for "off" (weight 0, end_percent 0, zero mask).
The CLIP vision output is built here (a ViT-L-wide ``image_embeds``); the example workflows run the
real CLIPVisionLoader / CLIPVisionEncode (test_image_branch_workflows.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from .conftest import build_ip2p_graph
from .image_branch_support import (
    ADAPTER_FILE,
    CLIP_IMAGE_EMBEDS,
    CONTEXT_DIM,
    UNetForwardRecorder,
    clip_vision_output,
    record_attn2,
    reference_decoupled_attention,
    reference_image_tokens,
    sample,
    tiny_ip2p_adapter_state,
    write_into,
)

PARITY_TOLERANCE = 1e-4  # max |ours - diffusers| / max |diffusers| on eps, fp32 CPU
ATTN2_TOLERANCE = 1e-5  # our attn2 output vs the float64 formula, fp32 inputs
OFF_TOLERANCE = 1e-5  # an image branch contributing 0: only the text attention kernel differs (SDPA vs ComfyUI's)


@pytest.fixture(scope="module")
def graph(comfyui, ip2p_checkpoint, example_image):
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    graph = build_ip2p_graph("make it look like the reference", example_image.name)
    pair = torch.cat([graph["image"], graph["image"].flip(2)])
    graph["batch2"] = InstructPixToPixConditioning.execute(graph["text"], graph["null_text"], pair, graph["vae"]).result
    return graph


@pytest.fixture(scope="module")
def plain(graph):
    """The edit without any image branch (2 Euler steps)."""
    return _plain(graph)


@pytest.fixture(scope="module")
def layers(graph):
    from lmm_edit.loaders.ip_adapter import cross_attention_layers

    return cross_attention_layers(graph["model"].model.model_config.unet_config)


@pytest.fixture(scope="module")
def ipadapter_folder(comfyui):
    folder = comfyui.models_path / "ipadapter"
    folder.mkdir(parents=True, exist_ok=True)
    comfyui.folder_paths.add_model_folder_path("ipadapter", str(folder))
    return folder


@pytest.fixture(scope="module")
def adapter_state():
    return tiny_ip2p_adapter_state()


@pytest.fixture(scope="module")
def adapter(ipadapter_folder, adapter_state):
    from lmm_edit.nodes.adapters import AdapterLoaderNode
    from lmm_edit.selfcheck.ip_adapter_files import write_adapter_file

    write_into(ipadapter_folder, ADAPTER_FILE, lambda path: write_adapter_file(adapter_state, path))
    return AdapterLoaderNode.execute(ADAPTER_FILE).result[0]


@pytest.fixture(scope="module")
def image_embeds():
    return torch.randn(1, CLIP_IMAGE_EMBEDS, generator=torch.Generator().manual_seed(1))


def _branch(graph, adapter, embeds, weight=1.0, model=None, positive=None, negative=None, **options):
    from lmm_edit.nodes.adapters import IAAImageBranchNode

    model = graph["model"] if model is None else model
    positive = graph["positive"] if positive is None else positive
    negative = graph["negative"] if negative is None else negative
    return IAAImageBranchNode.execute(
        model, adapter, positive, negative, weight,
        options.pop("start_percent", 0.0), options.pop("end_percent", 1.0),
        clip_vision_output=clip_vision_output(embeds), **options,
    ).result


def _guider(model, positive, negative):
    from lmm_edit.nodes.guidance import build_guider

    return build_guider(model, positive, negative, 7.5, 1.5)


def _first_eps(model, positive, negative, latent) -> torch.Tensor:
    """eps of the first UNet call (all guidance rows): where a branch adds exactly 0 but our text-attention
    kernel replaces ComfyUI's, results agree to ~1e-6 per call; sampling steps would amplify that."""
    recorder = UNetForwardRecorder()
    sample(_guider(recorder.install(model), positive, negative), latent, steps=1)
    return recorder.calls[0]["eps"]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _plain(graph, latent=None, conds=None):
    positive, negative = conds or (graph["positive"], graph["negative"])
    return sample(_guider(graph["model"], positive, negative), latent or graph["latent"])


def test_adapter_loader_recognises_the_ip_adapter_by_keys(adapter, layers):
    module = adapter.model
    assert (module.family, module.num_tokens, module.context_dim) == ("ip-adapter", 4, CONTEXT_DIM)
    assert module.layer_channels == tuple(layer.channels for layer in layers)


def test_files_of_another_family_fail_at_load_naming_file_and_expected_layout(ipadapter_folder):
    from safetensors.torch import save_file

    from lmm_edit.loaders.errors import ModelFileError
    from lmm_edit.nodes.adapters import AdapterLoaderNode

    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(ipadapter_folder / "some_lora.safetensors"))
    faceid = {"image_proj.proj.0.weight": torch.zeros(8, 512), "ip_adapter.1.to_k_ip.weight": torch.zeros(320, 768),
              "ip_adapter.1.to_v_ip.weight": torch.zeros(320, 768)}
    save_file(faceid, str(ipadapter_folder / "ip-adapter-faceid_sd15.safetensors"))

    with pytest.raises(ModelFileError) as foreign:
        AdapterLoaderNode.execute("some_lora.safetensors")
    assert "some_lora.safetensors" in str(foreign.value)
    assert "image_proj" in str(foreign.value) and "to_k_ip" in str(foreign.value)
    with pytest.raises(ModelFileError, match="FaceID") as refused:
        AdapterLoaderNode.execute("ip-adapter-faceid_sd15.safetensors")
    assert "ip-adapter-faceid_sd15.safetensors" in str(refused.value)


def test_an_adapter_for_another_unet_fails_in_the_node_naming_file_and_layers(graph, ipadapter_folder, image_embeds):
    from lmm_edit.loaders.errors import ModelFileError
    from lmm_edit.nodes.adapters import AdapterLoaderNode
    from lmm_edit.selfcheck.ip_adapter_files import tiny_ip_adapter_state, write_adapter_file

    sdxl_like = tiny_ip_adapter_state("basic", layer_channels=[640, 640, 1280], context_dim=2048, clip_dim=768)
    write_into(ipadapter_folder, "ip-adapter_sdxl.bin", lambda path: write_adapter_file(sdxl_like, path))
    adapter = AdapterLoaderNode.execute("ip-adapter_sdxl.bin").result[0]
    with pytest.raises(ModelFileError, match=r"ip-adapter_sdxl\.bin.*4 cross-attention layers with channels") as err:
        _branch(graph, adapter, image_embeds)
    assert "SDXL" in str(err.value)


def test_image_source_of_the_wrong_kind_is_refused_with_the_fix(graph, adapter, image_embeds):
    from lmm_edit.nodes.adapters import IAAImageBranchNode

    with pytest.raises(ValueError, match="connect exactly one image source, clip_vision_output"):
        IAAImageBranchNode.execute(graph["model"], adapter, graph["positive"], graph["negative"], 1.0, 0.0, 1.0)


def test_dual_cfg_branches_stay_one_batched_call_with_each_row_getting_its_own_tokens(
        graph, adapter, adapter_state, image_embeds):
    model, positive, negative = _branch(graph, adapter, image_embeds, 0.8)
    assert "lmm_edit_image_tokens_0" in positive[0][1]["model_conds"]
    assert "lmm_edit_image_tokens_0" in negative[0][1]["model_conds"]
    recorder = UNetForwardRecorder()
    recorded, calls = record_attn2(recorder.install(model))
    sample(_guider(recorded, positive, negative), graph["latent"], steps=2)

    assert [call["x"].shape[0] for call in recorder.calls] == [3, 3]
    assert all(sorted(call["order"]) == [0, 1, 2] for call in recorder.calls)
    cond = reference_image_tokens(adapter_state, image_embeds)[0]
    uncond = reference_image_tokens(adapter_state, torch.zeros_like(image_embeds))[0]  # zero embeds, projected
    first = calls[0]
    for row, branch in enumerate(first["extra"]["cond_or_uncond"]):
        expected = cond if branch == 2 else uncond  # DualCFG: 2 = positive, 1 = (∅,I), 0 = (∅,∅) from negative
        torch.testing.assert_close(first["extra"]["lmm_edit_image_tokens_0"][row], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{"weight": 0.0}, {"end_percent": 0.0}, {"start_percent": 1.0}])
def test_a_branch_that_is_off_leaves_the_output_identical_to_no_adapter(graph, adapter, image_embeds, plain, options):
    options = dict(options)
    weight = options.pop("weight", 1.0)
    model, positive, negative = _branch(graph, adapter, image_embeds, weight, **options)
    torch.testing.assert_close(sample(_guider(model, positive, negative), graph["latent"]), plain,
                               atol=0, rtol=0)


def test_start_percent_turns_the_branch_on_half_way_through_sampling(graph, adapter, image_embeds):
    """4 'normal' steps sit at 0, 1/3, 2/3 and 1 of the schedule: from 0.5 on, only the last two see the branch."""
    calls = {}
    for name, model_and_conds in (("plain", (graph["model"], graph["positive"], graph["negative"])),
                                  ("late", _branch(graph, adapter, image_embeds, 1.0, start_percent=0.5))):
        recorder = UNetForwardRecorder()
        model, positive, negative = model_and_conds
        sample(_guider(recorder.install(model), positive, negative), graph["latent"], steps=4)
        calls[name] = [call["eps"] for call in recorder.calls]
    for step in (0, 1):
        torch.testing.assert_close(calls["late"][step], calls["plain"][step], atol=0, rtol=0)
    assert _relative(calls["late"][2], calls["plain"][2]) > 1e-3


def test_a_branch_that_is_on_changes_the_output(graph, adapter, image_embeds, plain):
    model, positive, negative = _branch(graph, adapter, image_embeds, 1.0)
    assert (sample(_guider(model, positive, negative), graph["latent"]) - plain).abs().max() > 1e-2


def _reference_layer(call, layers, states_weights_masks):
    """Our attn2 inputs through the float64 formula, with each branch's weights taken from its file's tensors."""
    index = [layer.block_key for layer in layers].index(call["block"])
    branches = []
    for key, state, weight, mask in states_weights_masks:
        number = 2 * index + 1
        branches.append((call["extra"][key], state["ip_adapter"][f"{number}.to_k_ip.weight"],
                         state["ip_adapter"][f"{number}.to_v_ip.weight"], weight, mask))
    return reference_decoupled_attention(call["q"], call["k"], call["v"], call["extra"]["n_heads"], branches)


def _max_error(calls, layers, branches_for) -> float:
    errors = [(call["out"].double() - _reference_layer(call, layers, branches_for(call))).abs().max().item()
              for call in calls]
    assert len(calls) >= len(layers)
    return max(errors)


def test_every_attn2_layer_equals_the_decoupled_attention_formula(graph, adapter, adapter_state, layers,
                                                                   image_embeds):
    model, positive, negative = _branch(graph, adapter, image_embeds, 0.6)
    recorded, calls = record_attn2(model)
    sample(_guider(recorded, positive, negative), graph["latent"], steps=1)
    error = _max_error(calls, layers, lambda call: [("lmm_edit_image_tokens_0", adapter_state, 0.6, None)])
    print(f"attn2 vs float64 formula: max abs error {error:.2e} over {len(calls)} calls")
    assert error < ATTN2_TOLERANCE


def test_two_stacked_branches_add_their_image_attentions(graph, adapter, adapter_state, layers, ipadapter_folder,
                                                         image_embeds):
    from lmm_edit.nodes.adapters import AdapterLoaderNode
    from lmm_edit.selfcheck.ip_adapter_files import write_adapter_file

    other_state = tiny_ip2p_adapter_state(seed=11)
    write_into(ipadapter_folder, "second_adapter.bin", lambda path: write_adapter_file(other_state, path))
    other = AdapterLoaderNode.execute("second_adapter.bin").result[0]
    model, positive, negative = _branch(graph, adapter, image_embeds, 0.5)
    model, positive, negative = _branch(graph, other, -image_embeds, 0.7, model=model, positive=positive,
                                        negative=negative)
    assert {"lmm_edit_image_tokens_0", "lmm_edit_image_tokens_1"} <= set(negative[0][1]["model_conds"])

    recorded, calls = record_attn2(model)
    sample(_guider(recorded, positive, negative), graph["latent"], steps=1)
    error = _max_error(calls, layers, lambda call: [("lmm_edit_image_tokens_0", adapter_state, 0.5, None),
                                                     ("lmm_edit_image_tokens_1", other_state, 0.7, None)])
    assert error < ATTN2_TOLERANCE


def _left_half_rows(call) -> torch.Tensor:
    """1 for queries in the left half of the layer's grid, 0 elsewhere ([1, Lq])."""
    _, _, height, width = call["extra"]["original_shape"]
    q_len = call["q"].shape[1]
    while height * width > q_len:
        height, width = (height + 1) // 2, (width + 1) // 2
    return (torch.arange(width) < width // 2).float().repeat(height).reshape(1, -1)


def test_a_mask_confines_the_image_attention_to_its_region(graph, adapter, adapter_state, layers, image_embeds):
    _, height, width, _ = graph["image"].shape
    mask = torch.zeros(1, height, width)
    mask[:, :, : width // 2] = 1.0  # left half: aligned with every layer's grid, so the resize is exact
    model, positive, negative = _branch(graph, adapter, image_embeds, 1.0, attn_mask=mask)
    recorded, calls = record_attn2(model)
    sample(_guider(recorded, positive, negative), graph["latent"], steps=1)
    error = _max_error(calls, layers,
                       lambda call: [("lmm_edit_image_tokens_0", adapter_state, 1.0, _left_half_rows(call))])
    assert error < ATTN2_TOLERANCE

    model, positive, negative = _branch(graph, adapter, image_embeds, 1.0, attn_mask=torch.zeros(1, height, width))
    plain = _first_eps(graph["model"], graph["positive"], graph["negative"], graph["latent"])
    assert _relative(_first_eps(model, positive, negative, graph["latent"]), plain) < OFF_TOLERANCE


def test_per_image_weights_apply_to_their_own_image_of_the_batch(graph, adapter, image_embeds):
    positive, negative, latent = graph["batch2"]
    plain = _first_eps(graph["model"], positive, negative, latent)
    mixed = _first_eps(*_branch(graph, adapter, image_embeds, positive=positive, negative=negative,
                                batch_weights="1.0, 0.0"), latent)
    full = _first_eps(*_branch(graph, adapter, image_embeds, 1.0, positive=positive, negative=negative), latent)
    first, second = slice(0, None, 2), slice(1, None, 2)  # rows: 3 guidance chunks x (image 0, image 1)
    assert _relative(mixed[second], plain[second]) < OFF_TOLERANCE
    assert _relative(mixed[first], full[first]) < OFF_TOLERANCE
    assert _relative(mixed[first], plain[first]) > 1e-2


def test_one_unet_call_equals_diffusers_ip_adapter_on_the_same_weights(graph, adapter, adapter_state, tiny_ip2p,
                                                                        image_embeds):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    weight = 0.7
    model, positive, negative = _branch(graph, adapter, image_embeds, weight)
    recorder = UNetForwardRecorder()
    sample(_guider(recorder.install(model), positive, negative), graph["latent"], steps=1)
    call = recorder.calls[0]

    unet = copy.deepcopy(tiny_ip2p.unet)
    unet._load_ip_adapter_weights([adapter_state], low_cpu_mem_usage=False)
    processors = [p for p in unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert len(processors) == 4
    for processor in processors:
        processor.scale = [weight]
    # diffusers' unconditional rows get zero image embeds (prepare_ip_adapter_image_embeds); row order = ComfyUI's
    embeds = torch.stack([image_embeds[0] if branch == 2 else torch.zeros(CLIP_IMAGE_EMBEDS)
                          for branch in call["order"]])[:, None]  # [B, 1 image, D_clip]
    with torch.no_grad():
        expected = unet(call["x"], call["t"], encoder_hidden_states=call["context"],
                        added_cond_kwargs={"image_embeds": [embeds]}).sample
    error = ((call["eps"] - expected).abs().max() / expected.abs().max()).item()
    print(f"UNet eps vs diffusers IPAdapterAttnProcessor2_0: max relative error {error:.2e}")
    assert error < PARITY_TOLERANCE


def test_the_kernel_is_probed_once_per_head_width_when_the_branch_is_installed(graph, adapter, image_embeds,
                                                                               monkeypatch):
    import lmm_edit.nodes.image_branch_install as install
    from lmm_edit.kernels import MULTI_BRANCH_CROSS_ATTENTION

    seen = []
    real_probe = install.probe

    def recording_probe(op_name, device, dtype, head_dim):
        seen.append((op_name, torch.device(device).type, dtype, head_dim))
        return real_probe(op_name, device, dtype, head_dim)

    monkeypatch.setattr(install, "probe", recording_probe)
    _branch(graph, adapter, image_embeds)
    # tiny UNet: 8 heads over 320 channels (level 0) and 640 (middle), as SD1.5's 40/80-wide heads
    assert seen == [(MULTI_BRANCH_CROSS_ATTENTION, "cpu", torch.float32, 40),
                    (MULTI_BRANCH_CROSS_ATTENTION, "cpu", torch.float32, 80)]


def test_a_backend_that_cannot_run_fails_in_the_node_not_mid_sampling(graph, adapter, image_embeds):
    from lmm_edit.kernels import NoCapableBackendError
    from lmm_edit.loaders.ip_adapter.image_branch_patch import BACKEND_OPTION
    from lmm_edit.nodes.adapters import AttentionBackendNode

    with pytest.raises(NoCapableBackendError, match="triton"):
        AttentionBackendNode.execute(graph["model"], "triton")  # CPU: the Triton backend refuses
    forced = graph["model"].clone()
    forced.model_options["transformer_options"][BACKEND_OPTION] = "triton"
    with pytest.raises(NoCapableBackendError, match="triton"):
        _branch(graph, adapter, image_embeds, model=forced)
    eager = AttentionBackendNode.execute(graph["model"], "eager").result[0]
    model, positive, negative = _branch(graph, adapter, image_embeds, model=eager)
    automatic = sample(_guider(*_branch(graph, adapter, image_embeds)), graph["latent"])
    torch.testing.assert_close(sample(_guider(model, positive, negative), graph["latent"]), automatic,
                               atol=0, rtol=0)  # on CPU auto is eager too


def test_another_packs_attn2_patch_is_refused_with_the_fix(graph, adapter, image_embeds, layers):
    foreign = graph["model"].clone()
    foreign.set_model_attn2_replace(lambda q, k, v, extra: q, *layers[0].block_key)
    with pytest.raises(ValueError, match="already has another cross-attention patch"):
        _branch(graph, adapter, image_embeds, model=foreign)


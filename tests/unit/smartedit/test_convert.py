"""convert-smartedit: release bundle -> compact safetensors that the same loader reads with the same results."""

from __future__ import annotations

import torch
from safetensors import safe_open

from lmm_edit.__main__ import main as cli_main
from lmm_edit.loaders.smartedit import bridge_condition, encode_instruction, find_bundle, load_smartedit
from lmm_edit.loaders.smartedit.files import read_tensors

FP16_TOL = 2e-3


def _run(models, fixture, read_png):
    instruction, human = fixture.instruction_and_template()
    image = read_png(fixture.root / "inputs" / "input_image.png")
    out = encode_instruction(models.lmm, image, instruction, template=human, teacher_ids=fixture.forced_ids)
    return out, bridge_condition(models.bridge, out, tuple(fixture.stage[4]["modulated_image_features"].shape[-2:]))


def _load(path, fixture):
    return load_smartedit(path, fixture.llava, fixture.clip, tokenizer_path=fixture.tokenizer, qformer_heads=fixture.qformer_heads)


def test_converted_fp32_bundle_gives_identical_results(fixture, tmp_path, read_png):
    assert cli_main(["convert-smartedit", str(fixture.bundle), str(tmp_path / "conv")]) == 0
    assert find_bundle(tmp_path / "conv").layout == "converted"
    ours, ref = _run(_load(tmp_path / "conv", fixture), fixture, read_png), _run(_load(fixture.bundle, fixture), fixture, read_png)
    assert torch.equal(ours[0].hidden_states, ref[0].hidden_states)
    assert torch.equal(ours[1].cond, ref[1].cond) and torch.equal(ours[1].residual, ref[1].residual)


def test_converted_fp16_bundle_stays_within_the_fp16_tolerance(fixture, tmp_path, read_png, rel_err):
    cli_main(["convert-smartedit", str(fixture.bundle), str(tmp_path / "half"), "--dtype", "fp16"])
    with safe_open(str(tmp_path / "half" / "llm.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {d for k, d in dtypes.items() if "inv_freq" not in k} == {"F16"}
    _, bridge = _run(_load(tmp_path / "half", fixture), fixture, read_png)
    assert rel_err(bridge.cond, fixture.stage[4]["final_text_conditioning_fp16"]) < 10 * FP16_TOL


def test_converted_unet_is_the_ldm_state_of_the_release_unet(fixture, tmp_path):
    from lmm_edit.loaders.smartedit import load_unet_ldm

    cli_main(["convert-smartedit", str(fixture.bundle), str(tmp_path / "conv")])
    converted = read_tensors(tmp_path / "conv" / "unet.safetensors")
    release = load_unet_ldm(find_bundle(fixture.bundle))
    assert set(converted) == set(release) and all(torch.equal(converted[k], release[k]) for k in release)


def test_release_bin_with_shared_storage_loads_only_the_kept_tensors(tmp_path):
    """Release .bin files carry one flat ZeRO buffer; every loaded tensor must own a storage of its own size."""
    from lmm_edit.selfcheck.smartedit_release import write_smartedit_release

    paths = write_smartedit_release(tmp_path, seed=4, safetensors_copies=False)
    models = load_smartedit(paths.bundle, paths.llava, paths.clip, qformer_heads=paths.qformer_heads)
    tensors = [*models.lmm.state_dict().values(), *models.bridge.state_dict().values(), *models.unet_ldm.values()]
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)

"""Loading `imagebind_huge.pth`: sizes from the shapes, head counts from the constructor arguments, injectable
layer classes, and errors that name the file, what was expected, what was found and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmm_edit.loaders.any2pix.imagebind import ImageBind, load_imagebind
from lmm_edit.loaders.any2pix.imagebind_file import KWARGS_FILE_NAME, ImageBindConfig
from lmm_edit.loaders.errors import ModelFileError

RELEASE_NAME = "imagebind_huge.pth"


def _state(fixture) -> dict[str, torch.Tensor]:
    return torch.load(fixture.weights, map_location="cpu", weights_only=True)


def _kwargs(fixture) -> dict:
    return json.loads(fixture.kwargs_file.read_text()) if fixture.kwargs_file else {}


def _assert_user_error(err: ModelFileError, file: Path, *words: str) -> None:
    message = str(err)
    print(f"\n{message}")
    assert message.startswith(str(file)) and "expected" in message and "found" in message and "Fix:" in message
    for word in words:
        assert word in message


def test_sizes_come_from_the_shapes_and_heads_from_the_constructor_arguments(fixture, imagebind):
    args = _kwargs(fixture)
    config = imagebind.config
    assert config.vision.trunk.width == args.get("vision_embed_dim", 1280)
    assert config.vision.trunk.blocks == args.get("vision_num_blocks", 32)
    assert config.vision.trunk.heads == args.get("vision_num_heads", 16)
    assert config.audio.trunk.width == args.get("audio_embed_dim", 768)
    assert config.audio.trunk.blocks == args.get("audio_num_blocks", 12)
    assert config.audio.trunk.heads == args.get("audio_num_heads", 12)
    assert config.vision.out_dim == config.audio.out_dim == args.get("out_embed_dim", 1024)
    assert config.vision.trunk.pre_norm and not config.vision.trunk.bias_kv
    assert config.audio.trunk.bias_kv and not config.audio.trunk.pre_norm


def test_imagebind_huge_shapes_give_the_huge_encoders_without_a_json():
    """Shapes of imagebind_huge() (vision 1280 x 32 blocks, audio 768 x 12, out 1024): the defaults fill the rest."""
    def trunk(modality: str, width: int, blocks: int) -> dict:
        shapes = {}
        for i in range(blocks):
            shapes[f"modality_trunks.{modality}.blocks.{i}.norm_1.weight"] = (width,)
            shapes[f"modality_trunks.{modality}.blocks.{i}.mlp.fc1.weight"] = (4 * width, width)
        return shapes

    shapes = {
        **trunk("vision", 1280, 32), **trunk("audio", 768, 12),
        "modality_trunks.vision.pre_transformer_layer.0.weight": (1280,),
        "modality_trunks.audio.blocks.0.attn.bias_k": (1, 1, 768),
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (1280, 3, 2, 14, 14),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 257, 1280),
        "modality_preprocessors.audio.rgbt_stem.proj.weight": (768, 1, 16, 16),
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 229, 768),
        "modality_heads.vision.2.weight": (1024, 1280),
        "modality_heads.audio.2.weight": (1024, 768),
    }
    config = ImageBindConfig.from_shapes(shapes, {}, Path(RELEASE_NAME), None)
    assert (config.vision.trunk.heads, config.audio.trunk.heads, config.audio.stride) == (16, 12, 10)
    assert (config.vision.trunk.blocks, config.vision.trunk.mlp_hidden, config.vision.grid) == (32, 5120, (1, 16, 16))
    assert (config.audio.trunk.blocks, config.audio.grid, config.vision.out_dim) == (12, (12, 19), 1024)
    with torch.device("meta"):
        model = ImageBind(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"\nImageBind-huge vision + audio encoders: {params / 1e6:.1f} M parameters")
    assert 700e6 < params < 730e6  # ViT-H/14 (~632 M) + the audio ViT-B (~86 M)


def test_constructor_arguments_next_to_the_weights_are_read(fixture, tmp_path):
    args = {**_kwargs(fixture)}
    args.setdefault("vision_num_heads", 16)
    args.setdefault("audio_num_heads", 12)
    shutil.copy(fixture.weights, tmp_path / RELEASE_NAME)
    (tmp_path / KWARGS_FILE_NAME).write_text(json.dumps(args))
    model = load_imagebind(tmp_path / RELEASE_NAME)
    assert (model.config.vision.trunk.heads, model.config.audio.trunk.heads) == (
        args["vision_num_heads"], args["audio_num_heads"])


def test_without_constructor_arguments_the_heads_are_imagebind_huge_s(fixture, tmp_path):
    """16 vision and 12 audio heads; weights whose widths these do not divide get a message saying so."""
    shutil.copy(fixture.weights, tmp_path / RELEASE_NAME)
    state = _state(fixture)
    vision_width = state["modality_trunks.vision.blocks.0.norm_1.weight"].shape[0]
    audio_width = state["modality_trunks.audio.blocks.0.norm_1.weight"].shape[0]
    if vision_width % 16 == 0 and audio_width % 12 == 0:
        model = load_imagebind(tmp_path / RELEASE_NAME)
        assert (model.config.vision.trunk.heads, model.config.audio.trunk.heads) == (16, 12)
        return
    with pytest.raises(ModelFileError) as err:
        load_imagebind(tmp_path / RELEASE_NAME)
    _assert_user_error(err.value, tmp_path / RELEASE_NAME, "_num_heads = 1", KWARGS_FILE_NAME)


def test_a_json_of_other_sizes_is_refused(fixture, tmp_path):
    wrong = {**_kwargs(fixture), "vision_embed_dim": 2 * (_kwargs(fixture).get("vision_embed_dim", 1280))}
    (tmp_path / "args.json").write_text(json.dumps(wrong))
    with pytest.raises(ModelFileError) as err:
        load_imagebind(fixture.weights, kwargs_file=tmp_path / "args.json")
    _assert_user_error(err.value, tmp_path / "args.json", "vision_embed_dim")


def test_a_file_of_another_model_is_refused(fixture):
    other = fixture.root / "checkpoints" / "ckpts" / "prior" / "model.bin"
    with pytest.raises(ModelFileError) as err:
        load_imagebind(other, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, other, "no ImageBind keys", RELEASE_NAME)


def test_a_nested_checkpoint_is_refused(fixture):
    nested = fixture.root / "checkpoints" / "ckpts" / "sdxl" / "ip_adapter_global_local_2_view.bin"
    with pytest.raises(ModelFileError) as err:
        load_imagebind(nested, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, nested, "a dict of tensors", RELEASE_NAME)


def test_a_truncated_file_is_refused(fixture, tmp_path):
    truncated = tmp_path / RELEASE_NAME
    truncated.write_bytes(fixture.weights.read_bytes()[: fixture.weights.stat().st_size // 2])
    with pytest.raises(ModelFileError) as err:
        load_imagebind(truncated, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, truncated, "truncated", "download the file again")


def test_a_missing_file_is_refused(fixture, tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_imagebind(tmp_path / RELEASE_NAME, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, tmp_path / RELEASE_NAME, "nothing at this path")


def test_a_file_without_the_audio_encoder_is_refused(fixture, tmp_path):
    vision_only = tmp_path / RELEASE_NAME
    torch.save({k: v for k, v in _state(fixture).items() if ".audio." not in k}, vision_only)
    with pytest.raises(ModelFileError) as err:
        load_imagebind(vision_only, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, vision_only, "no audio encoder")


def test_a_tensor_the_encoder_does_not_have_is_named(fixture, tmp_path):
    state = _state(fixture)
    width = state["modality_trunks.vision.blocks.0.norm_1.weight"].shape[0]
    state["modality_trunks.vision.blocks.0.layer_scale_gamma1"] = torch.ones(1, 1, width)
    path = tmp_path / RELEASE_NAME
    torch.save(state, path)
    with pytest.raises(ModelFileError) as err:
        load_imagebind(path, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, path, "modality_trunks.vision.blocks.0.layer_scale_gamma1")


def test_a_missing_tensor_is_named_as_in_the_release_file(fixture, tmp_path):
    state = _state(fixture)
    del state["modality_trunks.audio.blocks.0.attn.in_proj_bias"]
    path = tmp_path / RELEASE_NAME
    torch.save(state, path)
    with pytest.raises(ModelFileError) as err:
        load_imagebind(path, kwargs_file=fixture.kwargs_file)
    _assert_user_error(err.value, path, "modality_trunks.audio.blocks.0.attn.in_proj_bias")


def test_layers_are_built_from_the_operations_namespace(fixture):
    def recording(base):
        return type(base.__name__, (base,), {"__module__": __name__})

    layer_types = ("Linear", "LayerNorm", "Conv2d", "Conv3d")
    ops = SimpleNamespace(**{n: recording(getattr(torch.nn, n)) for n in layer_types})
    model = load_imagebind(fixture.weights, kwargs_file=fixture.kwargs_file, operations=ops)
    layers = [m for m in model.modules() if isinstance(m, tuple(getattr(torch.nn, n) for n in layer_types))]
    assert all(type(m).__module__ == __name__ for m in layers)
    assert {type(m).__name__ for m in layers} == set(layer_types)

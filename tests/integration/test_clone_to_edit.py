"""README's path from a fresh install to a SmartEdit edit, every command as the user types it, on tiny weights.

A fake Hub on 127.0.0.1 (HF_ENDPOINT) serves tiny files in the real repositories' layouts: the IP2P checkpoint,
the SmartEdit-7B release folders, CLIP ViT-L and a LLaVA-1.1 delta made against a tiny "LLaMA-1" base that the
user has locally. Then: download x4 -> prepare-llava -> doctor (all present) -> edit (a real, not self-check, run).
ComfyUI runs with --base-directory in a temp folder: nothing is written into the checkout.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import torch
from fake_hub import FakeHub
from PIL import Image

from lmm_edit.loaders.model_catalogue import LLAVA_7B_DELTA_FILES
from lmm_edit.selfcheck.smartedit_release import TinySizes, write_smartedit_release
from pack_process import run_with_pack

# The catalogue pins the real IP2P checkpoint's sha256, which no tiny file can match: for this run only, that
# one pin is dropped so the fake Hub's own listing is checked instead (the pin itself is unit-tested).
RUN_MAIN = (
    "import dataclasses; from lmm_edit.loaders import model_catalogue as c; d = c.DOWNLOADS['instructpix2pix']; "
    "c.DOWNLOADS['instructpix2pix'] = dataclasses.replace(d, files=tuple(dataclasses.replace(f, sha256=None) "
    "for f in d.files)); from lmm_edit.__main__ import main; raise SystemExit(main(sys.argv[1:]))"
)
SIZES = TinySizes(qformer_hidden=768, qformer_layers=2, qformer_heads=12, unet_channels=(320, 320))


def split_into_base_and_delta(llava: pathlib.Path, base_dir: pathlib.Path, base_vocab: int) -> dict[str, bytes]:
    """A LLaMA-1-style base (random, fp16 safetensors) and the delta files that turn it into ``llava``."""
    index = json.loads((llava / "pytorch_model.bin.index.json").read_text())["weight_map"]
    target = {}
    for shard in sorted(set(index.values())):
        target.update(torch.load(llava / shard, weights_only=True))
    g = torch.Generator().manual_seed(7)
    base = {k: torch.randn(v.shape if k not in ("model.embed_tokens.weight", "lm_head.weight")
                           else (base_vocab, v.shape[1]), generator=g).half()
            for k, v in target.items() if not k.startswith("model.mm_projector.")}
    delta = {}
    for key, value in target.items():
        d = value.float().clone()
        if key in base:
            d[: base[key].shape[0]] -= base[key].float()
        delta[key] = d
    base_dir.mkdir()
    from safetensors.torch import save_file

    save_file(base, str(base_dir / "model.safetensors"))
    config = json.loads((llava / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({
        **{k: config[k] for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                                  "rms_norm_eps")},
        "model_type": "llama", "vocab_size": base_vocab, "max_position_embeddings": 2048}))
    files = {name: b"{}" for name in LLAVA_7B_DELTA_FILES if name.endswith(".json")}
    names = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
    keys = sorted(delta)
    weight_map = {}
    for n, name in enumerate(names):
        part = {k: delta[k] for k in keys[n::2]}
        torch.save(part, base_dir.parent / name)
        files[name] = (base_dir.parent / name).read_bytes()
        weight_map.update(dict.fromkeys(part, name))
    files["pytorch_model.bin.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    files["config.json"] = (llava / "config.json").read_bytes()
    files["tokenizer.model"] = (llava / "tokenizer.model").read_bytes()
    return files


def folder_files(folder: pathlib.Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_readme_commands_from_clone_to_a_smartedit_edit(comfyui, ip2p_checkpoint, tmp_path):
    release = write_smartedit_release(tmp_path / "release", seed=0, sizes=SIZES, safetensors_copies=False)
    bundle = folder_files(release.bundle)
    bundle["LLM-15000/adapter_config.json"] = bundle.pop("adapter_config.json")  # where the Hub repo keeps it
    repos = {
        "timbrooks/instruct-pix2pix": {"instruct-pix2pix-00-22000.safetensors": ip2p_checkpoint.read_bytes()},
        "TencentARC/SmartEdit-7B": {**bundle, "README.md": b"This is SmartEdit-7B checkpoint."},
        "openai/clip-vit-large-patch14": folder_files(release.clip),
        "liuhaotian/LLaVA-Lightning-7B-delta-v1-1": split_into_base_and_delta(
            release.llava, tmp_path / "llama-7b", SIZES.base_vocab),
    }
    base = tmp_path / "comfy_base"
    common = ["--comfyui", str(comfyui.comfyui_path), "--base-directory", str(base)]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_TOKEN", None)

    def run(*args, **extra_env):
        done = run_with_pack(RUN_MAIN, *args, *common, env={**env, **extra_env}, cwd=tmp_path)
        return done

    with FakeHub(repos) as hub:
        for name in ("instructpix2pix", "smartedit-7b", "clip-vit-l", "llava-7b-delta"):
            done = run("download", name, HF_ENDPOINT=hub.url)
            assert done.returncode == 0, (name, done.stderr[-3000:])
    delta = base / "models" / "lmm_edit" / "llava_delta" / "LLaVA-Lightning-7B-delta-v1-1"
    done = run("prepare-llava", "--base", str(tmp_path / "llama-7b"), "--delta", str(delta))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (base / "models" / "lmm_edit" / "llava" / "LLaVA-7B-v1" / "model.safetensors.index.json").is_file()

    doctor = run("doctor", "--workflow", "smartedit", HF_HUB_OFFLINE="1")
    assert doctor.returncode == 0 and "4 of 4 model files present" in doctor.stdout, doctor.stdout + doctor.stderr

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    edit = run("edit", "--workflow", "smartedit", "--image", str(image), "--steps", "2", "--output",
               str(tmp_path / "out"), HF_HUB_OFFLINE="1")
    assert edit.returncode == 0, edit.stderr[-3000:]
    assert "SELF-CHECK" not in edit.stdout and "Real model weights not found" not in edit.stdout
    (saved,) = [line.split(" ", 1)[1] for line in edit.stdout.splitlines() if line.startswith("saved ")]
    assert np.asarray(Image.open(saved)).shape == (48, 64, 3)

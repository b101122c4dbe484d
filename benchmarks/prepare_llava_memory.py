"""Peak memory of prepare-llava (shard by shard) against loading base and delta whole, as apply_delta.py does.

Builds a synthetic LLaMA-shaped base (fp16 safetensors) and LLaVA delta (fp16 .bin shards, vocabulary + 3,
mm_projector) in a temporary folder, then runs each path in a fresh interpreter and reads its peak RSS
(``ru_maxrss``). "over baseline" subtracts the RSS after importing torch, which both paths pay.

    python benchmarks/prepare_llava_memory.py [--layers 8] [--width 1024] [--shards 4]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pack_process import run_with_pack  # noqa: E402

CHILD_PRELUDE = "import resource, torch, json, pathlib; base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
CHILD_REPORT = "print(json.dumps({'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'base_kb': base_rss}))"

SHARD_BY_SHARD = CHILD_PRELUDE + (
    "from lmm_edit.loaders.llava_delta import apply_delta; "
    "apply_delta(pathlib.Path(sys.argv[0]), pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), report=lambda _: None); "
) + CHILD_REPORT

# What apply_delta.py amounts to in memory: both state dicts whole, the sum, one save.
LOAD_EVERYTHING = CHILD_PRELUDE + (
    "from safetensors.torch import load_file, save_file; "
    "base = {}; [base.update(load_file(p)) for p in sorted(pathlib.Path(sys.argv[0]).glob('*.safetensors'))]; "
    "delta = {}; [delta.update(torch.load(p, weights_only=True)) for p in sorted(pathlib.Path(sys.argv[1]).glob('*.bin'))]; "
    "out = {}\n"
    "for k, v in delta.items():\n"
    "    v = v.half().clone()\n"
    "    b = base.get(k)\n"
    "    if b is not None: v[: b.shape[0]] += b\n"
    "    out[k] = v\n"
    "pathlib.Path(sys.argv[2]).mkdir(); save_file(out, sys.argv[2] + '/model.safetensors'); "
) + CHILD_REPORT


def build(folder: pathlib.Path, layers: int, width: int, shards: int) -> tuple[pathlib.Path, pathlib.Path, int]:
    import torch
    from safetensors.torch import save_file

    vocab, inter = 32000, width * 11 // 4
    shapes = {"model.embed_tokens.weight": (vocab, width), "lm_head.weight": (vocab, width), "model.norm.weight": (width,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{n}_proj.weight": (width, width) for n in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (inter, width), p + "mlp.up_proj.weight": (inter, width),
                       p + "mlp.down_proj.weight": (width, inter), p + "input_layernorm.weight": (width,),
                       p + "post_attention_layernorm.weight": (width,)})
    config = {"model_type": "llama", "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 8,
              "intermediate_size": inter, "vocab_size": vocab, "max_position_embeddings": 2048}
    base_dir, delta_dir = folder / "llama-base", folder / "llava-delta"
    total = 0
    for role, directory, extra in (("base", base_dir, 0), ("delta", delta_dir, 3)):
        directory.mkdir()
        keys = sorted(shapes) + (["model.mm_projector.weight"] if extra else [])
        index = {}
        for n in range(shards):
            part = {}
            for key in keys[n::shards]:
                shape = (width, 1024) if key == "model.mm_projector.weight" else shapes[key]
                if extra and key in ("model.embed_tokens.weight", "lm_head.weight"):
                    shape = (vocab + extra, width)
                part[key] = torch.randn(shape, dtype=torch.float16)
            name = f"shard-{n:05d}." + ("safetensors" if role == "base" else "bin")
            save_file(part, str(directory / name)) if role == "base" else torch.save(part, directory / name)
            index.update(dict.fromkeys(part, name))
            total += sum(t.numel() * 2 for t in part.values()) if role == "delta" else 0
        index_name = "model.safetensors.index.json" if role == "base" else "pytorch_model.bin.index.json"
        (directory / index_name).write_text(json.dumps({"weight_map": index}))
        (directory / "config.json").write_text(json.dumps({**config, "vocab_size": vocab + extra}))
    return base_dir, delta_dir, total


def measure(code: str, base: pathlib.Path, delta: pathlib.Path, out: pathlib.Path) -> dict:
    result = run_with_pack("import sys; sys.argv = sys.argv[1:]; " + code, str(base), str(delta), str(out))
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        base, delta, size = build(pathlib.Path(work), args.layers, args.width, args.shards)
        ours = measure(SHARD_BY_SHARD, base, delta, pathlib.Path(work) / "ours")
        whole = measure(LOAD_EVERYTHING, base, delta, pathlib.Path(work) / "whole")
    mb = 1 / 1024
    print(f"model {size / 2**20:.0f} MB in {args.shards} delta shards ({size / args.shards / 2**20:.0f} MB each)")
    for label, r in (("shard by shard", ours), ("load everything", whole)):
        print(f"{label:16} peak RSS {r['peak_kb'] * mb:7.0f} MB, over baseline {(r['peak_kb'] - r['base_kb']) * mb:7.0f} MB")
    over = (ours["peak_kb"] - ours["base_kb"]) / max(whole["peak_kb"] - whole["base_kb"], 1)
    print(f"ratio shard-by-shard / load-everything: peak {ours['peak_kb'] / whole['peak_kb']:.2f}, over baseline {over:.2f}")


if __name__ == "__main__":
    sys.exit(main())

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
import subprocess
import sys
import tempfile

from pack_import import ROOT, import_pack

import_pack()
from lmm_edit.selfcheck.hf_llama import MM_PROJECTOR, hf_llama_shapes, write_hf_shards  # noqa: E402

# Each path runs in a fresh interpreter with this checkout imported as lmm_edit (peak RSS is per process).
CHILD_ALIAS = (
    "import importlib.util, sys; root = sys.argv[1]; "
    "spec = importlib.util.spec_from_file_location('lmm_edit', root + '/__init__.py', "
    "submodule_search_locations=[root]); m = importlib.util.module_from_spec(spec); "
    "sys.modules['lmm_edit'] = m; spec.loader.exec_module(m); sys.argv = sys.argv[2:]; "
)

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
    """A LLaMA-1-shaped fp16 base (safetensors) and a LLaVA delta (fp16 .bin: vocabulary + 3, mm_projector)."""
    import torch

    vocab, inter, extra = 32000, width * 11 // 4, 3
    config = {"model_type": "llama", "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 8,
              "intermediate_size": inter, "vocab_size": vocab, "max_position_embeddings": 2048}
    base = {k: torch.randn(s, dtype=torch.float16) for k, s in hf_llama_shapes(vocab, width, layers, inter).items()}
    write_hf_shards(folder / "llama-base", base, shards, config)
    del base
    delta = {k: torch.randn(s, dtype=torch.float16)
             for k, s in hf_llama_shapes(vocab + extra, width, layers, inter).items()}
    delta[MM_PROJECTOR + "weight"] = torch.randn(width, 1024, dtype=torch.float16)
    total = sum(t.numel() * t.element_size() for t in delta.values())
    write_hf_shards(folder / "llava-delta", delta, shards, {**config, "vocab_size": vocab + extra}, "bin")
    return folder / "llama-base", folder / "llava-delta", total


def measure(code: str, base: pathlib.Path, delta: pathlib.Path, out: pathlib.Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD_ALIAS + code, str(ROOT), str(base), str(delta), str(out)],
                            capture_output=True, text=True)
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

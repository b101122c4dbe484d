"""Stages chained as the pipeline runs them, from ImageBind's stored outputs (stage 3, built by the ImageBind
loader) through the x20 renormalisation, the LLM (answer teacher-forced), the prior (the stored int64 noisy
input; and the direct mode), the fusion and the IP-Adapter projection. Every intermediate is compared."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix import (
    REFERENCE,
    encode_instruction,
    fuse,
    load_global_local_adapter,
    prior_input,
    refine,
    renormalize_inputs,
)


@pytest.fixture(scope="module")
def chain(fx, llm, prior_bundle, settings):
    model, tokenizer = llm
    s3 = fx.stage[3]
    kinds = fx.input_kinds()
    raw = torch.cat([s3["imagebind_output_vision"] if k == "image" else s3["imagebind_output_audio"] for k in kinds])
    aux = renormalize_inputs(raw)
    run = encode_instruction(model, tokenizer, fx.instruction(tokenizer), aux, kinds, settings, forced=fx.forced_ids)
    prior = prior_bundle.prior
    text = prior.text_states(torch.tensor([prior_bundle.empty_text_ids]))
    src = prior_input(run.image_embeds)
    refined = refine(prior, src, text, noisy_input=fx.inputs["prior_noisy_input"], scheduler_config=fx.scheduler_config)
    direct = refine(prior, src, text, mode="direct", scheduler_config=fx.scheduler_config)
    latents = {m: fuse(run.base.embed, run.image_embeds, r.y, REFERENCE.h, REFERENCE.norm) for m, r in (("reference", refined), ("direct", direct))}
    adapter = load_global_local_adapter(fx.adapter_files[0])
    with torch.no_grad():
        tokens = adapter.image_proj.conditional(latents["reference"][0])
    return {"aux": aux, "run": run, "src": src, "y": refined.y, "latents": latents, "tokens": tokens}


def test_chain_llm(fx, chain, check, tol):
    s2 = fx.stage[2]
    check("chain: aux (renormalised ImageBind)", chain["aux"], s2["extra_replacement_data"], tol.formula, tol.formula)
    check("chain: image_embeds", chain["run"].image_embeds, s2["llm_image_embeds"], tol.network, tol.network)
    check("chain: base_embed", chain["run"].base.embed, s2["llm_base_embed"], tol.network, tol.network)
    assert chain["run"].caption == fx.run_info["output_caption"]


def test_chain_prior(fx, chain, check, tol):
    s1 = fx.stage[1]
    check("chain: prior src (norm 100)", chain["src"], s1["prior_src"], tol.network, tol.network)
    check("chain: prior y", chain["y"], s1["prior_y"], tol.network)


def test_chain_fusion_and_projection(fx, chain, check, tol):
    check("chain: fusion latent", chain["latents"]["reference"], fx.stage[4]["fusion_latent"], tol.network)
    check("chain: fusion latent (prior direct mode)", chain["latents"]["direct"], fx.stage[4]["fusion_latent"], tol.network)
    check("chain: IP tokens cond", chain["tokens"], fx.stage[5]["ipproj_cond_out"], tol.network)

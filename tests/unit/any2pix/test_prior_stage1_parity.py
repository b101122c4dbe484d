"""Stage 1 (the refinement prior) against the fixture: CLIP text of "", the score embedding, the GPT-2
sequence (missing-comma key list), GPT-2 states, x0, eps, guided eps and y; the DDPM step against diffusers."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix import load_prior, refine
from lmm_edit.loaders.any2pix.prior_refine import conditioning


@pytest.fixture(scope="module")
def text_states(prior_bundle):
    return prior_bundle.prior.text_states(torch.tensor([prior_bundle.empty_text_ids]))


@pytest.fixture(scope="module")
def reference_run(fx, prior_bundle, text_states):
    s1 = fx.stage[1]
    return refine(prior_bundle.prior, s1["prior_src"], text_states, noisy_input=fx.inputs["prior_noisy_input"],
                  scheduler_config=fx.scheduler_config)


def test_empty_text_ids_from_the_tokenizer_files_and_from_the_clip_convention(fx, prior_bundle):
    expected = fx.inputs["prior_clip_input_ids"]
    assert [prior_bundle.empty_text_ids] * expected.shape[0] == expected.tolist()
    bare = load_prior(fx.prior_files[0], fx.gpt2_config, fx.clip_dir / "config.json")  # no tokenizer folder
    assert bare.empty_text_ids == prior_bundle.empty_text_ids


def test_clip_text_states_of_the_empty_prompt(fx, text_states, check, tol):
    ref = fx.stage[1]["prior_crossattn_clip_hidden"]
    check("CLIP text states of ''", text_states.expand(ref.shape[0], -1, -1), ref, tol.network, tol.network)


def test_score_embedding_and_unconditional_constant(fx, text_states, check, tol):
    s1 = fx.stage[1]
    cond = conditioning(s1["prior_src"], text_states, 6.5, 2.0)
    check("score embedding (6.5 / constant 2.0)", cond["score"], s1["prior_score_embed"], tol.formula, tol.formula)
    check("imagebind input [src, 0]", cond["imagebind"], s1["prior_imagebind_in"], 0.0)
    assert torch.equal(cond["src_type"], s1["prior_src_type"])


def test_gpt2_sequence_and_states(fx, prior_bundle, reference_run, check, tol):
    s1 = fx.stage[1]
    check("GPT-2 inputs_embeds", reference_run.inputs_embeds, s1["prior_gpt2_inputs_embeds"], tol.formula, tol.formula)
    with torch.no_grad():
        states = prior_bundle.prior.model(s1["prior_gpt2_inputs_embeds"])
    check("GPT-2 last_hidden_state", states, s1["prior_gpt2_last_hidden_state"], tol.network, tol.network)
    check("x0 (last position)", reference_run.x0, s1["prior_model_output_x0"], tol.network, tol.network)


def test_eps_guidance_and_single_step_output(fx, reference_run, check, tol):
    s1 = fx.stage[1]
    assert reference_run.timestep == int(s1["prior_step_t"])
    # eps = (noisy - sqrt(a_1) x0) / sqrt(1 - a_1) amplifies x0's rounding by ~24 and the guidance by 10 more:
    # relative tolerances on these two intermediates
    check("eps (cond, uncond)", reference_run.eps, s1["prior_eps_both"], 0.0, tol.formula)
    check("guided eps (x10)", reference_run.eps_guided, s1["prior_step_eps_guided"], 0.0, tol.formula)
    check("prior y (DDPM step)", reference_run.y, s1["prior_step_out"], tol.network)
    check("prior y", reference_run.y, s1["prior_y"], tol.network)


def test_direct_mode_gives_the_same_y_without_rng(fx, prior_bundle, text_states, check, tol):
    s1 = fx.stage[1]
    state = torch.random.get_rng_state()
    direct = refine(prior_bundle.prior, s1["prior_src"], text_states, mode="direct", scheduler_config=fx.scheduler_config)
    assert torch.equal(torch.random.get_rng_state(), state)
    check("prior y (direct mode)", direct.y, s1["prior_y"], tol.network)


def test_ddpm_step_and_rng_draws_equal_diffusers_ddpm_scheduler(fx, prior_bundle, text_states, check):
    """Reference: diffusers' DDPMScheduler from the fixture's SDXL scheduler config, set_timesteps(1), stepping the
    guided eps from the same int64 noisy input with a generator in the same state (its variance noise draw)."""
    from diffusers import DDPMScheduler

    s1 = fx.stage[1]
    scheduler = DDPMScheduler.from_config(fx.scheduler_config)
    scheduler.set_timesteps(1)
    ours_rng = torch.Generator().manual_seed(5)
    run = refine(prior_bundle.prior, s1["prior_src"], text_states, generator=ours_rng, scheduler_config=fx.scheduler_config)
    their_rng = torch.Generator().manual_seed(5)
    noisy = torch.randn((1, 1, run.x0.shape[-1]), generator=their_rng).to(torch.long)  # generate_diffusion's draw
    assert torch.equal(run.noisy_input, noisy)
    expected = scheduler.step(run.eps_guided, int(scheduler.timesteps[0]), noisy, generator=their_rng).prev_sample
    check("DDPM step vs diffusers", run.y, expected, 0.0)


def test_gpt2_heads_default_to_gpt2_medium_without_a_config(fx):
    bare = load_prior(fx.prior_files[0])
    assert bare.prior.config.gpt2.heads == 16
    configured = load_prior(fx.prior_files[0], fx.gpt2_config, fx.clip_dir / "config.json")
    import json

    assert configured.prior.config.gpt2.heads == json.loads(fx.gpt2_config.read_text())["n_head"]


def test_safetensors_and_bin_files_load_the_same_prior(fx, prior_bundle):
    other = load_prior(fx.prior_files[1], fx.gpt2_config, fx.clip_dir / "config.json", fx.clip_dir)
    ours, theirs = prior_bundle.prior.state_dict(), other.prior.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

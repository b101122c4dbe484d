"""Stage 2 (the LLM) against the fixture: projector, `<video>` injection, prompt states of every layer, the
teacher-forced per-step states and logits, the output and base embeddings, the base argmax, the caption."""

from __future__ import annotations

import torch


def test_prompt_token_ids_equal_the_reference_tokenizer_call(fx, llm):
    _, tokenizer = llm
    from lmm_edit.loaders.any2pix import vicuna_v1_prompt

    assert tokenizer.encode(vicuna_v1_prompt(fx.instruction(tokenizer))) == fx.prompt_ids


def test_added_token_ids_come_from_the_tokenizer_files(fx, llm):
    _, tokenizer = llm
    recorded = fx.run_info["added_token_ids"]
    assert tokenizer.ids.video == recorded["<video>"] and tokenizer.ids.im_gen == recorded["<im_gen>"]
    assert tokenizer.ids.base == recorded["<base>"] and tokenizer.ids.base_null == recorded["<base_null>"]
    assert tokenizer.added["<im_gen_start>"] == recorded["<im_gen_start>"]


def test_projector_output(fx, llm, check, tol):
    model, _ = llm
    s2 = fx.stage[2]
    with torch.no_grad():
        check("vae_projector_image(aux)", model.vae_projector_image(s2["llm_projector_in"]), s2["llm_projector_out"], tol.formula, tol.formula)


def test_projection_is_added_to_the_video_token_embedding(fx, llm, check, tol):
    model, tokenizer = llm
    ids = torch.tensor([fx.prompt_ids])
    with torch.no_grad():
        embeds = model.prompt_embeddings(ids, fx.aux, tokenizer.ids.video)
        plain = model.llm.embed_tokens(ids)
    check("inputs_embeds step 0", embeds, fx.stage[2]["llm_inputs_embeds_step0"], tol.formula, tol.formula)
    slots = (ids[0] == tokenizer.ids.video).nonzero()[:, 0]
    assert not torch.equal(embeds[0, slots], plain[0, slots])  # the slot is not the bare token embedding ...
    others = torch.ones(ids.shape[1], dtype=torch.bool)
    others[slots] = False
    assert torch.equal(embeds[0, others], plain[0, others])  # ... and nothing else moved


def test_prompt_hidden_states_of_every_layer(fx, llm, check, tol):
    model, tokenizer = llm
    ids = torch.tensor([fx.prompt_ids])
    states = model.hidden_states(model.prompt_embeddings(ids, fx.aux, tokenizer.ids.video))
    check("prompt hidden states (all layers)", torch.cat(states), fx.stage[2]["llm_hidden_states_step0_all_layers"], tol.network, tol.network)


def test_teacher_forced_states_and_logits_per_step(fx, forced_run, check, tol):
    s2 = fx.stage[2]
    assert forced_run.decoded.answer_ids == fx.forced_ids
    assert fx.prompt_ids + forced_run.decoded.answer_ids == s2["llm_sequences"][0].tolist()
    check("last-layer state per step (KV cache)", forced_run.decoded.last_hidden, s2["llm_last_layer_hidden_last_pos_per_step"], tol.network, tol.network)
    check("raw logits per step", forced_run.decoded.logits, s2["llm_raw_logits_per_step"], tol.network, tol.network)


def test_output_embedding_uses_the_state_predicting_the_video_after_im_gen(fx, forced_run, check, tol):
    s2 = fx.stage[2]
    gen_state = forced_run.decoded.last_hidden[forced_run.steps.gen][None, None]
    check("predictor input (gen)", gen_state, s2["llm_predictor_call0_in"], tol.network, tol.network)
    check("image_embeds", forced_run.image_embeds, s2["llm_image_embeds"], tol.network, tol.network)


def test_base_embedding_and_argmax(fx, forced_run, check, tol):
    s2 = fx.stage[2]
    base_state = forced_run.decoded.last_hidden[forced_run.steps.base][None, None]
    check("predictor input (base)", base_state, s2["llm_predictor_call1_in"], tol.network, tol.network)
    check("base_embed", forced_run.base.embed, s2["llm_base_embed"], tol.network, tol.network)
    expected = fx.input_kinds().index("image")  # run_info base_img_path names the image input
    assert fx.run_info["base_img_path"].endswith(".png")
    assert forced_run.base.index == expected == forced_run.base.reference_index


def test_decoded_text_and_caption(fx, forced_run):
    assert forced_run.text == fx.run_info["decoded"]
    assert forced_run.caption == fx.run_info["output_caption"]

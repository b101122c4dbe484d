"""The LLaMA tokenizer against the ids the reference's transformers 4.28 slow tokenizer produced (fixture),
and the 4.28 rules for added tokens (PreTrainedTokenizer.tokenize: split on added tokens, strip the
whitespace next to them, SentencePiece-encode each chunk on its own, BOS first)."""

from __future__ import annotations

import sentencepiece as spm

from lmm_edit.loaders.smartedit.tokenizer import ADDED_TOKENS, LlamaSlowTokenizer


def test_conversation_ids_equal_the_reference_tokenizer(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    ids = tok.encode(fixture.conversation["conversation"])
    assert ids == fixture.conversation["input_ids"]
    assert tok.pieces(ids) == fixture.conversation["input_tokens"]


def test_added_token_ids_and_vocabulary_size_equal_the_reference(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    assert {t: tok.token_id(t) for t in ADDED_TOKENS} == fixture.conversation["added_tokens"]
    assert len(tok) == fixture.conversation["len_tokenizer"]
    assert tok.base_vocab == fixture.conversation["base_vocab_size"]
    assert tok.token_id("<img_0>") == fixture.conversation["img_start_token_id"]
    assert tok.eos_id == fixture.conversation["eos_token_id"]


def test_whitespace_next_to_an_added_token_is_dropped(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    assert tok.encode("ab <img_0> cd") == tok.encode("ab<img_0>cd")
    assert tok.encode("ab   <im_end>\tcd") == tok.encode("ab<im_end>cd")


def test_each_text_chunk_is_encoded_on_its_own_with_the_dummy_prefix(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    sp = spm.SentencePieceProcessor(model_file=str(fixture.tokenizer))
    ids = tok.encode("first part<img>. second part")
    img = tok.token_id("<img>")
    at = ids.index(img)
    assert ids[0] == sp.bos_id()
    assert ids[1:at] == sp.encode("first part")
    assert ids[at + 1 :] == sp.encode(". second part")


def test_longest_added_token_wins(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    assert tok.encode("<img_10><img_1><img>", add_bos=False) == [tok.token_id(t) for t in ("<img_10>", "<img_1>", "<img>")]


def test_decode_drops_added_tokens_and_keeps_text(fixture):
    tok = LlamaSlowTokenizer(fixture.tokenizer)
    sp = spm.SentencePieceProcessor(model_file=str(fixture.tokenizer))
    ids = tok.encode("Sure, here it is <img_0> <img_1>") + [tok.eos_id]
    assert tok.decode(ids) == sp.decode(sp.encode("Sure, here it is"))

"""The LLaMA tokenizer exactly as SmartEdit's reference uses it: transformers 4.28's slow `LlamaTokenizer`.

Written on `sentencepiece` directly, because newer transformers releases tokenise text around added
tokens differently (`legacy=False`, fast tokenizers). The 4.28 rules (PreTrainedTokenizer.tokenize):
- the text is split on added tokens and on the special tokens <s>, </s>, <unk> (leftmost, longest match);
- whitespace next to an added token (added as plain strings by `add_tokens`) is stripped on both sides;
  the special tokens are AddedToken(lstrip=False, rstrip=False) and strip nothing;
- each remaining text chunk is SentencePiece-encoded on its own (with its dummy-prefix "▁");
- BOS (id 1) is prepended, no EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelFileError
from ..weight_files import open_sentencepiece

# SmartEdit setup_tokens_for_conversation: "<img>", then "<im_start>", "<im_end>", then "<img_0>".."<img_31>",
# appended after the base vocabulary in this order (base + 35 = 32035 for LLaMA's 32000).
IMAGE_TOKEN_COUNT = 32
ADDED_TOKENS = ("<img>", "<im_start>", "<im_end>", *(f"<img_{i}>" for i in range(IMAGE_TOKEN_COUNT)))
LLAVA_EXTRA_ROWS = 3  # LLaVA-1.1 adds <im_patch>, <im_start>, <im_end> after the base vocabulary


class LlamaSlowTokenizer:
    """SentencePiece LLaMA tokenizer with SmartEdit's 35 added tokens."""

    def __init__(self, model_file: str | Path, added_tokens: Sequence[str] = ADDED_TOKENS) -> None:
        model_file = Path(model_file)
        if not model_file.is_file():
            raise ModelFileError(
                model_file, "the LLaMA SentencePiece model tokenizer.model", "no such file",
                "copy tokenizer.model of Vicuna-1.1 / LLaVA-1.1 (the LLaMA-1 tokenizer) into the LLaVA folder",
            )
        self.model_file = model_file
        self.sp = open_sentencepiece(
            model_file, "copy tokenizer.model of Vicuna-1.1 / LLaVA-1.1 (the LLaMA-1 tokenizer) again into the LLaVA folder",
        )
        self.base_vocab = self.sp.get_piece_size()
        self.added = {tok: self.base_vocab + i for i, tok in enumerate(added_tokens)}
        self.added_by_id = {i: t for t, i in self.added.items()}
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.unk_id = self.sp.unk_id()
        # special tokens also split the text, but strip no whitespace
        self.special = {self.sp.id_to_piece(i): i for i in (self.bos_id, self.eos_id, self.unk_id) if i >= 0}

    def __len__(self) -> int:
        return self.base_vocab + len(self.added)

    def token_id(self, token: str) -> int:
        return self.added[token]

    def _split(self, text: str) -> list[tuple[str, bool]]:
        """(chunk, is_token) pieces; leftmost-longest match over added and special tokens."""
        names = sorted({*self.added, *self.special}, key=len, reverse=True)
        pieces: list[tuple[str, bool]] = []
        start = i = 0
        while i < len(text):
            match = next((n for n in names if text.startswith(n, i)), None)
            if match is None:
                i += 1
                continue
            if i > start:
                pieces.append((text[start:i], False))
            pieces.append((match, True))
            i += len(match)
            start = i
        if start < len(text):
            pieces.append((text[start:], False))
        return pieces

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        pieces = self._split(text)
        chunks = [p for p, _ in pieces]
        for k, (piece, is_token) in enumerate(pieces):
            if is_token and piece in self.added:
                if k + 1 < len(pieces) and not pieces[k + 1][1]:
                    chunks[k + 1] = chunks[k + 1].lstrip()
                if k > 0 and not pieces[k - 1][1]:
                    chunks[k - 1] = chunks[k - 1].rstrip()
        ids = [self.bos_id] if add_bos else []
        for (piece, is_token), chunk in zip(pieces, chunks):
            if is_token:
                ids.append(self.added.get(piece, self.special.get(piece)))
            elif chunk:
                ids.extend(self.sp.encode(chunk))
        return ids

    def decode(self, ids: Sequence[int], skip_added: bool = True) -> str:
        """Text of `ids`: base-vocabulary runs through SentencePiece, added tokens by name (or skipped)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self.added_by_id or i in (self.bos_id, self.eos_id):
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if i in self.added_by_id and not skip_added:
                    out.append(self.added_by_id[i])
            else:
                run.append(int(i))
        if run:
            out.append(self.sp.decode(run))
        return " ".join(s for s in out if s).strip()

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.added_by_id.get(i) or self.sp.id_to_piece(int(i)) for i in ids]

"""The InstructAny2Pix LLM tokenizer, as the reference loads it: transformers 4.34.1 `AutoTokenizer` of
`llm-retrained/tokenizer/` (jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/pipeline.py`, `build_lm`).

With `tokenizer.json` present that is `LlamaTokenizerFast`, i.e. the `tokenizers` pipeline stored in the file
(LLaMA "legacy" conventions, `tokenizer_config.json` `legacy: true`):
- the text is split on the added tokens (the nine `<im_gen_start>`..`<base_null>` and `<unk>`, `<s>`, `</s>`;
  all `lstrip=rstrip=False`, so no whitespace next to them is removed);
- each remaining chunk is normalised on its own: "▁" prepended, spaces replaced by "▁", then BPE with byte
  fallback; the post-processor prepends `<s>`;
- decoding joins the token strings, maps "▁" to " ", fuses byte-fallback pieces and strips ONE leading space
  of the whole text. That is why the reference's decoded text reads `<video>  with` (two spaces) and
  `<im_gen> [caption]`: the chunk after an added token starts with its own "▁" (fixture README quirk 9).

Without `tokenizer.json` the same rules are applied on the SentencePiece model `tokenizer.model` (what 4.34's
`LlamaConverter` would build from it), with the added-token ids read from `added_tokens.json` /
`tokenizer_config.json`. Added-token ids are always read from the files, never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError
from ..weight_files import check_file, open_sentencepiece, read_json

# jacklishufan/InstructAny2Pix instructany2pix/llm/constants.py, added in this order by
# InstructAny2PixLMMetaForCausalLM.initialize_vision_tokenizer (any2pix_arch.py)
IM_GEN_START = "<im_gen_start>"
IM_GEN = "<im_gen>"
MASK_GEN = "<mask_gen>"
AUDIO_GEN = "<audio_gen>"
AUDIO_GEN_START = "<audio_gen_start>"
AUDIO = "<audio>"
VIDEO = "<video>"
BASE = "<base>"
BASE_NULL = "<base_null>"
ADDED_TOKENS = (IM_GEN_START, IM_GEN, MASK_GEN, AUDIO_GEN, AUDIO_GEN_START, AUDIO, VIDEO, BASE, BASE_NULL)

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")
SPIECE_SPACE = "\u2581"  # SentencePiece's "▁"


def reserved_tokens(tokenizer: Any2PixTokenizer | None = None, keep: Sequence[str] = ()) -> list[str]:
    """The LLM's added tokens (`<video>`, `<im_gen>` ..., `<s>`, `</s>`, `<unk>`), which text must not hold; with no
    tokenizer the nine InstructAny2Pix tokens and LLaMA's specials. `keep`: tokens allowed (the markers' `<video>`)."""
    tokens = set(tokenizer.added) if tokenizer is not None else {*ADDED_TOKENS, *LLAMA_SPECIALS}
    return sorted(tokens - set(keep))


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the pipeline looks for, read from the tokenizer files."""

    bos: int
    eos: int
    video: int
    im_gen: int
    base: int
    base_null: int


def _read_json(path: Path) -> dict:
    return read_json(path, fix="restore the file from the release")


def _bytes_text(data: bytearray) -> str:
    """tokenizers' ByteFallback decoder: a run of byte pieces as UTF-8, or one U+FFFD per byte if invalid."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(data)


class Any2PixTokenizer:
    """Encode/decode as the reference's tokenizer; `ids` holds the special-token ids from the files."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.folder = folder
        fast_file, sp_file = folder / "tokenizer.json", folder / "tokenizer.model"
        if fast_file.is_file():
            self._init_fast(fast_file)
        elif sp_file.is_file():
            self._init_sentencepiece(sp_file)
        else:
            raise ModelFileError(
                folder, "the LLM tokenizer: tokenizer.json (LlamaTokenizerFast) or tokenizer.model (SentencePiece)",
                "neither file", "copy the `tokenizer/` folder of the InstructAny2Pix LLM release (llm-retrained/tokenizer)",
            )
        missing = [t for t in ADDED_TOKENS if t not in self.added]
        if missing:
            raise ModelFileError(
                folder, f"the nine InstructAny2Pix tokens {', '.join(ADDED_TOKENS)} among the added tokens",
                f"{len(self.added)} added tokens, without {', '.join(missing)}",
                "use the tokenizer saved with the InstructAny2Pix LLM (llm-retrained/tokenizer), not the base Vicuna one",
            )
        self.ids = SpecialIds(
            bos=self.added["<s>"], eos=self.added["</s>"], video=self.added[VIDEO], im_gen=self.added[IM_GEN],
            base=self.added[BASE], base_null=self.added[BASE_NULL],
        )

    # -- construction ---------------------------------------------------------------------------------------------
    def _init_fast(self, path: Path) -> None:
        from tokenizers import Tokenizer  # transformers' own dependency

        try:
            self._fast = Tokenizer.from_file(str(check_file(path, "a tokenizers file (tokenizer.json)")))
        except Exception as err:  # tokenizers raises its own Exception type for unparsable files
            raise ModelFileError(path, "a tokenizers file (tokenizer.json)", f"a file it cannot parse ({str(err)[:160]})",
                                 "restore tokenizer.json from the release's tokenizer/ folder") from err
        self._sp = None
        data = _read_json(path)
        self.added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        self.vocab_size = self._fast.get_vocab_size(with_added_tokens=True)

    def _init_sentencepiece(self, path: Path) -> None:
        self._fast = None
        self._sp = open_sentencepiece(path, "restore tokenizer.model from the release's tokenizer/ folder")
        sp = self._sp
        self.added = {sp.id_to_piece(i): i for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()) if i >= 0}
        added_file, config_file = path.parent / "added_tokens.json", path.parent / "tokenizer_config.json"
        if added_file.is_file():
            self.added.update({k: int(v) for k, v in _read_json(added_file).items()})
        if config_file.is_file():
            decoder = _read_json(config_file).get("added_tokens_decoder", {})
            self.added.update({v["content"]: int(k) for k, v in decoder.items()})
        self.vocab_size = max(sp.get_piece_size(), 1 + max(self.added.values()))

    # -- encoding -------------------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text` as `tokenizer(text).input_ids` in transformers 4.34.1 (BOS first when add_bos)."""
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=add_bos).ids)
        ids = [self.ids.bos] if add_bos else []
        for chunk, is_token in self._split(text):
            ids.extend([self.added[chunk]] if is_token else self._sp.encode(chunk))
        return ids

    def _split(self, text: str) -> list[tuple[str, bool]]:
        """(chunk, is_added_token) pieces; leftmost, longest match over the added tokens; whitespace kept."""
        names = sorted(self.added, key=len, reverse=True)
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

    # -- decoding -------------------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """`tokenizer.batch_decode([ids])[0]` of 4.34.1 (special tokens kept, no clean-up of spaces)."""
        ids = [int(i) for i in ids]
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=False)
        by_id = {v: k for k, v in self.added.items()}
        parts: list[str] = []
        pending: bytearray = bytearray()
        for i in ids:
            piece = by_id.get(i) or self._sp.id_to_piece(i)
            if i not in by_id and self._sp.is_byte(i):
                pending.append(int(piece[3:-1], 16))  # "<0xNN>"
                continue
            if pending:
                parts.append(_bytes_text(pending))
                pending = bytearray()
            parts.append(piece if i in by_id else piece.replace(SPIECE_SPACE, " "))
        if pending:
            parts.append(_bytes_text(pending))
        text = "".join(parts)
        return text[1:] if text.startswith(" ") else text  # the decoder's Strip(" ", 1, 0)

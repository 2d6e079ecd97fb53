"""Token -> bytes tables: how token strings of different tokenizers are compared.

Fusion across tokenizers compares tokens by the BYTES they stand for, never by their surface
strings: a GPT-2 style byte-BPE token (SmolLM2, Qwen2.5) spells bytes in the ``bytes_to_unicode``
alphabet (``"Ġthe"`` is ``b" the"``); a SentencePiece token (Gemma 3) marks a word start with
``"▁"`` and spells raw bytes it has no piece for as ``"<0x0A>"``. Special tokens (``<|im_end|>``,
``<eos>``, ...) stand for no text: they get ``None``, and the end-of-turn / end-of-text ones are
collected in :attr:`TokenTable.stop_ids` so every model's "stop" unifies into one :data:`STOP`.

The table is built once per tokenizer (one pass over its vocabulary at load time); per decoding
step only dictionary and tensor lookups happen.

Example::

    >>> from workers.fusion.vocab import byte_level_decoder
    >>> byte_level_decoder()["Ġ"]
    32
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from orchestrator.errors import ConfigError

STOP = b"\x00<stop>"
"""The shared key of every model's end-of-turn token(s) in candidate sets."""

_HEX_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_STOP_NAMES = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "</s>", "<|eot_id|>", "<|end_of_text|>")


@lru_cache(maxsize=1)
def byte_level_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode alphabet for bytes, inverted: character -> byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


@dataclass
class TokenTable:
    """Bytes of every token id of one tokenizer, and the reverse lookup.

    ``token_bytes[i]`` is ``None`` for special tokens; ``lookup`` maps bytes to the lowest id that
    spells them; ``stop_ids`` are the ids that end a turn; ``size`` is the tokenizer's vocabulary
    (a model's logits may be wider: the tail is masked).
    """

    kind: str
    token_bytes: list[bytes | None]
    lookup: dict[bytes, int]
    stop_ids: list[int]
    special_ids: set[int] = field(default_factory=set)
    same_bytes: dict[bytes, list[int]] = field(default_factory=dict)
    """Bytes spelled by SEVERAL ids (Gemma: a piece and its ``<0xNN>`` byte token): all of them."""

    @property
    def size(self) -> int:
        return len(self.token_bytes)

    def key(self, token_id: int) -> bytes | None:
        """The candidate key of ``token_id``: its bytes, :data:`STOP` for a stop token, else None."""
        if token_id in self._stop_set:
            return STOP
        return self.token_bytes[token_id] if token_id < len(self.token_bytes) else None

    def text_bytes(self, ids: list[int]) -> bytes:
        """The bytes a sequence of non-special ids spells (special ids contribute nothing)."""
        return b"".join(self.token_bytes[i] or b"" for i in ids)

    def __post_init__(self) -> None:
        self._stop_set = set(self.stop_ids)
        self.banned_ids = sorted(self.special_ids - self._stop_set)
        """Special tokens that are never generated (they spell no text and end nothing)."""
        self.signature = hash((self.kind, tuple(self.token_bytes)))
        """Equal for equal vocabularies: such models follow each other's token ids directly."""


def build_table(tokenizer: Any) -> TokenTable:
    """The :class:`TokenTable` of a Hugging Face (fast) tokenizer, byte-BPE or SentencePiece."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    kind = _kind(vocab)
    special = _special_ids(tokenizer)
    decoder = byte_level_decoder()
    token_bytes: list[bytes | None] = [None] * size
    lookup: dict[bytes, int] = {}
    same: dict[bytes, list[int]] = {}
    for piece, idx in vocab.items():
        if idx in special:
            continue
        raw = _piece_bytes(piece, kind, decoder)
        token_bytes[idx] = raw
        if raw is None:
            continue
        if raw in lookup:
            same.setdefault(raw, [lookup[raw]]).append(idx)
        if raw not in lookup or idx < lookup[raw]:
            lookup[raw] = idx
    stop_ids = sorted({i for i in special if _is_stop(tokenizer, i)} | _eos_ids(tokenizer))
    return TokenTable(kind=kind, token_bytes=token_bytes, lookup=lookup, stop_ids=stop_ids, special_ids=special,
                      same_bytes=same)


def _kind(vocab: dict[str, int]) -> str:
    """Byte-BPE or SentencePiece, by which word-start sign most tokens carry."""
    gpt2 = sum(1 for piece in vocab if piece.startswith("Ġ"))
    spm = sum(1 for piece in vocab if piece.startswith("▁"))
    if max(gpt2, spm) > len(vocab) // 20:
        return "byte-bpe" if gpt2 > spm else "sentencepiece"
    raise ConfigError("latent fusion: tokenizer is neither GPT-2 byte-BPE nor SentencePiece",
                      hint="use a model whose tokenizer spells word starts with 'Ġ' or '▁'")


def _piece_bytes(piece: str, kind: str, decoder: dict[str, int]) -> bytes | None:
    if kind == "byte-bpe":
        try:
            return bytes(decoder[c] for c in piece)
        except KeyError:  # an added token outside the byte alphabet that is not marked special
            return piece.encode("utf-8")
    m = _HEX_BYTE.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return piece.replace("▁", " ").encode("utf-8")


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return ids


def _eos_ids(tokenizer: Any) -> set[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def _is_stop(tokenizer: Any, idx: int) -> bool:
    return tokenizer.convert_ids_to_tokens(idx) in _STOP_NAMES

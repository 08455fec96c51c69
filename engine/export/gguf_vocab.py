"""The tokenizer as GGUF metadata (``tokenizer.ggml.*``): what llama.cpp needs to tokenize exactly as the model was
trained.

Covered: byte-level BPE tokenizers (``tokenizer.ggml.model = gpt2``: GPT-2, SmolLM, Llama 3, Qwen2 and their kin).
Read from the tokenizer's own ``tokenizer.json`` (through the fast tokenizer):

- ``tokens``: every id the model's embedding has, in id order; ids the tokenizer does not use get a ``[PAD<id>]``
  placeholder of type UNUSED (a padded embedding, as Qwen2 has);
- ``token_type``: NORMAL for the BPE vocabulary, CONTROL for special added tokens, USER_DEFINED for other added
  tokens (llama.cpp matches both kinds whole in the text);
- ``merges``: ``"left right"`` strings in rank order;
- ``pre``: the name llama.cpp gives the way text is split before BPE. It is found from the tokenizer's
  pre-tokenizer: GPT-2's built-in split is ``gpt-2``, digits split one by one before it ``smollm``, and an explicit
  split pattern is named by the table transformers keeps for reading GGUF files back (so the name we write is one
  both llama.cpp and transformers read as that same pattern). Anything else is refused: llama.cpp would split text
  differently than the model was trained with, and the export would answer worse without saying why;
- special token ids, whether a BOS/EOS is added to plain text, and the chat template.

Written by hand because no library converts a Hugging Face tokenizer to GGUF metadata (llama.cpp's converter is a
script, not a library).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..model_errors import ModelError

# Token types of the GGUF format (gguf.TokenType).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
# When several llama.cpp names stand for one split pattern, the one llama.cpp has known longest.
_PREFERRED_PRE = ("llama-bpe", "qwen2", "tekken", "gpt-4o")


@dataclass
class GgufVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str


def _pre_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's name for a byte-level pre-tokenizer, or a ModelError describing the one it does not know."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    parts = (pre_tokenizer or {}).get("pretokenizers") if (pre_tokenizer or {}).get("type") == "Sequence" else [pre_tokenizer]
    parts = [p for p in parts or [] if p]
    kinds = [p.get("type") for p in parts]
    byte_level = parts[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level.get("use_regex", True):
            return "smollm"
        if (kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True)
                and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert")):
            pattern = (parts[0].get("pattern") or {}).get("Regex")
            names = [name for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex == pattern]
            if names:
                return next((n for n in _PREFERRED_PRE if n in names), names[0])
    raise ModelError(
        f"GGUF export: the tokenizer splits text with a pre-tokenizer llama.cpp has no name for ({json.dumps(pre_tokenizer)[:200]}), "
        "so llama.cpp would tokenize differently than the model was trained; known: GPT-2's split, SmolLM's, and the "
        "split patterns of Llama 3 and Qwen2"
    )


def _adds(tokenizer: Any, token_id: int | None, where: int) -> bool:
    if token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[where] == token_id


def gguf_vocab(tokenizer: Any, vocab_size: int) -> GgufVocab:
    """The GGUF tokenizer metadata of a fast Hugging Face tokenizer, for a model with ``vocab_size`` embedding rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError("GGUF export needs a fast (tokenizers) tokenizer; this model has a slow one only")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    decoder = spec.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise ModelError(
            "GGUF export covers byte-level BPE tokenizers (GPT-2 style: Llama 3, Qwen2, SmolLM); this model's tokenizer "
            f"is {model.get('type')} with a {decoder.get('type')} decoder"
            + (" and byte fallback (SentencePiece style)" if model.get("byte_fallback") else "")
        )
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        # NFC (Qwen2) leaves ordinary text as it is, and llama.cpp does not apply it either; others change text.
        raise ModelError(f"GGUF export: the tokenizer normalises text ({normalizer.get('type')}), which llama.cpp "
                         "would not do")
    pre = _pre_name(spec.get("pre_tokenizer"))
    if model.get("ignore_merges") and pre != "llama-bpe":
        raise ModelError("GGUF export: the tokenizer takes whole words from its vocabulary before merging "
                         "(ignore_merges), which llama.cpp does only for Llama 3's split")

    tokens: list[str | None] = [None] * vocab_size
    types = [UNUSED] * vocab_size
    for token, i in (model.get("vocab") or {}).items():
        if i >= vocab_size:
            raise ModelError(f"the tokenizer has token id {i} but the model's embedding has only {vocab_size} rows")
        tokens[i], types[i] = token, NORMAL
    for added in spec.get("added_tokens") or []:
        i = int(added["id"])
        if i >= vocab_size:
            raise ModelError(f"the tokenizer has token id {i} but the model's embedding has only {vocab_size} rows")
        tokens[i], types[i] = added["content"], CONTROL if added.get("special") else USER_DEFINED
    names = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return GgufVocab(
        tokens=names, token_types=types, merges=merges, pre=pre,
        bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, unk_id=tokenizer.unk_token_id,
        pad_id=tokenizer.pad_token_id,
        add_bos=_adds(tokenizer, tokenizer.bos_token_id, 0), add_eos=_adds(tokenizer, tokenizer.eos_token_id, -1),
        chat_template=tokenizer.chat_template or "",
    )


def add_vocab(writer: Any, vocab: GgufVocab) -> None:
    """Put the vocabulary on a ``gguf.GGUFWriter``."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for add, value in ((writer.add_bos_token_id, vocab.bos_id), (writer.add_eos_token_id, vocab.eos_id),
                       (writer.add_unk_token_id, vocab.unk_id), (writer.add_pad_token_id, vocab.pad_id)):
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)

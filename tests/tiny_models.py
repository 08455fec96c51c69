"""Tiny Llama- and Qwen2-architecture chat models built on the spot, for fast tests of the engine (no network, no
weights).

``build_tiny_causal_lm(folder)`` writes a complete model folder that ``engine.models.load_model`` (and plain
``AutoModelForCausalLM.from_pretrained``) loads: config, safetensors weights, a generation config and a real
``tokenizers`` tokenizer with a ChatML chat template, like the bundled SmolLM2's:

- special tokens ``<|endoftext|>`` (id 0, pad and unk), ``<|im_start|>`` (id 1, bos) and ``<|im_end|>`` (id 2, eos);
  unlike SmolLM2 the pad token differs from eos here, so code that confuses the two shows it in tests;
- by default a byte-level vocabulary of the 256 byte symbols plus a fixed list of merges (so any text round-trips
  and any generated id decodes); ``vocab_from_bundled=True`` copies the bundled SmolLM2 tokenizer instead
  (needs ``python -m engine.bundled`` to have run, which the set-up script does);
- hidden size 64, 2 layers, 4 attention heads (2 key/value heads), tied embeddings; weights from a fixed seed, so
  two builds give identical files.

``arch="qwen2"`` builds a Qwen2 instead (biases on q/k/v, Qwen2's pre-tokenizer split before the byte-level step,
and an embedding a few rows larger than the vocabulary, as Qwen2 pads its own); ``chat_template=None`` leaves the
tokenizer without a chat template (a base model that needs one named).

The other families (:data:`FAMILIES`) are built from their own configs with what makes each of them compute
differently from Llama, made small enough to show in sequences of a few dozen tokens: ``qwen3`` (query/key norms, a
sliding window of 8 on its second layer), ``gemma2`` (attention soft-cap 5 and final logit soft-cap 2, a sliding
window of 8 on alternate layers, scaled embeddings, GeLU, four norms per layer), ``gemma3`` (Gemma 3's text model:
query/key norms, local and global rotary bases, a sliding window of 8), ``mistral`` (a sliding window of 8 on every
layer) and ``phi3`` (fused q/k/v and gate/up projections, untied output layer, a sliding window of 16). Their weights
are drawn with a larger spread (``initializer_range`` 0.1) than the default, so the soft-caps bend real scores and a
dropped window or cap changes the numbers well beyond float rounding.

The folder is written once: calling again on a folder that already holds a complete build returns it at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A few frequent English pieces, so typical test texts take fewer tokens than bytes; fixed, not trained, so the
# vocabulary never depends on a trainer's tie-breaking.
_MERGE_WORDS = (
    " the", " and", " to", " of", " is", " you", " a", " in", " that", " it", "ing", "er", "re", "on",
    " What", " How", "user", "assistant", "system", "\u010a",
)
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
SEED = 1234
# Every architecture build_tiny_causal_lm makes (the family matrix of tests/engine/test_families.py).
FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3")
SHORT_WINDOW = 8


def _family_config(arch: str, **common):
    """(config, model class) of a tiny ``arch`` model; ``common`` holds the sizes and token ids."""
    import transformers as tf

    wide = dict(initializer_range=0.1)
    if arch == "llama":
        return tf.LlamaConfig(**common), tf.LlamaForCausalLM
    if arch == "qwen2":
        return tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    if arch == "qwen3":
        return tf.Qwen3Config(head_dim=16, use_sliding_window=True, sliding_window=SHORT_WINDOW, max_window_layers=1,
                              **wide, **common), tf.Qwen3ForCausalLM
    if arch == "gemma2":
        return tf.Gemma2Config(head_dim=16, query_pre_attn_scalar=16, sliding_window=SHORT_WINDOW,
                               attn_logit_softcapping=5.0, final_logit_softcapping=2.0, **wide,
                               **common), tf.Gemma2ForCausalLM
    if arch == "gemma3":
        return tf.Gemma3TextConfig(head_dim=16, query_pre_attn_scalar=16, sliding_window=SHORT_WINDOW,
                                   layer_types=["sliding_attention", "full_attention"], **wide,
                                   **common), tf.Gemma3ForCausalLM
    if arch == "mistral":
        return tf.MistralConfig(sliding_window=SHORT_WINDOW, **wide, **common), tf.MistralForCausalLM
    if arch == "phi3":
        common = {**common, "tie_word_embeddings": False}
        return tf.Phi3Config(sliding_window=2 * SHORT_WINDOW, original_max_position_embeddings=1024, **wide,
                             **common), tf.Phi3ForCausalLM
    raise ValueError(f"no tiny {arch!r} model ({', '.join(FAMILIES)})")


def _byte_level_tokenizer(*, qwen2_split: bool = False, chat_template: str | None = TINY_CHAT_TEMPLATE):
    """A byte-level BPE tokenizer (GPT-2 byte alphabet plus fixed merges) wrapped for transformers; with
    ``qwen2_split`` the text is first split by Qwen2's regular expression, as Qwen2's own tokenizer does."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _MERGE_WORDS:
        # Byte-level form of the word (spaces become 'Ġ'), merged left to right one symbol at a time.
        symbols = [c for c in "".join(pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(word)[0][0])]
        current = symbols[0]
        for nxt in symbols[1:]:
            merged = current + nxt
            if merged not in vocab:
                merges.append((current, nxt))
                vocab[merged] = len(vocab)
            current = merged
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    if qwen2_split:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )


def _bundled_tokenizer():
    from transformers import AutoTokenizer

    from engine.bundled import ensure_bundled_model

    tok = AutoTokenizer.from_pretrained(ensure_bundled_model())
    tok.model_max_length = TINY_CONFIG["max_position_embeddings"]
    return tok


def build_tiny_causal_lm(folder: Path, *, vocab_from_bundled: bool = False, arch: str = "llama",
                         chat_template: str | None = TINY_CHAT_TEMPLATE) -> Path:
    """Write a tiny chat model (safetensors + tokenizer + chat template) of architecture ``arch`` (one of
    :data:`FAMILIES`) into ``folder``; return ``folder``."""
    import torch
    from transformers import GenerationConfig

    folder = Path(folder)
    marker = folder / ".tiny-complete"
    if marker.exists():
        return folder
    if arch not in FAMILIES:
        raise ValueError(f"no tiny {arch!r} model ({', '.join(FAMILIES)})")
    folder.mkdir(parents=True, exist_ok=True)
    if vocab_from_bundled:
        tokenizer = _bundled_tokenizer()
        if chat_template != TINY_CHAT_TEMPLATE:
            tokenizer.chat_template = chat_template
    else:
        tokenizer = _byte_level_tokenizer(qwen2_split=arch in ("qwen2", "qwen3"), chat_template=chat_template)
    pad_id = tokenizer.pad_token_id
    # Qwen checkpoints pad their embedding past the vocabulary; 8 spare rows keep that case in the tests.
    vocab_size = len(tokenizer) + (8 if arch in ("qwen2", "qwen3") else 0)
    config, model_class = _family_config(arch, vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id, **TINY_CONFIG)
    # fork_rng: building a model must not disturb the random state of the test that asked for it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not any(folder.glob("*.safetensors")):
        raise RuntimeError(f"{folder}: save_pretrained wrote no safetensors file")
    marker.write_text(json.dumps({"vocab_from_bundled": vocab_from_bundled, "seed": SEED, "arch": arch,
                                  "chat_template": chat_template is not None}))
    return folder


def copy_model_folder(src: Path, dst: Path) -> Path:
    """A copy of a model folder (for tests that edit a model's files, e.g. its config)."""
    shutil.copytree(src, dst)
    return Path(dst)


def build_tiny_lora_adapter(model_dir: Path, out: Path, *, seed: int = 0) -> Path:
    """A LoRA adapter on a tiny model with non-zero B matrices, so the tuned model's answers differ from the base's
    (saved as peft saves it: ``adapter_config.json`` + ``adapter_model.safetensors``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    peft_model.save_pretrained(out)
    return out

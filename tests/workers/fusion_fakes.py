"""Fakes for the fusion unit tests: tiny tokenizers trained in-process and tiny random LMs.

``fake_byte_bpe()`` is a GPT-2 style byte-level BPE (word starts ``Ġ``) with a chat template;
``fake_sentencepiece()`` is a SentencePiece-style BPE (``▁`` word starts, ``<0xNN>`` byte
fallback) without one, like a base model. ``fake_lm(tokenizer)`` wraps a random 4-layer Llama
over that vocabulary in a :class:`~workers.fusion.lm.LocalLM`. Milliseconds to build, no files.
"""

from __future__ import annotations

import json
from functools import lru_cache

CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Water boils at 100 degrees Celsius at sea level.",
    "def add(a, b):\n    return a + b\n",
    "Question: What is 2 + 2?\nAnswer: 4",
    "naïve café résumé Zürich",
] * 20
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@lru_cache(maxsize=None)
def fake_byte_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = TEMPLATE
    return fast


@lru_cache(maxsize=None)
def fake_sentencepiece():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<eos>", "<bos>", *byte_tokens],
                                  initial_alphabet=["▁"])
    tok.train_from_iterator(CORPUS, trainer)
    spec = json.loads(tok.to_str())   # byte pieces are ordinary vocabulary entries, as in Gemma
    spec["added_tokens"] = [t for t in spec["added_tokens"] if not t["content"].startswith("<0x")]
    tok = Tokenizer.from_str(json.dumps(spec))
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def fake_lm(tokenizer, *, name: str = "fake", chat: bool = True, seed: int = 0, layers: int = 4, hidden: int = 32):
    """A random tiny Llama over ``tokenizer``'s vocabulary, as a LocalLM (float32, CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workers.fusion.lm import LocalLM

    torch.manual_seed(seed)
    vocab = max(tokenizer.get_vocab().values()) + 1
    cfg = LlamaConfig(vocab_size=vocab + 7, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.3)  # peaked distributions: greedy choices are not float-noise ties
    model = LlamaForCausalLM(cfg).eval()   # 7 extra logits: like Qwen's padded head, masked by LocalLM
    for p in model.parameters():
        p.requires_grad_(False)
    return LocalLM(name, chat, model, tokenizer, "cpu")

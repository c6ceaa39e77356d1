"""Tiny models and tokenizers built offline from a config, for tests and demos."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlhfkit.models.tokenizer import train_bpe_tokenizer

_CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "What is 12 plus 7? 12 plus 7 is 19.",
    "Say hello to Tavo. Hello, Tavo! Nice to meet you.",
    "apple banana cherry grape lemon mango melon peach pear plum fig kiwi lime",
    "cat dog cow pig hen fox owl bee ant rat bat elk yak goat lion wolf bear duck",
    "red blue green pink gray gold black white brown purple yellow cyan teal tan navy",
    "Count from 3 to 6. 3, 4, 5, 6. Sort these words: pear, cat, blue.",
    "0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ' \" ( ) - \n",
]


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a chat template and distinct pad/EOS tokens."""
    return train_bpe_tokenizer(_CORPUS * 4, vocab_size=vocab_size)


def tiny_llama_config(tokenizer, hidden: int = 32, layers: int = 2, heads: int = 2, **overrides) -> LlamaConfig:
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def tiny_llama(tokenizer, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **config_overrides))


def save_tiny_model(directory, seed: int = 0, **config_overrides) -> str:
    """Write a tiny causal LM and its tokenizer as a plain Hugging Face directory."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=seed, **config_overrides)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def full_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits [B,T,V] of one plain forward pass over every position (no cache, no
    logits_to_keep): the reference the tests hold the library's faster passes to."""
    from rlhfkit.models.forward import positions_from_mask

    return model(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=positions_from_mask(attention_mask), use_cache=False).logits

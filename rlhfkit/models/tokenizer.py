"""Tokenizer helpers: the default chat template, pad/EOS hygiene, and a small BPE
trainer used by the instruction world and by tests (no downloads needed)."""
from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Used when a tokenizer has no chat template of its own. Each assistant turn ends
# with the EOS token, so a model trained on it learns to stop (docs/ppo.md).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
DEFAULT_PAD_TOKEN = "<|pad|>"
CHAT_ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, *, chat_template: str | None = None) -> bool:
    """Make a tokenizer safe for RLHF, in place. Returns True when tokens were added
    (the caller must then resize the model's embeddings).

    - An EOS token is required: without it a policy cannot learn to stop.
    - The pad token must differ from EOS: padding with EOS masks the real EOS out
      of the loss and the model never learns to stop (docs/ppo.md).
    - A chat template is set when missing (DEFAULT_CHAT_TEMPLATE, or `chat_template`).
    """
    if tokenizer.eos_token is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no EOS token; set one "
            "(tokenizer.eos_token = ...) so the policy can learn to stop"
        )
    added = False
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        added = tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN}) > 0 or added
        tokenizer.pad_token = DEFAULT_PAD_TOKEN
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
        tokenizer.rlhfkit_default_template = True  # the checkpoint brought none: see chat_model()
    check_chat_template(tokenizer.chat_template,
                        "--chat_template" if chat_template is not None else f"of {tokenizer.name_or_path}")
    return added


def chat_model(tokenizer) -> bool:
    """Whether the model's own tokenizer carries a chat template (a chat or instruction
    model, or any model rlhfkit saved), rather than rlhfkit's default set by prepare_tokenizer."""
    return bool(getattr(tokenizer, "chat_template", None)) and not getattr(tokenizer, "rlhfkit_default_template", False)


STRING_PROMPTS = ("auto", "chat", "text")


def string_prompts_as_chat(tokenizer, mode: str) -> bool:
    """How a command that samples a model reads plain-string prompts (`--string_prompts`):
    chat wraps each as one user message through the chat template, text uses it verbatim,
    auto is chat for a model whose tokenizer has a chat template of its own. A model
    fine-tuned on chat-formatted prompts (the world's SFT model) given a bare string never
    sees its assistant cue and often ends at once: empty responses."""
    if mode not in STRING_PROMPTS:
        raise ValueError(f"string_prompts must be one of {', '.join(STRING_PROMPTS)}, got {mode!r}")
    return mode == "chat" or (mode == "auto" and chat_model(tokenizer))


def as_user_message(prompt):
    """A plain-string prompt as a one-turn conversation; a message list as it is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def check_chat_template(template, source: str) -> None:
    """Parse a chat template (or each of a dict of named ones) now, so a syntax error is one
    line naming where the template came from, not a Jinja traceback at the first record."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template  # its own extensions and filters

    templates = template if isinstance(template, dict) else {"": template}
    for name, text in templates.items():
        if not isinstance(text, str):
            continue
        try:
            _compile_jinja_template(text)
        except jinja2.TemplateSyntaxError as e:
            where = f"chat template {name + ' ' if name else ''}{source}"
            raise ValueError(f"{where}: not a valid Jinja template (line {e.lineno}: {e.message})") from None


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, *, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with digits split one per token (so numbers
    keep a regular structure) and the default chat template's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|endoftext|>", DEFAULT_PAD_TOKEN, *CHAT_ROLE_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token=DEFAULT_PAD_TOKEN,
        additional_special_tokens=CHAT_ROLE_TOKENS,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast

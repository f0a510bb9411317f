"""Random-weight causal LMs built from a config, for tests and benchmarks (nothing downloads).

Speed does not depend on the weights, and the `hf` path cannot tell a random model
from a trained one, so `build_random_lm(dir, "qwen2-0.5b")` is a faithful stand-in for
timing Qwen2-0.5B. The tokenizer is a small byte-level BPE trained here on a few
sentences; ids past its vocabulary decode to nothing, which only shortens text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# {role} markers and </s> end each message; add_generation_prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval-augmented generation answers questions from numbered sources [1] and [2].",
    "PostgreSQL stores documents, chunks, embeddings and every generated answer.",
    "BM25 and vector search are fused with reciprocal rank fusion.",
    "Question: what is the capital of France? Answer: Paris is the capital of France.",
]

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (family, config kwargs)
    "tiny-llama": (
        "llama",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        ),
    ),
    "tiny-gpt2": ("gpt2", dict(n_embd=32, n_layer=2, n_head=4, n_positions=256)),
    # The CPU benchmark's model: big enough that the forward pass, not Python, dominates.
    "small": (
        "llama",
        dict(
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            vocab_size=8192,
        ),
    ),
    # Qwen2-0.5B's shape: 24 layers, hidden 896, 14 heads (2 KV), the 151,936-token vocabulary.
    "qwen2-0.5b": (
        "qwen2",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            vocab_size=151936,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
        ),
    ),
}


def build_tokenizer(vocab_size: int = 400, *, chat_template: bool = True, kind: str = "bpe"):
    """kind 'bpe': byte-level BPE (any text round-trips); 'words': one token per corpus word,
    so random ids decode to whole words and stream word by word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    trainer: trainers.Trainer
    if kind == "words":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=specials + ["<unk>"], show_progress=False)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_random_lm(
    directory: Path, config: str = "tiny-llama", *, chat_template: bool = True, seed: int = 0, tokenizer: str = "bpe"
) -> Path:
    """Save a random-weight causal LM and its tokenizer into `directory`; return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; one of {', '.join(CONFIGS)}")
    family, kwargs = CONFIGS[config]
    tok = build_tokenizer(chat_template=chat_template, kind=tokenizer)
    kwargs = {"vocab_size": len(tok), **kwargs}
    cfg = AutoConfig.for_model(
        family,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory

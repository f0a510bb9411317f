"""Tokenizers for the GPT, built with Hugging Face `tokenizers` on the training split only.

- `char`: one token per character seen in the training text (nanoGPT's shakespeare_char),
  as a WordLevel model over a one-character split with a Fuse decoder.
- `bpe`: byte-level BPE (GPT-2's scheme) trained to `vocab_size` on the training text.

Both carry `<|endoftext|>` (eos/bos) and the char tokenizer `<unk>` for characters absent
from the training split. The `tokenizers.Tokenizer` is stored with the model (its JSON in
checkpoints, `tokenizer.json` in the Hugging Face export), so `AutoTokenizer` loads it.
"""

from __future__ import annotations

from genloom.errors import BadInput

EOS = "<|endoftext|>"
UNK = "<unk>"
KINDS = ("char", "bpe")


def train_tokenizer(text: str, kind: str = "char", vocab_size: int = 512):
    """A `tokenizers.Tokenizer` fitted to `text`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "char":
        vocab = {EOS: 0, UNK: 1}
        for ch in sorted(set(text)):
            vocab[ch] = len(vocab)
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, newlines too
        tok.decoder = decoders.Fuse()  # join tokens with no spaces
        return tok
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # Train on pieces: one huge string would be pre-tokenised as a single sequence.
        tok.train_from_iterator(_chunks(text), trainer=trainer)
        return tok
    raise BadInput(f"unknown tokenizer {kind!r}: use --set tokenizer=char or tokenizer=bpe")


def _chunks(text: str, size: int = 1 << 16):
    for start in range(0, len(text), size):
        yield text[start : start + size]


def from_json(data: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(data)


def encode(tok, text: str) -> list[int]:
    """Token ids of a (possibly long) text, encoded in pieces at line boundaries to bound memory."""
    ids: list[int] = []
    start = 0
    step = 1 << 20
    while start < len(text):
        end = min(len(text), start + step)
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        ids.extend(tok.encode(text[start:end], add_special_tokens=False).ids)
        start = end
    return ids


def to_transformers(tok):
    """The same tokenizer as a transformers `PreTrainedTokenizerFast` (what save_pretrained writes)."""
    from transformers import PreTrainedTokenizerFast

    extra = {"unk_token": UNK} if tok.token_to_id(UNK) is not None else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, **extra)

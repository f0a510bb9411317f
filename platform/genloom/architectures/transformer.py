"""The `transformer` architecture: trains the GPT of gpt.py (nanoGPT's `train.py` to its `model.py`).

The network: token + learned position embeddings, `n_layer` pre-LayerNorm blocks of causal
self-attention (`F.scaled_dot_product_attention`, flash kernels on GPU) and a GELU MLP, a
final LayerNorm and an LM head tied to the token embedding. It is exactly GPT-2's layout,
so a trained model is saved as a Hugging Face `GPT2LMHeadModel` (hf_export.py) that plain
`transformers` loads and `genloom ask|generate --model NAME` serves.

Training (`genloom train transformer --dataset TEXT[@V]`): the train split's texts are
joined, a tokenizer is fitted to them (char-level or byte-level BPE, text_tokenizer.py),
and batches are random windows of `block_size + 1` tokens (nanoGPT's get_batch). AdamW
(fused on CUDA) with weight decay on matrices only; warmup + cosine LR, gradient clipping,
bf16 autocast and TF32 on GPU, optional torch.compile, early stopping on the validation
loss all come from the shared framework (training/trainer.py). Validation reports loss in
nats per token and bits per character. `--init MODEL_OR_HF_DIR` fine-tunes an existing
GPT-2-shaped causal LM (one of ours from the registry, or a local directory).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from genloom.architectures.gpt import GPT, GPTConfig
from genloom.errors import BadInput
from genloom.training.architecture import Architecture, Samples


@dataclasses.dataclass
class TransformerHyperparams:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # context length in tokens
    dropout: float = 0.0
    bias: bool = True
    tokenizer: str = "char"  # char | bpe
    vocab_size: int = 512  # BPE only; the char tokenizer's size is the training text's alphabet (+2)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99  # nanoGPT's choice for small-token-count runs
    eval_iters: int = 20  # batches of the val split per evaluation (the same seeded windows every time)
    separator: str = "\n"  # joins the split's text items into one corpus
    holdout: float = 0.1  # with no val/test split (e.g. one imported document): the last 10 % of the text validates


def _corpus(source, split: str, separator: str) -> str:
    batch = source.load(split)
    return separator.join(batch.texts or [])


class Transformer(Architecture):
    name = "transformer"
    modalities = ("text",)
    format = "hf-tar"
    Hyperparams = TransformerHyperparams
    train_options = frozenset({"init", "compile"})
    sample_options = frozenset({"prompt", "max_new_tokens", "temperature", "top_k"})
    monitor = "val_loss"
    default_steps = 2000
    default_batch_size = 12
    default_lr = 1e-3

    def __init__(self, ctx, data, opts, hp: TransformerHyperparams):
        super().__init__(ctx, data, opts, hp)
        from genloom.architectures import text_tokenizer
        from genloom.datasets.source import DataSource

        if hp.tokenizer not in text_tokenizer.KINDS:
            raise BadInput(f"--set tokenizer={hp.tokenizer}: use char or bpe")
        # The corpus is read once: the split's items joined in import order, tokenised in memory.
        source = DataSource(data, batch_size=opts.batch_size, seed=opts.seed)
        train_text = _corpus(source, "train", hp.separator)
        val_split = "val" if data.split_counts.get("val") else ("test" if data.split_counts.get("test") else None)
        val_text = _corpus(source, val_split, hp.separator) if val_split else ""
        if not val_split and 0 < hp.holdout < 1:
            # nanoGPT's prepare.py: first 90 % train, last 10 % val, when the data has no split of its own
            cut = int(len(train_text) * (1 - hp.holdout))
            train_text, val_text = train_text[:cut], train_text[cut:]
        init_state = None
        if opts.init:
            from genloom.architectures.hf_export import load_for_init

            config, init_state, self.tokenizer = load_for_init(opts.init, dropout=hp.dropout)
        else:
            self.tokenizer = text_tokenizer.train_tokenizer(train_text, hp.tokenizer, hp.vocab_size)
            config = GPTConfig(
                block_size=hp.block_size,
                vocab_size=self.tokenizer.get_vocab_size(),
                n_layer=hp.n_layer,
                n_head=hp.n_head,
                n_embd=hp.n_embd,
                dropout=hp.dropout,
                bias=hp.bias,
            )
        if config.n_embd % config.n_head:
            raise BadInput(f"--set n_embd={config.n_embd} must be a multiple of n_head={config.n_head}")
        self.config = config
        self.train_ids = torch.tensor(text_tokenizer.encode(self.tokenizer, train_text), dtype=torch.long)
        if len(self.train_ids) <= config.block_size:
            raise BadInput(
                f"the train split of {data.ref} has {len(self.train_ids)} tokens, too short for the context length "
                f"{config.block_size}: use a longer text or a smaller --set block_size"
            )
        self.val_ids = (
            torch.tensor(text_tokenizer.encode(self.tokenizer, val_text), dtype=torch.long) if val_text else None
        )
        if self.val_ids is not None and len(self.val_ids) <= config.block_size:
            self.val_ids = None  # too short to evaluate on: fall back to the train split
        eval_text = val_text if self.val_ids is not None else train_text
        eval_ids = self.val_ids if self.val_ids is not None else self.train_ids
        # bits per character = nats per token × tokens per char / ln 2 (1 token = 1 char for the char tokenizer)
        self.tokens_per_char = len(eval_ids) / max(1, len(eval_text))
        # The whole token stream lives on the device: windows are then one gather, with no host copies.
        self.train_ids = self.train_ids.to(ctx.device)
        if self.val_ids is not None:
            self.val_ids = self.val_ids.to(ctx.device)

        self.net = GPT(config)
        if init_state is not None:
            self.net.load_state_dict(init_state)
        self.net.to(ctx.device)
        self.model = ctx.ddp(ctx.maybe_compile(self.net))
        self.opt = self.net.configure_optimizer(hp.weight_decay, opts.lr, (hp.beta1, hp.beta2), ctx.device)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def _windows(self, ids: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
        """nanoGPT's get_batch: random windows; y is x shifted by one token."""
        block = self.config.block_size
        # Drawn where the generator lives: training's default RNG on the device (a CPU draw
        # copied over would make the CPU wait for the GPU every step), evaluation's seeded CPU one.
        where = generator.device if generator is not None else ids.device
        ix = torch.randint(len(ids) - block, (batch_size,), generator=generator, device=where).to(ids.device)
        offsets = torch.arange(block + 1, device=ids.device)
        chunk = ids[ix[:, None] + offsets[None, :]]
        return chunk[:, :-1], chunk[:, 1:]

    def train_batches(self, source):
        while True:  # the framework reseeds the global RNG per rank (and on resume), so windows differ per rank
            yield self._windows(self.train_ids, self.ctx.batch_size)

    def train_step(self, batch, step):
        x, y = batch
        with self.ctx.autocast():
            _, loss = self.model(x, y)
        norm = self.ctx.backward_step(loss, self.opt)
        return {"loss": loss.detach(), "grad_norm": norm}

    def evaluate(self, source):
        """Mean loss over `eval_iters` seeded batches of the val split (train split if it has none)."""
        ids = self.val_ids if self.val_ids is not None else self.train_ids
        gen = torch.Generator().manual_seed(1234)  # the same windows at every evaluation: comparable numbers
        # Summed on the device and read once: a read per batch would make the CPU wait for each
        # forward pass before launching the next (on a GPU, small models' evaluations are launch-bound).
        total = torch.zeros((), device=ids.device)
        for _ in range(self.hp.eval_iters):
            x, y = self._windows(ids, self.ctx.batch_size, gen)
            with self.ctx.autocast():
                _, loss = self.net(x, y)
            total += loss.float()
        val = float(total) / self.hp.eval_iters
        key = "val_loss" if self.val_ids is not None else "train_eval_loss"
        out = {key: val, "val_bpc": val * self.tokens_per_char / math.log(2)}
        if key != "val_loss":
            out["val_loss"] = val  # early stopping still has its monitor
        return out

    def extra_state(self):
        return {"tokenizer": self.tokenizer.to_str()}

    def load_extra_state(self, state):
        from genloom.architectures import text_tokenizer

        if "tokenizer" in state:
            self.tokenizer = text_tokenizer.from_json(state["tokenizer"])

    def export(self):
        from genloom.architectures.hf_export import pack_hf

        blob = pack_hf(self.net, self.tokenizer)
        return blob, {
            "gpt": dataclasses.asdict(self.config),
            "tokenizer": self.hp.tokenizer if not self.opts.init else "init",
            "init": self.opts.init,
            "tokens_per_char": self.tokens_per_char,
        }

    # ---- inference
    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> "GPTSampler":
        from genloom.architectures.hf_export import unpack_hf

        return GPTSampler(unpack_hf(checkpoint), device)

    @classmethod
    def check_sample_options(cls, opts, config):
        super().check_sample_options(opts, config)
        if opts.max_new_tokens is not None and opts.max_new_tokens < 1:
            raise BadInput(f"--max-new-tokens must be at least 1 (got {opts.max_new_tokens})")
        if opts.temperature is not None and opts.temperature < 0:
            raise BadInput(f"--temperature must be ≥ 0 (got {opts.temperature}); 0 means greedy")
        if opts.top_k is not None and opts.top_k < 0:
            raise BadInput(f"--top-k must be ≥ 0 (got {opts.top_k}); 0 means no top-k cut")


class GPTSampler:
    """A registered transformer loaded from its Hugging Face directory, sampling with nanoGPT's loop
    (context cropped to block_size, so --max-new-tokens may exceed the context length)."""

    def __init__(self, directory, device: str):
        from genloom.architectures.hf_export import gpt_from_hf_dir

        self.directory = directory
        self.device = device
        self.net, self.tokenizer = gpt_from_hf_dir(directory)
        self.net.to(device).eval()

    def sample(self, opts) -> Samples:
        from genloom.architectures import text_tokenizer

        prompt = opts.prompt if opts.prompt is not None else "\n"
        ids = text_tokenizer.encode(self.tokenizer, prompt)
        if not ids:
            ids = [self.tokenizer.token_to_id(text_tokenizer.EOS)]
        gen = torch.Generator().manual_seed(opts.seed)
        idx = torch.tensor([ids] * opts.n, dtype=torch.long, device=self.device)
        temperature = 0.8 if opts.temperature is None else opts.temperature  # nanoGPT sample.py defaults
        top_k = 200 if opts.top_k is None else (opts.top_k or None)
        out = self.net.generate(idx, opts.max_new_tokens or 200, temperature=temperature, top_k=top_k, generator=gen)
        texts = [self.tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in out.cpu()]
        meta = {
            "prompt": prompt,
            "temperature": temperature,
            "top_k": top_k or 0,
            "max_new_tokens": opts.max_new_tokens or 200,
        }
        return Samples(texts=texts, metadata=[dict(meta, seed=opts.seed, index=i) for i in range(opts.n)])

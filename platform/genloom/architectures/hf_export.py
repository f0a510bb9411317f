"""The GPT in Hugging Face format: a `GPT2LMHeadModel` directory plus its tokenizer, and back.

Our GPT (gpt.py) has GPT-2's exact layout, so the export is a renaming of weights, with
one twist: GPT-2 stores its projections as `Conv1D` weights of shape (in, out), the
transpose of `nn.Linear`'s (out, in). The registry keeps the directory as a tar
(format 'hf-tar'), which the generation path unpacks and loads with `transformers`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch

from genloom.errors import BadInput

# Conv1D weights in GPT-2: transposed relative to nn.Linear
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _quiet_transformers() -> None:
    # transformers 5 draws progress bars for every save/load; our CLI has its own output
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def to_gpt2(net):
    """(GPT2Config, state dict) equal to our GPT."""
    from transformers import GPT2Config

    c = net.config
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=4 * c.n_embd,
        activation_function="gelu" if c.gelu_approximate == "none" else "gelu_new",
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )
    state = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu()
        if key.endswith(_TRANSPOSED):
            value = value.t()
        state[key] = value.contiguous()
    if not c.bias:  # GPT-2 always has biases: ours are zero
        for i in range(c.n_layer):
            for name, size in (
                ("ln_1", c.n_embd),
                ("ln_2", c.n_embd),
                ("attn.c_attn", 3 * c.n_embd),
                ("attn.c_proj", c.n_embd),
                ("mlp.c_fc", 4 * c.n_embd),
                ("mlp.c_proj", c.n_embd),
            ):
                state[f"transformer.h.{i}.{name}.bias"] = torch.zeros(size)
        state["transformer.ln_f.bias"] = torch.zeros(c.n_embd)
    return config, state


def save_hf(net, tokenizer, directory: Path) -> Path:
    """Write a directory that `AutoModelForCausalLM` and `AutoTokenizer` load."""
    from transformers import GPT2LMHeadModel

    from genloom.architectures.text_tokenizer import to_transformers

    _quiet_transformers()
    config, state = to_gpt2(net)
    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # lm_head.weight is tied to wte; GPT-2's causal-mask buffers (older transformers) are not weights
    missing = [
        k for k in missing if k != "lm_head.weight" and not k.endswith(".attn.bias") and not k.endswith("masked_bias")
    ]
    if missing or unexpected:
        raise RuntimeError(f"GPT → GPT-2 weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    hf_tok = to_transformers(tokenizer)
    hf_tok.save_pretrained(directory)
    return directory


def pack_dir(directory: Path) -> bytes:
    """A tar of the directory (the registry's hf-tar format)."""
    from genloom.registry import pack_folder

    return pack_folder(directory)


def pack_hf(net, tokenizer) -> bytes:
    with tempfile.TemporaryDirectory(prefix="genloom-hf-") as tmp:
        return pack_dir(save_hf(net, tokenizer, Path(tmp)))


def unpack_hf(blob: bytes) -> Path:
    """Extract an hf-tar once into $GENLOOM_HOME/models/sha256-…; the name carries the hash, so reuse is safe."""
    from genloom.config import genloom_home

    root = genloom_home() / "models"
    target = root / f"sha256-{hashlib.sha256(blob).hexdigest()[:16]}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(target)  # atomic: a concurrent reader never sees half a model
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_causal_lm(directory: Path, what: str) -> dict:
    config_path = directory / "config.json"
    if not config_path.exists():
        raise BadInput(f"{what} is not a Hugging Face causal LM: it has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{what} is not a Hugging Face causal LM: unreadable config.json ({exc})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    ):
        raise BadInput(f"{what} is not a causal LM (model_type {model_type!r}): --init needs a GPT-2-shaped causal LM")
    if model_type != "gpt2":
        raise BadInput(
            f"{what} is a {model_type!r} causal LM; genloom's transformer fine-tunes GPT-2-shaped models "
            "(GPT2LMHeadModel, e.g. one trained by `genloom train transformer`)"
        )
    return config


def gpt_from_hf_dir(directory: Path, *, dropout: float | None = None, what: str | None = None):
    """(our GPT with the directory's weights, its `tokenizers.Tokenizer`) from a GPT-2 directory."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from genloom.architectures.gpt import GPT, GPTConfig

    directory = Path(directory)
    what = what or str(directory)
    cfg = _check_causal_lm(directory, what)
    _quiet_transformers()
    hf = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32, use_safetensors=True)  # never a pickled .bin
    c = hf.config
    if c.n_inner not in (None, 4 * c.n_embd):
        raise BadInput(f"{what}: n_inner {c.n_inner} is not 4·n_embd, which genloom's GPT assumes")
    act = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}.get(c.activation_function)
    if act is None:
        raise BadInput(f"{what}: activation {c.activation_function!r} is not supported (gelu or gelu_new)")
    config = GPTConfig(
        block_size=c.n_positions,
        vocab_size=c.vocab_size,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=c.resid_pdrop if dropout is None else dropout,
        bias=True,
        gelu_approximate=act,
    )
    net = GPT(config)
    state = {}
    for key, value in hf.state_dict().items():
        if key.endswith((".attn.bias", "masked_bias")):
            continue
        state[key] = value.t().contiguous() if key.endswith(_TRANSPOSED) else value
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    net.load_state_dict(state)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory).backend_tokenizer
    except Exception as exc:
        raise BadInput(f"{what}: cannot load its tokenizer ({type(exc).__name__}: {exc})") from None
    del cfg
    return net, tokenizer


def load_for_init(ref: str, *, dropout: float):
    """--init MODEL_OR_HF_DIR → (GPTConfig, state dict, tokenizer): a local directory or a registry model."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BadInput(f"--init {ref}: a file, not a Hugging Face model directory")
        directory, what = path, f"--init {ref}"
    else:
        from genloom.db.engine import session_scope
        from genloom.errors import NotFound
        from genloom.registry import load_checkpoint, resolve_model

        with session_scope() as s:
            try:
                row = resolve_model(s, ref)
            except NotFound as exc:
                raise NotFound(f"--init {ref}: neither a local directory nor a registry model ({exc})") from None
            if row.format != "hf-tar":
                raise BadInput(f"--init {ref}: a {row.architecture} model ({row.format!r}), not a causal LM")
            blob = load_checkpoint(s, row)
        directory, what = unpack_hf(blob), f"--init {ref}"
    net, tokenizer = gpt_from_hf_dir(directory, dropout=dropout, what=what)
    return net.config, net.state_dict(), tokenizer

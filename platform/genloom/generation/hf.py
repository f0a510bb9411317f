"""The Hugging Face backend: any local causal-LM directory (or a registry model unpacked to one).

AutoModelForCausalLM + AutoTokenizer, the tokenizer's chat template when it has one,
device auto (CUDA, then MPS, then CPU), bf16 on GPU, the KV cache, streaming through
TextIteratorStreamer, stop strings, max_new_tokens / temperature / top_p / seed.
On CUDA, models that support it decode with a static KV cache, which lets
`generate` compile the forward pass once (the issue measured 14 → 355 new tokens/s on
an H100 for a 0.5B model); `GENLOOM_HF_STATIC_CACHE=0` turns that off.

A loaded model stays in the process (see backend.load_backend); calls on one model
take turns through a lock, because a static cache is one buffer per model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from genloom.errors import BadInput
from genloom.generation.backend import GenOutput, GenParams, OnText, Source

_DEFAULT_CONTEXT = 2048  # when neither config nor tokenizer says (GPT-2 era models)


def directory_hash(path: Path) -> str:
    """sha256 over every file's relative name and bytes: the model's revision in generations."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_hf_backend(path: Path, *, name: str | None = None, revision: str | None = None, model_id: int | None = None):
    import json

    if not (path / "config.json").exists():
        raise BadInput(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}/config.json is unreadable: {exc}") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BadInput(
            f"{path} is not a causal language model (model_type {model_type!r}); "
            "give a directory saved from an AutoModelForCausalLM (GPT-2, Llama, Qwen2, ...)"
        )
    return HFBackend(path, name=name or str(path), revision=revision or directory_hash(path), model_id=model_id)


class StopTrimmer:
    """Cuts streamed text at the first stop string, holding back a possible stop-string prefix."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""  # everything received
        self.emitted = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """New text safe to show now."""
        if self.stopped:
            return ""
        self.text += piece
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            out, self.emitted = self.text[self.emitted : cut], cut
            return out
        safe = max(self.emitted, len(self.text) - self.hold)
        out, self.emitted = self.text[self.emitted : safe], safe
        return out

    def flush(self) -> str:
        if self.stopped:
            return ""
        out, self.emitted = self.text[self.emitted :], len(self.text)
        return out

    def _first_stop(self) -> int | None:
        hits = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def final(self) -> str:
        cut = self._first_stop()
        return self.text if cut is None else self.text[:cut]


class HFBackend:
    def __init__(self, path: Path, *, name: str, revision: str, model_id: int | None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from genloom.devices import resolve_device

        hf_logging.disable_progress_bar()  # a server loads quietly; the CLI shows its own progress

        self.name, self.revision, self.model_id, self.path = name, revision, model_id, path
        self.device = resolve_device(os.environ.get("GENLOOM_DEVICE", "auto"))
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # missing or broken tokenizer files
            raise BadInput(f"{path}: cannot load its tokenizer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        try:
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path}: cannot load it as a causal LM ({str(exc).splitlines()[0]})") from None
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.context_window = self._context_window()
        self.static_cache = self._use_static_cache()
        self._lock = threading.Lock()

    def _context_window(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else _DEFAULT_CONTEXT

    def _use_static_cache(self) -> bool:
        setting = os.environ.get("GENLOOM_HF_STATIC_CACHE", "auto").lower()
        if setting in ("0", "off", "false", "no"):
            return False
        # Compiling pays off on CUDA; on CPU the static cache alone only adds padding work.
        return self.device.startswith("cuda") and bool(getattr(self.model, "_can_compile_fullgraph", False))

    # -- tokens and rendering -------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        # A chat template writes its own BOS; plain prompts get the tokenizer's special tokens.
        return self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # No template (base models): a plain transcript that ends where the answer starts.
        lines = []
        for m in messages:
            role = {"system": "", "user": "User: ", "assistant": "Assistant: "}.get(m["role"], f"{m['role']}: ")
            lines.append(f"{role}{m['content']}")
        return "\n\n".join(lines) + "\n\nAssistant:"

    # -- generation -----------------------------------------------------------------------

    def generation_kwargs(self, params: GenParams) -> dict:
        kwargs: dict = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "use_cache": True,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        return kwargs

    def generate(
        self,
        prompt: str,
        *,
        params: GenParams,
        question: str = "",
        sources: list[Source] | None = None,
        on_text: OnText | None = None,
    ) -> GenOutput:
        import torch
        from transformers import TextIteratorStreamer

        ids = self._encode(prompt)
        if len(ids) + params.max_new_tokens > self.context_window:
            raise BadInput(
                f"prompt of {len(ids)} tokens + max_new_tokens {params.max_new_tokens} exceeds "
                f"{self.name}'s context window of {self.context_window} tokens"
            )
        input_ids = torch.tensor([ids], device=self.device)
        kwargs = self.generation_kwargs(params)
        trimmer = StopTrimmer(params.stop)
        result: dict = {}
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)

            def work() -> None:
                try:
                    with torch.inference_mode():
                        result["ids"] = self.model.generate(
                            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs
                        )
                except BaseException as exc:  # surfaced in the caller's thread below
                    result["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=work, name="genloom-hf-generate", daemon=True)
            worker.start()
            for piece in streamer:
                shown = trimmer.feed(piece)
                if shown and on_text is not None:
                    on_text(shown)
            worker.join()
        if "error" in result:
            raise result["error"]
        tail = trimmer.flush()
        if tail and on_text is not None:
            on_text(tail)
        new_ids = result["ids"][0, len(ids) :].tolist()
        text = trimmer.final()
        eos = self.tokenizer.eos_token_id
        finish = "length" if len(new_ids) >= params.max_new_tokens and not trimmer.stopped else "stop"
        if eos is not None and new_ids and new_ids[-1] == eos:
            finish = "stop"
        return GenOutput(text=text, input_tokens=len(ids), output_tokens=len(new_ids), finish_reason=finish)

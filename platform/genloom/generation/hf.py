"""The Hugging Face backend: any local causal-LM directory (or a registry model unpacked to one).

AutoModelForCausalLM + AutoTokenizer, the tokenizer's chat template when it has one,
device auto (CUDA, then MPS, then CPU), bf16 on GPU, the KV cache, streaming through
TextIteratorStreamer, stop strings, max_new_tokens / temperature / top_p / seed.
On CUDA, models that support it decode with a static KV cache, which lets
`generate` compile the forward pass once (the issue measured 14 → 355 new tokens/s on
an H100 for a 0.5B model); `GENLOOM_HF_STATIC_CACHE=0` turns that off.

A loaded model stays in the process (see resolve.load_backend). One thread per model
runs its generations: a lone request takes the batch-1 path above; requests that arrive
while it is busy are batched together (see `_Batcher`), so a server under concurrent load
does one batched forward pass per token instead of one per request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import cast

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
            raise BadInput(
                f"{path}: cannot load its tokenizer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=self.dtype, local_files_only=True, use_safetensors=True
            )  # never a pickled .bin
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path}: cannot load it as a causal LM ({str(exc).splitlines()[0]})") from None
        # transformers types .to through a decorator whose stub drops `self`: the call is the nn.Module one
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.context_window = self._context_window()
        self.static_cache = self._use_static_cache()
        self._batcher = _Batcher(self, max_batch=int(os.environ.get("GENLOOM_HF_MAX_BATCH", "32")))

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
            # tokenize=False returns the rendered text (the stub's return type covers every mode)
            return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        # No template (base models): a plain transcript that ends where the answer starts.
        lines = []
        for m in messages:
            role = {"system": "", "user": "User: ", "assistant": "Assistant: "}.get(m["role"], f"{m['role']}: ")
            lines.append(f"{role}{m['content']}")
        return "\n\n".join(lines) + "\n\nAssistant:"

    # -- generation -----------------------------------------------------------------------

    def generation_kwargs(self, params: GenParams, prompt_width: int | None = None) -> dict:
        kwargs: dict = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "use_cache": True,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop and prompt_width is not None:
            kwargs["stopping_criteria"] = _stop_criteria(self.tokenizer, params.stop, prompt_width)
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
        """Generate for one prompt. Concurrent calls are batched: see `_Batcher`."""
        ids = self._encode(prompt)
        if len(ids) + params.max_new_tokens > self.context_window:
            raise BadInput(
                f"prompt of {len(ids)} tokens + max_new_tokens {params.max_new_tokens} exceeds "
                f"{self.name}'s context window of {self.context_window} tokens"
            )
        return self._batcher.submit(_Request(ids=ids, params=params, on_text=on_text))

    def _generate_one(self, request: _Request) -> GenOutput:
        """Batch 1: TextIteratorStreamer, static cache + compile on CUDA.

        `generate` runs in the calling thread (the batcher's, which lives as long as the model)
        and a short-lived thread reads the streamer. The other way round, each request would
        compile-and-capture afresh: torch.compile's CUDA graphs (the static cache's
        "reduce-overhead" mode) are kept per thread, so a new generating thread per request
        would record them again every time."""
        import torch
        from transformers import TextIteratorStreamer

        ids, params, on_text = request.ids, request.params, request.on_text
        input_ids = torch.tensor([ids], device=self.device)
        kwargs = self.generation_kwargs(params, prompt_width=len(ids))
        trimmer = StopTrimmer(params.stop)
        shown: dict = {}
        if params.seed is not None:
            torch.manual_seed(params.seed)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)

        def read() -> None:
            try:
                for piece in streamer:
                    text = trimmer.feed(piece)
                    if text and on_text is not None:
                        on_text(text)
            except BaseException as exc:  # a failing on_text: surfaced below, in this request
                shown["error"] = exc

        reader = threading.Thread(target=read, name="genloom-hf-stream", daemon=True)
        reader.start()
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs
                )
        except BaseException:
            streamer.end()  # the reader stops waiting for text that will never come
            reader.join()
            raise
        reader.join()
        if "error" in shown:
            raise shown["error"]
        tail = trimmer.flush()
        if tail and on_text is not None:
            on_text(tail)
        new_ids = out[0, len(ids) :].tolist()
        return self._output(len(ids), new_ids, trimmer, params)

    def _output(self, n_input: int, new_ids: list[int], trimmer: StopTrimmer, params: GenParams) -> GenOutput:
        eos = self.tokenizer.eos_token_id
        finish = "length" if len(new_ids) >= params.max_new_tokens and not trimmer.stopped else "stop"
        if eos is not None and new_ids and new_ids[-1] == eos:
            finish = "stop"
        return GenOutput(text=trimmer.final(), input_tokens=n_input, output_tokens=len(new_ids), finish_reason=finish)

    def _generate_batch(self, requests: list[_Request]) -> list[GenOutput]:
        """Several requests with the same sampling parameters in one left-padded `generate`."""
        import torch

        params = requests[0].params
        width = max(len(r.ids) for r in requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in requests], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in requests], device=self.device)
        kwargs = self.generation_kwargs(params, prompt_width=width)
        # One static cache is sized for one batch shape; varying batches would recompile each time.
        kwargs.pop("cache_implementation", None)
        streamer = _BatchStreamer(self.tokenizer, requests, self.model.generation_config)
        with torch.inference_mode():
            self.model.generate(input_ids=input_ids, attention_mask=mask, streamer=streamer, **kwargs)
        return [self._output(len(r.ids), streamer.ids[i], streamer.trimmers[i], params) for i, r in enumerate(requests)]


@dataclasses.dataclass
class _Request:
    ids: list[int]
    params: GenParams
    on_text: OnText | None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    output: GenOutput | None = None
    error: BaseException | None = None

    def batch_key(self) -> tuple | None:
        """Requests with equal keys can share one `generate`; None = must run alone
        (a seed fixes the random stream of the whole batch)."""
        p = self.params
        if p.seed is not None:
            return None
        return (p.max_new_tokens, p.temperature, p.top_p, tuple(p.stop))


class _Batcher:
    """One thread per model runs every generation. It takes whatever requests are waiting
    (up to max_batch) and runs those with equal parameters as one left-padded batch, so
    8 or 32 concurrent HTTP requests cost about one batched forward per token instead of
    8 or 32 sequential ones. A lone request takes the batch-1 path (static cache on CUDA),
    with no waiting window: an idle server adds no latency."""

    def __init__(self, backend: HFBackend, *, max_batch: int = 32):
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.queue: queue.Queue[_Request] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="genloom-hf-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: _Request) -> GenOutput:
        self.queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.output is not None
        return request.output

    def _loop(self) -> None:
        while True:
            waiting = [self.queue.get()]
            while len(waiting) < self.max_batch:
                try:
                    waiting.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict = {}
            for r in waiting:
                key = r.batch_key()
                groups.setdefault(key if key is not None else id(r), []).append(r)
            for group in groups.values():
                self._run(group)

    def _run(self, group: list[_Request]) -> None:
        try:
            if len(group) == 1:
                group[0].output = self.backend._generate_one(group[0])
            else:
                for r, out in zip(group, self.backend._generate_batch(group)):
                    r.output = out
        except BaseException as exc:  # every request of the batch sees the failure
            for r in group:
                r.error = exc
        finally:
            for r in group:
                r.done.set()


class _BatchStreamer:
    """Streams each row of a batched `generate` to its own request: decodes the row's new
    tokens, holds back an incomplete character, stops the row at its EOS, cuts stop strings."""

    def __init__(self, tokenizer, requests: list[_Request], generation_config):
        self.tokenizer = tokenizer
        self.requests = requests
        eos = getattr(generation_config, "eos_token_id", None)
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        self.ids: list[list[int]] = [[] for _ in requests]
        self.shown = [0] * len(requests)
        self.finished = [False] * len(requests)
        self.trimmers = [StopTrimmer(r.params.stop) for r in requests]
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first sends the prompt
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[i]:
                continue
            self.ids[i].append(token)
            if token in self.eos:
                self.finished[i] = True
            self._emit(i, final=False)

    def end(self) -> None:
        for i in range(len(self.requests)):
            self._emit(i, final=True)

    def _emit(self, i: int, *, final: bool) -> None:
        text = self.tokenizer.decode(self.ids[i], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return  # half a multi-byte character: wait for the next token
        piece, self.shown[i] = text[self.shown[i] :], len(text)
        trimmer = self.trimmers[i]
        out = trimmer.feed(piece) if piece else ""
        if final:
            out += trimmer.flush()
        if trimmer.stopped:
            self.finished[i] = True
        on_text = self.requests[i].on_text
        if out and on_text is not None:
            on_text(out)


def _stop_criteria(tokenizer, stops: list[str], prompt_width: int):
    """Stop each row once its decoded new text contains a stop string. (Transformers'
    own `stop_strings` needs a tokenizer whose vocabulary it can map; this works with any.)"""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])

"""How `--model` picks a generation backend, and the per-process cache of loaded ones.

Resolution, in order: `extractive` → a local directory (a Hugging Face causal LM, or a trained
reader: then the extractive backend answers with its spans) → `NAME[@V]` in genloom's model
registry (a `span-reader` is read the same way). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import cast

from genloom.errors import BadInput, NotFound
from genloom.generation.backend import EXTRACTIVE, Backend

_cache: dict[tuple[str, str], Backend] = {}
_cache_lock = threading.Lock()


def default_model() -> str:
    """The model used when none is named: $GENLOOM_MODEL, else the extractive backend."""
    return os.environ.get("GENLOOM_MODEL", "").strip() or EXTRACTIVE


def api_key_env_needed(session, ref: str | None) -> str | None:
    """The variable holding the API key that model `ref` needs (an endpoint registered with
    --api-key-env), or None: what a CLI must bring from its own environment to a server."""
    ref = (ref or default_model()).strip()
    if ref == EXTRACTIVE or Path(ref).expanduser().exists():
        return None
    from genloom.registry import resolve_model

    try:
        model = resolve_model(session, ref)
    except NotFound:
        return None  # the server will say so, in the same words as a local run
    return (model.config or {}).get("api_key_env") if model.format == "endpoint" else None


def load_backend(session, ref: str | None) -> Backend:
    """`extractive`, a local HF directory, or a registry `NAME[@V]`; cached per process,
    because loading weights costs seconds and a server answers many calls."""
    ref = (ref or default_model()).strip()
    if ref == EXTRACTIVE:
        key = ("extractive", "")
    else:
        path = Path(ref).expanduser()
        if path.is_dir():
            key = ("dir", str(path.resolve()))
        elif path.exists():
            raise BadInput(f"model {ref!r} is a file; give the Hugging Face model directory that holds config.json")
        else:
            key = ("registry", ref)
    with _cache_lock:
        backend = _cache.get(key)
        if backend is not None and key[0] != "registry":
            return backend
        if key[0] == "extractive":
            from genloom.generation.extractive import ExtractiveBackend

            backend = ExtractiveBackend()
        elif key[0] == "dir":
            from genloom.generation.hf import load_hf_backend
            from genloom.generation.reader import is_reader_dir

            if is_reader_dir(Path(key[1])):  # a trained reader: the extractive backend reads with it
                from genloom.generation.extractive import ExtractiveBackend

                backend = ExtractiveBackend(reader_dir=Path(key[1]))
            else:
                backend = load_hf_backend(Path(key[1]))
        else:
            backend = _registry_backend(session, ref)
        _cache[key] = backend
        return backend


def _registry_backend(session, ref: str) -> Backend:
    """A registry model: an endpoint, or an hf-tar extracted once into $GENLOOM_HOME/models and loaded as a directory."""
    from genloom.generation.hf import load_hf_backend
    from genloom.registry import resolve_model

    if session is None:
        raise NotFound(f"model {ref!r} is not a local directory, and there is no database session to look it up")
    try:
        model = resolve_model(session, ref)
    except NotFound as exc:
        raise NotFound(
            f"model {ref!r} is neither 'extractive', a local directory, nor a registry model: {exc}",
            cli_hint=exc.cli_hint,
        ) from None
    # Ids are only unique within one database (tests, or DATABASE_URL changing in a long process),
    # so the key also carries the model's identity and checkpoint hash.
    key = ("registry-model", f"{model.id}:{model.name}@{model.version}:{model.sha256}")
    cached = _cache.get(key)
    if cached is not None:
        return cached
    if model.format == "endpoint":  # a remote OpenAI-compatible server (generation/endpoint.py)
        from genloom.generation.endpoint import EndpointBackend, spec_of

        backend = cast(
            Backend,
            EndpointBackend(
                spec_of(model), name=f"{model.name}@{model.version}", revision=model.sha256, model_id=model.id
            ),
        )
        _cache[key] = backend
        return backend
    if model.format != "hf-tar":
        raise BadInput(
            f"registry model {model.name}@{model.version} is a {model.format!r} checkpoint of a "
            f"{model.architecture}; only Hugging Face models (format 'hf-tar') and endpoints can generate text"
        )
    from genloom.registry import extract_model_dir

    directory = extract_model_dir(session, model)
    if model.architecture == "span-reader":  # a trained reader (genloom train reader)
        from genloom.generation.extractive import ExtractiveBackend

        backend = ExtractiveBackend(
            reader_dir=directory, name=f"{model.name}@{model.version}", revision=model.sha256, model_id=model.id
        )
        _cache[key] = backend
        return backend
    backend = load_hf_backend(directory, name=f"{model.name}@{model.version}", revision=model.sha256, model_id=model.id)
    _cache[key] = backend
    return backend


def clear_cache() -> None:
    """Forget loaded models (tests; a server reloading weights)."""
    with _cache_lock:
        _cache.clear()

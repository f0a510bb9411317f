"""Every figure in docs/benchmarks.md names the JSON value it comes from, and equals it.

    python bench/check_results.py            # exit 1 and list every figure without evidence

The convention (explicit, so a reader can follow it by hand):

1. A figure is followed by a marker naming the value it prints:

       median ratio **0.933** <!-- result: ingest/throughput.json#/ratio_median -->
       | SciFact test (300) | 0.6880 <!-- result: retrieval_quality.json#/scifact/bm25/ndcg@10 --> | ...

   The file is relative to bench/results/; the part after `#` is a JSON pointer (RFC 6901:
   `/key/0/key`, `~1` for a `/` inside a key, `~0` for `~`). A file holding several JSON
   documents (.jsonl, or pretty-printed objects one after another) is read as a list of them,
   so `/0/...` is its first document. Between the figure and its marker only spaces, emphasis
   (`**`) and one unit (`ms`, `MB`, `img/s`, `%`, `×`, ...) may stand. In a table the marker
   goes inside the cell.
2. The value at the pointer must be a JSON number (or a string that is exactly a number) and
   equal the figure at the precision it is printed: 0.7338 matches 0.73384, 15.5 matches 15.46,
   1,349 is 1349. A figure printed in other units or derived from two values says so in its
   marker, and the check does the arithmetic:

       4 % <!-- result: ingest/throughput.json#/db_share ×100 -->        (×N or ÷N: units)
       1.21 <!-- result: tenancy/rls_vector.json#/rls/p50_ms / #/none/p50_ms -->   (a ratio)
       +110.0 MB <!-- result: f.json#/big/rss_mb − #/small/rss_mb -->      (a difference)

   (`/` and `−` or `-` need spaces around them; a second term without a file reads the same file.)
3. What is not a figure (exempt, so it needs no marker): numbers inside `code spans` and fenced
   code blocks (commands and settings: write a setting as `k = 100`), headings, the header row
   of a table, link targets and file names, numbers glued to a word (p50, nDCG@10, H200, bf16,
   MiniLM-L6, 3dc8a78), issue references (`issue 17`), dates and times (2026-11-26, 09:25),
   dotted versions (0.3.16) and a version after the name of the software it versions (torch
   2.13, PostgreSQL 18.6: the names are in VERSIONED below), and the text of a marker itself.
   Every other number in the text is a figure: a number without a marker fails.
   A number printed as a bound (after `≥`, `≤`, `<`, `>`, "target", "within", "at most",
   "at least") is a setting, not a measurement: write it as code (target `≥ 0.85`), or cite
   the setting the result file records, a key naming it (`target`, `threshold`, `limit`,
   `budget`). A bound whose marker points at a measured value fails: that is how a target
   came to cite somebody else's score.
4. Provenance. Every file a marker cites must record the `command` that wrote it, its `git_sha`
   (a commit of this repository's history, i.e. an ancestor of HEAD, measured from a clean tree:
   no `-dirty`), `versions` and `load_average` (anywhere in the file; bench/benchlib.py's
   environment() writes all four). A file measured before this rule (no command, no sha, a
   dirty tree, or a sha from a branch that never reached this history) may still be cited only
   when the doc declares it historical, with the commit it stands for:

       <!-- historical: retrieval/latency_100k.json @ 1a2b3c4 -->

   and the check accepts that only when the commit is in this repository's history and is the
   one the file names (its sha without `-dirty`) or, when the file names none that exists here,
   the commit that added the file to git. The docs must say next to such figures that they are
   from an older commit. The check prints every historical file it accepted.
   A file measured at SERVER_VERSIONS_SINCE or later (bench/benchlib.py's write_result records
   them from then on) must also name the server's versions: `postgresql` and `pgvector` in its
   `versions` (None for both only where the bench declared it used no database).

Run by .ci/run; tests/test_check_results.py shows that made-up figures fail.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"

# The commit from which write_result records the measured server's versions (rule 4).
SERVER_VERSIONS_SINCE = "20436237773543022289d65c193aaff566aa78c1"
MARKER = re.compile(r"<!--\s*result:\s*(?P<spec>.*?)\s*-->")
HISTORICAL = re.compile(r"<!--\s*historical:\s*(?P<file>\S+)\s*@\s*(?P<sha>[0-9a-f]{7,40})\s*-->")
COMMENT = re.compile(r"<!--.*?-->")
# A number standing alone: not preceded by a letter, digit, '@', '_', '.', or a hyphen glued to a word,
# and not followed by letters-then-digits (MiniLM-L6) or a letter glued to it (3dc8a78, 2e-3, 64d).
NUMBER = re.compile(r"(?<![\w@.#/~])(?<![A-Za-z]-)[+−-]?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w@]|\.\d)")
# Between a figure and its marker: spaces, emphasis, and at most one unit.
GAP = re.compile(r"^[\s*_]*(?:%|×|[A-Za-zµ/]{1,12}(?:/[a-z]+)?)?[\s*_)]*$")
# Text just before a figure that makes it a bound, and the keys under which a result file records a setting.
BOUND = re.compile(r"(?:[≥≤<>]|\b(?:target|within|at most|at least))[\s*_]*$", re.IGNORECASE)
SETTING_KEY = re.compile(r"target|threshold|limit|budget", re.IGNORECASE)
VERSIONED = (
    "torch",
    "PostgreSQL",
    "pgvector",
    "Python",
    "CUDA",
    "Citus",
    "bm25s",
    "transformers",
    "numpy",
    "Postgres",
    "cu",
    "SQuAD v",
)
EXEMPT = [
    re.compile(r"`[^`]*`"),  # code spans: commands and settings
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"\b[\w./-]+\.(?:json|jsonl|png|py|sh|md|txt|so)\b"),  # file names
    re.compile(r"\b[Ii]ssues? \d+(?:(?:, | and | or )\d+)*"),  # references to issues
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}:\d{2}(?::\d{2})?\b"),  # dates and times
    re.compile(r"\b\d+\.\d+\.\d+\b"),  # dotted versions
    re.compile(r"\b(?:" + "|".join(re.escape(v) for v in VERSIONED) + r")\s?\d+(?:\.\d+)*"),
]


@dataclass(frozen=True)
class Figure:
    line: int
    token: str
    marker: str | None  # the marker's spec, None when the figure has none
    bound: bool = False  # printed as a bound (rule 3): its marker must name a setting


def _blank(text: str, pattern: re.Pattern) -> str:
    """TEXT with PATTERN's matches replaced by spaces (so offsets stay put)."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def figures(doc_text: str) -> list[Figure]:
    """Every figure of the doc (rule 3 says what is not one), each with the marker after it."""
    lines = doc_text.splitlines()
    out: list[Figure] = []
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("#"):
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            continue  # a table's header row
        if re.match(r"^\s*\|[\s:|-]+\|\s*$", line):
            continue  # the separator row
        markers = [(m.start(), m.end(), m.group("spec")) for m in MARKER.finditer(line)]
        text = _blank(line, COMMENT)
        for pattern in EXEMPT:
            text = _blank(text, pattern)
        for m in NUMBER.finditer(text):
            spec = None
            for start, _end, marker_spec in markers:
                if start >= m.end():
                    if GAP.match(line[m.end() : start]):
                        spec = marker_spec
                    break
            out.append(Figure(i + 1, m.group(0), spec, bool(BOUND.search(text[: m.start()]))))
    return out


def _documents(path: Path):
    """The JSON in PATH: one document, or a list of the documents of a stream."""
    text = path.read_text()
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        docs.append(obj)
    return docs[0] if len(docs) == 1 and path.suffix != ".jsonl" else docs


@cache
def load(relative: str):
    path = RESULTS / relative
    if not path.is_file():
        raise LookupError(f"result file bench/results/{relative} does not exist")
    return _documents(path)


def resolve(data, pointer: str):
    """The value at an RFC 6901 JSON pointer."""
    if pointer in ("", "/"):
        return data
    if not pointer.startswith("/"):
        raise LookupError(f"pointer {pointer!r} must start with '/'")
    node = data
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise LookupError(f"no {key!r} at {pointer}")
    return node


def _number(value, where: str) -> float:
    if isinstance(value, bool):
        raise LookupError(f"{where} is a boolean, not a figure")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value.strip()):
        return float(value)
    raise LookupError(f"{where} is {type(value).__name__} {str(value)[:40]!r}, not a number")


def evaluate(spec: str) -> tuple[float, list[str]]:
    """(value, files cited) for a marker's spec: TERM [op TERM] [×N|÷N] (rule 2)."""
    scale = 1.0
    m = re.search(r"\s+([×÷])\s*(\d+(?:\.\d+)?)$", spec)
    if m:
        scale = float(m.group(2)) if m.group(1) == "×" else 1 / float(m.group(2))
        spec = spec[: m.start()]
    parts = re.split(r"\s+([/−-])\s+", spec)
    if len(parts) not in (1, 3):
        raise LookupError(f"cannot read marker {spec!r}")
    values, files = [], []
    current_file = None
    for term in parts[::2]:
        file, _, pointer = term.partition("#")
        file = file.strip() or current_file
        if not file or not _:
            raise LookupError(f"marker term {term!r} needs FILE#POINTER")
        current_file = file
        files.append(file)
        values.append(_number(resolve(load(file), pointer), f"{file}#{pointer}"))
    value = values[0]
    if len(parts) == 3:
        value = value / values[1] if parts[1] == "/" else value - values[1]
    return value * scale, files


def last_key(spec: str) -> str:
    """The last key of a marker's first pointer (`f.json#/a/b − #/c ×100` -> `b`)."""
    first = re.split(r"\s+[/−-]\s+", re.sub(r"\s+[×÷]\s*\d+(?:\.\d+)?$", "", spec))[0]
    return first.partition("#")[2].rsplit("/", 1)[-1]


def printed_value(token: str) -> tuple[float, int]:
    """(value, decimals printed) of a figure as the doc prints it."""
    clean = token.replace(",", "").replace("−", "-").lstrip("+")
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return float(clean), decimals


def equal_at_printed_precision(token: str, value: float) -> bool:
    printed, decimals = printed_value(token)
    # A sign the doc prints is part of the figure; an unsigned figure may print a magnitude.
    if not token.startswith(("-", "−", "+")):
        value = abs(value) if printed >= 0 else value
    return abs(value - printed) <= 0.5 * 10 ** (-decimals) + 1e-9


# -- provenance (rule 4) ------------------------------------------------------------------


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)


@cache
def in_history(sha: str) -> bool:
    """SHA names a commit that is HEAD or an ancestor of it."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", sha):
        return False
    return _git("merge-base", "--is-ancestor", sha, "HEAD").returncode == 0


@cache
def measured_since(sha: str, since: str) -> bool:
    """SHA (a commit of this history) is SINCE or a descendant of it."""
    return _git("merge-base", "--is-ancestor", since, sha).returncode == 0


@cache
def same_commit(a: str, b: str) -> bool:
    full = [_git("rev-parse", "--verify", "--quiet", f"{s}^{{commit}}").stdout.strip() for s in (a, b)]
    return bool(full[0]) and full[0] == full[1]


@cache
def commit_that_added(relative: str) -> str | None:
    out = _git("log", "--diff-filter=A", "--format=%H", "--", f"bench/results/{relative}").stdout.split()
    return out[-1] if out else None


def _walk(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def provenance_problems(relative: str) -> list[str]:
    """What the file lacks to count as evidence measured at a clean commit of this history."""
    data = load(relative)
    problems = []
    if not any(isinstance(c, (str, list)) and c for c in _walk(data, "command")):
        problems.append("records no command")
    shas = [s for s in _walk(data, "git_sha")]
    if not shas:
        problems.append("records no git_sha")
    for sha in shas:
        if not isinstance(sha, str) or not sha:
            problems.append("records an empty git_sha")
        elif sha.endswith("-dirty"):
            problems.append(f"was measured in a dirty tree ({sha})")
        elif not in_history(sha):
            problems.append(f"names git_sha {sha!r}, which is not in this repository's history")
    versions = [v for v in _walk(data, "versions") if isinstance(v, dict) and v]
    if not versions:
        problems.append("records no versions")
    clean = [s for s in shas if isinstance(s, str) and not s.endswith("-dirty") and in_history(s)]
    if (
        versions
        and any(measured_since(s, SERVER_VERSIONS_SINCE) for s in clean)
        and not any({"postgresql", "pgvector"} <= v.keys() for v in versions)
    ):
        problems.append("records no PostgreSQL and pgvector versions (bench/benchlib.py's write_result adds them)")
    if not any(v is not None for v in _walk(data, "load_average")):
        problems.append("records no load_average")
    return problems


def historical_problem(relative: str, sha: str) -> str | None:
    """None when SHA is an honest anchor for an older file (rule 4), else why not."""
    if not in_history(sha):
        return f"historical commit {sha} of {relative} is not in this repository's history"
    named = [s.removesuffix("-dirty") for s in _walk(load(relative), "git_sha") if isinstance(s, str)]
    known = [s for s in named if in_history(s)]
    if known:
        if not any(same_commit(sha, s) for s in known):
            return f"historical commit {sha} of {relative} is not the one the file names ({', '.join(known)})"
        return None
    added = commit_that_added(relative)
    if added is None or not same_commit(sha, added):
        return (
            f"historical commit {sha} of {relative} is not the commit that added the file "
            f"({added[:7] if added else 'not in git'})"
        )
    return None


def check(doc: Path) -> tuple[list[str], list[str]]:
    """(problems, historical files accepted) for DOC."""
    text = doc.read_text()
    problems: list[str] = []
    cited: dict[str, int] = {}
    for fig in figures(text):
        where = f"{doc.name}:{fig.line}"
        if fig.marker is None:
            problems.append(f"{where}: {fig.token} has no result marker")
            continue
        try:
            value, files = evaluate(fig.marker)
        except (LookupError, ValueError, ZeroDivisionError, json.JSONDecodeError) as exc:
            problems.append(f"{where}: {fig.token}: {exc}")
            continue
        for f in files:
            cited.setdefault(f, fig.line)
        if fig.bound and not SETTING_KEY.search(last_key(fig.marker)):
            problems.append(
                f"{where}: {fig.token} is printed as a bound, so it is a setting: write it as code "
                f"(`{fig.token}`) or cite the setting the file records, not {fig.marker}"
            )
            continue
        if not equal_at_printed_precision(fig.token, value):
            problems.append(f"{where}: {fig.token} is not {fig.marker} (which is {value:.6g})")
    declared: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        for m in HISTORICAL.finditer(line):
            declared[m.group("file")] = m.group("sha")
            if not (RESULTS / m.group("file")).is_file():
                problems.append(f"{doc.name}:{i}: historical file {m.group('file')} does not exist")
    historical = []
    for relative, line in sorted(cited.items()):
        if not (RESULTS / relative).is_file():
            continue  # already reported by the figure
        missing = provenance_problems(relative)
        if not missing:
            continue
        if relative in declared:
            problem = historical_problem(relative, declared[relative])
            if problem:
                problems.append(f"{doc.name}: {problem}")
            else:
                historical.append(f"{relative} @ {declared[relative]} ({'; '.join(missing)})")
            continue
        problems.append(
            f"{doc.name}:{line}: {relative} {'; '.join(missing)} "
            f"(re-run it at a clean commit, or declare it '<!-- historical: {relative} @ SHA -->')"
        )
    return problems, historical


def main() -> int:
    parser = argparse.ArgumentParser(description="Fail when a figure in docs/benchmarks.md has no result value.")
    parser.add_argument("doc", nargs="?", default=str(DOC))
    args = parser.parse_args()
    problems, historical = check(Path(args.doc))
    for h in historical:
        print(f"check_results: historical (older commit, not re-run at HEAD): {h}")
    for p in problems:
        print(p)
    if problems:
        print(f"check_results: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check_results: every figure equals the result value its marker names")
    return 0


if __name__ == "__main__":
    sys.exit(main())

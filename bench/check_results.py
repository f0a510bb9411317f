"""Every figure in docs/benchmarks.md's tables must come from a result file in bench/results/.

    python bench/check_results.py            # exit 1 and list what has no evidence

The convention (explicit, so a reader can follow it by hand):

1. Each table in docs/benchmarks.md is preceded, after the section heading or the previous
   table, by one line that cites its evidence:

       Result file: `bench/results/serve_load/load.json`
       Result files: `bench/results/h200/*.json`, `bench/results/shakespeare/cpu_2000_genloom.json`

   (paths relative to the repository root; globs allowed; every path must match a file).
2. Every number in the table's body cells (not the header row) must appear in one of those
   files: as a JSON number, or inside a JSON string, equal at the precision the table prints
   it (0.7338 matches 0.73384; 15.5 matches 15.46). A figure may be printed in other units
   than stored: ×100 (a share printed as a percentage), ×1000 or ÷1000 (seconds and
   milliseconds). Thousands separators are ignored (1,349 is 1349).
3. Numbers in `code spans` (commands, settings such as `channels=64`) are not figures and are
   not checked; nor are numbers glued to a word (p50, nDCG@10, H200, bf16, MiniLM-L6).
4. A table that quotes no measurement (a list of checks and their targets, say) says so
   explicitly, and is then not checked:

       Result file: none (targets and settings, no measured figures)

A table with no citation, a citation of a missing file, or a number found in none of its
files fails the check. Run by .ci/run.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
CITATION = re.compile(r"^Result files?:\s*(.+)$")
# A number standing alone: not preceded by a letter, digit, '@', '_', '.', or a hyphen glued to a word.
NUMBER = re.compile(r"(?<![\w@.])(?<![A-Za-z]-)([−-]?\d[\d,]*(?:\.\d+)?)(?![\w.]*[A-Za-z_@]\d)")
FACTORS = (1.0, 100.0, 1000.0, 0.001)


def numbers_in_cell(cell: str) -> list[str]:
    cell = re.sub(r"`[^`]*`", " ", cell)  # code spans: commands and settings, not figures
    cell = cell.replace("**", "").replace("*", "")
    found = []
    for m in NUMBER.finditer(cell):
        token = m.group(1)
        end = m.end(1)
        if end < len(cell) and (cell[end].isalpha() and cell[end:end + 1] in "eE" and cell[end + 1:end + 2].isdigit()):
            continue  # 1e-3: a setting, written in code style elsewhere
        if re.fullmatch(r"[−-]?\d{1,3}(,\d{3})+(\.\d+)?|[−-]?\d+(\.\d+)?", token) is None:
            continue  # "1,2" or "0,1,2": a list, not a figure
        found.append(token)
    return found


def value_of(token: str) -> tuple[float, int]:
    """(value, decimals printed)."""
    clean = token.replace(",", "").replace("−", "-")
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return float(clean), decimals


def json_numbers(obj, out: list[float]) -> None:
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        out.append(float(obj))
    elif isinstance(obj, str):
        out.extend(float(t.replace(",", "")) for t in re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", obj)
                   if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?([eE][-+]?\d+)?|-?\d+(\.\d+)?([eE][-+]?\d+)?", t))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            json_numbers(key, out)
            json_numbers(value, out)
    elif isinstance(obj, list):
        for value in obj:
            json_numbers(value, out)


def load_numbers(path: Path) -> list[float]:
    """Every number in a JSON file, or in a stream of JSON documents (.jsonl, or several
    pretty-printed objects one after another)."""
    out: list[float] = []
    text = path.read_text()
    decoder = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        json_numbers(obj, out)
    return out


def matches(token: str, values: list[float]) -> bool:
    x, decimals = value_of(token)
    tolerance = 0.5 * 10 ** (-decimals) + 1e-9
    for v in values:
        for f in FACTORS:
            if abs(v * f - x) <= tolerance:
                return True
    return False


def tables(lines: list[str]):
    """(first line number, citation line or None, header row, body rows) for each table."""
    i = 0
    citation = None
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            citation = None
        elif CITATION.match(line.strip()):
            citation = (i + 1, line.strip())
        if line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            start = i
            header = line
            body = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append((i + 1, lines[i]))
                i += 1
            yield start + 1, citation, header, body
            citation = None
            continue
        i += 1


def cited_files(citation: str) -> tuple[list[Path], list[str]]:
    paths, missing = [], []
    for pattern in re.findall(r"`([^`]+)`", CITATION.match(citation).group(1)):
        hits = sorted(glob.glob(str(REPO / pattern)))
        if not hits or not pattern.startswith("bench/results/"):
            missing.append(pattern)
        paths.extend(Path(h) for h in hits if h.endswith((".json", ".jsonl")))
    return paths, missing


def check(doc: Path) -> list[str]:
    problems = []
    lines = doc.read_text().splitlines()
    for start, citation, _header, body in tables(lines):
        if citation is None:
            problems.append(f"{doc.name}:{start}: table cites no result file (add a 'Result file: `bench/results/…`' line)")
            continue
        if re.match(r"^Result files?:\s*none\b", citation[1]):
            continue  # declared to hold no measured figures (rule 4)
        files, missing = cited_files(citation[1])
        for pattern in missing:
            problems.append(f"{doc.name}:{citation[0]}: cited result file {pattern} does not exist")
        values: list[float] = []
        for path in files:
            values.extend(load_numbers(path))
        for lineno, row in body:
            cells = [c for c in row.strip().strip("|").split("|")]
            for cell in cells:
                for token in numbers_in_cell(cell):
                    if not matches(token, values):
                        problems.append(f"{doc.name}:{lineno}: {token} is in none of {', '.join(p.name for p in files) or 'the cited files'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description="Fail when a figure in docs/benchmarks.md's tables has no result file.")
    parser.add_argument("doc", nargs="?", default=str(DOC))
    args = parser.parse_args()
    problems = check(Path(args.doc))
    for p in problems:
        print(p)
    if problems:
        print(f"check_results: {len(problems)} figure(s) without evidence", file=sys.stderr)
        return 1
    print("check_results: every table figure has a result file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A new user's ten questions on a documentation folder: the trained reader vs the sentence ranking.

    nice -n 10 python bench/reader_tally.py --reader MODEL_DIR_OR_NAME [--reader-home HOME]

Copies ten package documents from /usr/share/doc into a scratch folder, ingests them under a
scratch GENLOOM_HOME, and asks ten questions through `genloom ask` twice: with the extractive
backend's sentence ranking (`--model extractive`, the baseline) and with the trained reader
(`--model READER`). Five questions are answered by the folder (an expected span each), five are
not (the honest answer is to abstain). Judged mechanically:
- answerable: **right** when the answer's span (before its `[n]`) contains the expected answer and is at
  most 12 words, **partial** when the answer contains it but is longer (a whole sentence) or SQuAD
  token F1 ≥ 0.3, **wrong** otherwise (an abstention is wrong);
- unanswerable: **abstained** or not.
Each abstention records which score fell short (`abstention`: the reader's margin over its no-answer
score, or its passage's relevance, with the calibrated threshold), as `ask --json` reports it.
Writes bench/results/reader/tally.json (answers included, so the judging can be read).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
for path in (ROOT / "platform", ROOT):
    sys.path.insert(0, str(path))
from benchlib import write_result  # noqa: E402

DOCS = [
    "base-passwd/README",
    "python3-httplib2/README.md",
    "libsodium23/README.markdown",
    "libmpfr6/README",
    "python3-yaml/README.md",
    "zstd/TESTING.md",
    "procps/bugs.md",
    "dpkg/spec/triggers.txt",
    "gzip/TODO",
    "libnettle8/README",
]
ANSWERABLE = [
    ("Which range of uids and gids does update-passwd keep consistent with the Debian master copies?", "0-99"),
    ("Which types of HTTP authentication does httplib2 support?", "Digest"),
    ("What is Sodium a fork of?", "NaCl"),
    ("In which range are the static uid/gid pairs created by packages allocated?", "60000-64999"),
    ("Which types of compression does httplib2 handle?", "deflate"),
]
UNANSWERABLE = [
    "What is the default port of PostgreSQL?",
    "Who won the 2018 FIFA World Cup?",
    "What is libtasn1 used for?",
    "How much memory does the Linux kernel need to boot?",
    "Which licence does Firefox use?",
]
ABSTAIN = "The sources do not answer this."


def cli(*args, home: Path) -> dict:
    env = {**os.environ, "GENLOOM_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args), "--json"], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def judge(answer: str, expected: str) -> str:
    from genloom.evaluation.rag import f1_score, normalize_answer

    if answer == ABSTAIN:
        return "wrong"
    span = answer.split(" [")[0]
    if normalize_answer(expected) in normalize_answer(span) and len(span.split()) <= 12:
        return "right"
    if normalize_answer(expected) in normalize_answer(answer) or f1_score(span, expected) >= 0.3:
        return "partial"
    return "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", required=True, help="the trained reader: a folder, or NAME@V in --reader-home")
    parser.add_argument("--docs", type=Path, default=Path("/usr/share/doc"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="genloom-tally-"))
    folder = home / "docs"
    for rel in DOCS:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.docs / rel, folder / rel)
    ingested = cli("ingest", folder, "--collection", "docs", home=home)
    result: dict = {"benchmark": "reader_tally", "documents": DOCS, "ingest": ingested, "runs": {}}
    for label, model in (("sentence_ranking", "extractive"), ("reader", args.reader)):
        rows = []
        for q, expected in ANSWERABLE:
            out = cli("ask", q, "-c", "docs", "--model", model, home=home)
            rows.append(
                {
                    "question": q,
                    "expected": expected,
                    "answer": out["answer"],
                    "verdict": judge(out["answer"], expected),
                    **({"abstention": out["abstention"]} if out.get("abstention") else {}),
                }
            )
        for q in UNANSWERABLE:
            out = cli("ask", q, "-c", "docs", "--model", model, home=home)
            row = {"question": q, "expected": None, "answer": out["answer"], "abstained": out["answer"] == ABSTAIN}
            if out.get("abstention"):  # which score fell short: the reader's margin or the passage's relevance
                row["abstention"] = out["abstention"]
            rows.append(row)
        verdicts = [r["verdict"] for r in rows if r["expected"]]
        result["runs"][label] = {
            "model": model,
            "right": verdicts.count("right"),
            "partial": verdicts.count("partial"),
            "wrong": verdicts.count("wrong"),
            "unanswerable_abstained": sum(bool(r.get("abstained")) for r in rows if r["expected"] is None),
            "unanswerable": len(UNANSWERABLE),
            "answers": rows,
        }
    path = write_result("reader/tally.json", result, env={**os.environ, "GENLOOM_HOME": str(home)})
    print(
        json.dumps(
            {
                k: {x: v[x] for x in ("right", "partial", "wrong", "unanswerable_abstained")}
                for k, v in result["runs"].items()
            },
            indent=2,
        )
    )
    print(path)
    subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "db", "stop"],
        env={**os.environ, "GENLOOM_HOME": str(home)},
        capture_output=True,
    )


if __name__ == "__main__":
    main()

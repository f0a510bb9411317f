"""PII recognizers on a planted corpus: recall and precision per type, and throughput.

A seeded generator writes documents of filler prose with planted values of every type in
the formats people write them (grouped and ungrouped cards, spaced and compact IBANs of four
countries, IPv4 and compressed IPv6, international and national phone formats, SSNs and
NINOs) and hard negatives that look alike but are not PII: Luhn-invalid card-length numbers,
IBANs with wrong check digits, dates, times, versions, ISBNs, prices, out-of-range quads.
A finding counts as found when a prediction of the same type overlaps the planted span.

    nice -n 10 python bench/pii_planted.py --docs 3000 --out bench/results/pii/pii_planted.json
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform as host_platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

from genloom.pii import TYPES, detect

WORDS = [
    "the",
    "account",
    "was",
    "opened",
    "after",
    "review",
    "and",
    "the",
    "customer",
    "asked",
    "about",
    "fees",
    "for",
    "the",
    "transfer",
    "we",
    "noted",
    "that",
    "service",
    "resumed",
    "on",
    "schedule",
    "while",
    "the",
    "team",
    "checked",
    "records",
    "before",
    "closing",
    "the",
    "ticket",
]
FIRST = ["jane", "li", "omar", "ana", "kofi", "marta", "ravi", "eva", "tom", "yuki"]
LAST = [
    "roe",
    "wang",
    "haddad",
    "silva",
    "mensah",
    "kowalska",
    "iyer",
    "berg",
    "hughes",
    "sato",
]
DOMAINS = [
    "example.org",
    "mail.example.com",
    "corp.example.net",
    "uni.example.ac.uk",
    "example.de",
]


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(r: random.Random, valid: bool = True) -> str:
    prefix, length = r.choice(
        [("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)]
    )
    body = prefix + "".join(
        str(r.randrange(10)) for _ in range(length - len(prefix) - 1)
    )
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + r.randrange(1, 10)) % 10)
    digits = body + check
    style = r.choice(["space", "dash", "none"])
    groups = (
        [digits[:4], digits[4:10], digits[10:]]
        if length == 15
        else [digits[i : i + 4] for i in range(0, 16, 4)]
    )
    return {"space": " ".join(groups), "dash": "-".join(groups), "none": digits}[style]


def iban(r: random.Random, valid: bool = True) -> str:
    country, bban = r.choice(
        [
            ("DE", "".join(str(r.randrange(10)) for _ in range(18))),
            (
                "GB",
                "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
                + "".join(str(r.randrange(10)) for _ in range(14)),
            ),
            ("FR", "".join(str(r.randrange(10)) for _ in range(23))),
            (
                "NL",
                "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
                + "".join(str(r.randrange(10)) for _ in range(10)),
            ),
        ]
    )
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - numeric % 97
    if not valid:
        check = (check + r.randrange(1, 96)) % 97 or 1
        check = check if check != 98 - numeric % 97 else (check + 1) % 97
    code = f"{country}{check:02d}{bban}"
    return (
        " ".join(code[i : i + 4] for i in range(0, len(code), 4))
        if r.random() < 0.6
        else code
    )


def phone(r: random.Random) -> str:
    d = lambda n: "".join(str(r.randrange(10)) for _ in range(n))
    return r.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"+1 ({r.randrange(201, 990)}) {d(3)}-{d(4)}",
            f"({r.randrange(201, 990)}) {d(3)}-{d(4)}",
            f"{r.randrange(201, 990)}-{d(3)}-{d(4)}",
            f"{r.randrange(201, 990)}.{d(3)}.{d(4)}",
            f"020 {d(4)} {d(4)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+49 30 {d(4)} {d(4)}",
            f"+91 {d(5)} {d(5)}",
        ]
    )


def ip(r: random.Random) -> str:
    if r.random() < 0.7:
        return ".".join(str(r.randrange(256)) for _ in range(4))
    return str(
        ipaddress.IPv6Address(
            r.getrandbits(128) & ~((1 << 64) - 1)
            if r.random() < 0.5
            else r.getrandbits(128)
        )
    )


def national_id(r: random.Random) -> str:
    if r.random() < 0.6:
        area = r.choice([n for n in range(1, 900) if n != 666])
        return f"{area:03d}-{r.randrange(1, 100):02d}-{r.randrange(1, 10000):04d}"
    first, second = r.choice("ABCEGHJKLMNPRSTWXYZ"), r.choice("ABCEGHJKLMNPRSTWXYZ")
    while first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        second = r.choice("ABCEGHJKLMNPRSTWXYZ")
    nums = [f"{r.randrange(100):02d}" for _ in range(3)]
    sep = " " if r.random() < 0.5 else ""
    return f"{first}{second}{sep}{sep.join(nums)}{sep}{r.choice('ABCD')}"


def email(r: random.Random) -> str:
    f, l_ = r.choice(FIRST), r.choice(LAST)
    local = r.choice(
        [f"{f}.{l_}", f"{f}_{l_}{r.randrange(100)}", f"{f[0]}{l_}+news", f"{l_}.{f}"]
    )
    return f"{local}@{r.choice(DOMAINS)}"


POSITIVE = {
    "email": email,
    "phone": phone,
    "card": card,
    "iban": iban,
    "ip": ip,
    "national_id": national_id,
}


def negative(r: random.Random) -> str:
    d = lambda n: "".join(str(r.randrange(10)) for _ in range(n))
    return r.choice(
        [
            card(r, valid=False),
            iban(r, valid=False),
            f"2026-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}",
            f"{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}",
            f"v{r.randrange(10)}.{r.randrange(20)}.{r.randrange(50)}",
            f"978-{d(1)}-{d(2)}-{d(6)}-{d(1)}",
            f"${r.randrange(1, 99)},{d(3)}.{d(2)}",
            f"order #{d(8)}",
            f"{r.randrange(300, 999)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}",
            f"666-{d(2)}-{d(4)}",
            f"{d(5)}",
            f"room {d(3)}-{d(2)}",
        ]
    )


NEGATIVES = [0]


def make_doc(r: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    text, gold = "", []
    for _ in range(r.randrange(3, 7)):
        words = [r.choice(WORDS) for _ in range(r.randrange(6, 14))]
        sentence = " ".join(words).capitalize()
        roll = r.random()
        if roll < 0.6:
            kind = r.choice(list(POSITIVE))
            value = POSITIVE[kind](r)
            lead = f"{sentence} {r.choice(['see', 'contact', 'ref', 'noted:'])} "
            gold.append(
                (kind, len(text) + len(lead), len(text) + len(lead) + len(value))
            )
            sentence = lead + value
        elif roll < 0.85:
            sentence = f"{sentence} {negative(r)}"
            NEGATIVES[0] += 1
        text += sentence + r.choice([". ", ".\n", "; ", ". "])
    return text, gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/pii/pii_planted.json"
    )
    args = parser.parse_args()
    r = random.Random(args.seed)
    docs = [make_doc(r) for _ in range(args.docs)]
    counts = {t: {"tp": 0, "fp": 0, "fn": 0} for t in TYPES}
    started = time.perf_counter()
    predictions = [detect(text) for text, _ in docs]
    seconds = time.perf_counter() - started
    for (text, gold), found in zip(docs, predictions):
        matched = set()
        for f in found:
            hit = next(
                (
                    i
                    for i, (k, s, e) in enumerate(gold)
                    if k == f.type and f.start < e and s < f.end and i not in matched
                ),
                None,
            )
            if hit is None:
                counts[f.type]["fp"] += 1
            else:
                matched.add(hit)
                counts[f.type]["tp"] += 1
        for i, (k, _, _) in enumerate(gold):
            if i not in matched:
                counts[k]["fn"] += 1
    per_type = {}
    for t, c in counts.items():
        per_type[t] = {
            **c,
            "planted": c["tp"] + c["fn"],
            "recall": round(c["tp"] / max(1, c["tp"] + c["fn"]), 4),
            "precision": round(c["tp"] / max(1, c["tp"] + c["fp"]), 4),
        }
    total_chars = sum(len(t) for t, _ in docs)
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        sha = None
    out = {
        "benchmark": "pii_planted",
        "machine": {
            "cpus": os.cpu_count(),
            "python": host_platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "git_sha": sha,
        "seed": args.seed,
        "documents": args.docs,
        "characters": total_chars,
        "planted": sum(v["planted"] for v in per_type.values()),
        "look_alikes": NEGATIVES[0],
        "types": per_type,
        "detect_seconds": round(seconds, 3),
        "throughput_mb_per_s": round(total_chars / 1e6 / seconds, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

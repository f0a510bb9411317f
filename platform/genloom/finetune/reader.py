"""The reader: an extractive span head on the shipped encoder, and the abstention it is calibrated with.

The encoder's transformer reads "[CLS] question [SEP] passage window [SEP]" and a fresh linear
head gives every token a start and an end logit (Devlin et al. 2019, BERT for SQuAD). The answer
is the passage span with the highest start + end logit (end ≥ start, at most `max_answer_tokens`);
the [CLS] position is the no-answer: its start + end logit is the null score, and the reader
abstains when the best span beats it by less than the calibrated `threshold` (SQuAD 2.0's
null-score-difference rule). Passages longer than a window are read in overlapping windows
(`stride` tokens of overlap), each scored on its own.

Training (genloom train reader) uses the one fine-tuning path of genloom.finetune: its config,
schedule, batches and optimiser step. Records are SQuAD-shaped question/context/answers items
(genloom.datasets.squad); each question is trained on the window that holds its answer, and a
share of questions (`negatives` per 4) is also paired with another paragraph of its article with
the [CLS] position as the target, so the null score learns what "not here" looks like.

Calibration (`calibrate`) reads held-out questions twice: with their own paragraph (answerable)
and with a paragraph of another article (unanswerable). Each reading gives two scores: the reader's
margin over its no-answer score, and the passage's retrieval relevance (generation.reader.relevance).
It chooses the pair of thresholds that abstains on the most unanswerable questions while keeping
abstention on the answerable ones within the target (0.1 by default, 0.08 chosen to leave room for
held-out error); both are stored with the model in reader.json, with the margin-only figures beside
them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from genloom.finetune.config import FinetuneConfig, batches, lr_at, optimizer_step, run_stats
from genloom.generation.reader import ROLE, ReaderSettings, SpanReader, relevance, windows

# --------------------------------------------------------------------------- training


def _answer_of(record: dict) -> tuple[int, int] | None:
    """(start, end) characters of the record's first answer in its context, or None."""
    for a in record.get("answers") or []:
        text, start = a.get("text") or "", a.get("answer_start")
        ctx = record["context"]
        if start is None or ctx[start : start + len(text)] != text:
            start = ctx.find(text) if text else -1
        if text and start >= 0:
            return start, start + len(text)
    return None


def training_examples(records: list[dict], settings: ReaderSettings, negatives: int, seed: int) -> list[dict]:
    """One example per answerable question ({"question", "context", "answer": (start, end)}), and for
    `negatives` questions in 4 also the question with another paragraph of its article (answer None).
    """
    rng = random.Random(seed)
    by_title: dict[str, list[str]] = {}
    for r in records:
        paragraphs = by_title.setdefault(r.get("title") or "", [])
        if r["context"] not in paragraphs:
            paragraphs.append(r["context"])
    examples = []
    for r in records:
        answer = _answer_of(r)
        examples.append({"question": r["question"], "context": r["context"], "answer": answer})
        others = [c for c in by_title.get(r.get("title") or "", []) if c != r["context"]]
        if others and rng.random() < negatives / 4:
            examples.append({"question": r["question"], "context": rng.choice(others), "answer": None})
    return examples


def _targets(encoding, examples: list[dict]) -> tuple[list[int], list[int], list[int]]:
    """For each example: the window to train on, and its start/end token (0, the [CLS], for none).

    An answerable example trains on a window that holds the whole answer (the first such); an
    unanswerable one on its first window."""
    chosen: dict[int, tuple[int, int, int]] = {}
    for w in range(len(encoding["input_ids"])):
        i = int(encoding["overflow_to_sample_mapping"][w])
        if i in chosen:
            continue
        answer = examples[i]["answer"]
        if answer is None:
            chosen[i] = (w, 0, 0)
            continue
        a, b = answer
        seq = encoding.sequence_ids(w)
        offsets = encoding["offset_mapping"][w].tolist()
        toks = [t for t, sid in enumerate(seq) if sid == 1]
        if not toks or offsets[toks[0]][0] > a or offsets[toks[-1]][1] < b:
            continue  # the answer is not (wholly) in this window
        start = next(t for t in toks if offsets[t][1] > a)
        end = next(t for t in reversed(toks) if offsets[t][0] < b)
        chosen[i] = (w, start, end)
    rows = [chosen[i] for i in sorted(chosen)]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def train_reader(
    base: Path,
    records: list[dict],
    out: Path,
    config: FinetuneConfig,
    progress: Callable[[int, int, float], None] | None = None,
    settings: ReaderSettings | None = None,
) -> dict:
    """Train a span reader from the encoder in `base` on SQuAD-shaped records; save a HF folder to `out`
    (with reader.json; calibrate() sets its threshold)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from genloom.devices import configure_cpu_threads

    config.check()
    settings = settings or ReaderSettings(max_length=min(config.max_length, 512))
    configure_cpu_threads()  # torch's default (every core) crawls when other processes share them
    torch.manual_seed(config.seed)
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the span head, on purpose
    model = AutoModelForQuestionAnswering.from_pretrained(str(base), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    # The word embeddings (half of MiniLM's 22M weights) stay as they are: a few thousand questions
    # cannot improve them, and their Adam state and update are a third of a CPU step.
    model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    examples = training_examples(records, settings, config.negatives, config.seed)
    total = config.total_steps(len(examples))
    started = time.perf_counter()
    losses: list[float] = []
    for step, batch in enumerate(batches(examples, config, total)):
        elapsed = time.perf_counter() - started
        if config.max_seconds is not None and elapsed > config.max_seconds:
            break
        # With a time budget the schedule follows whichever runs out first, steps or seconds: the
        # learning rate still warms up and decays to 0 when a slow machine stops the run early.
        at = step if config.max_seconds is None else max(step, int(total * elapsed / config.max_seconds))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(min(at, total - 1), total, config)
        enc = windows(tokenizer, [x["question"] for x in batch], [x["context"] for x in batch], settings)
        rows, starts, ends = _targets(enc, batch)
        if not rows:
            continue
        # the windows were padded to the longest of all; the chosen ones may be shorter (cost is per token)
        width = int(enc["attention_mask"][rows].sum(dim=1).max())
        out_ = model(
            input_ids=enc["input_ids"][rows, :width],
            attention_mask=enc["attention_mask"][rows, :width],
            token_type_ids=enc["token_type_ids"][rows, :width] if "token_type_ids" in enc else None,
            start_positions=torch.tensor(starts),
            end_positions=torch.tensor(ends),
        )
        losses.append(optimizer_step(model, optimizer, out_.loss))
        if progress:
            progress(step + 1, total, losses[-1])
    model.eval()
    model.config.genloom_role = ROLE
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    settings.save(out)
    return {**run_stats(losses, started), "examples": len(examples), "planned_steps": total}


# --------------------------------------------------------------------------- calibration


def planted_unanswerable(records: list[dict], seed: int) -> list[dict]:
    """Each record's question with a paragraph of another article: a question its passage cannot answer."""
    rng = random.Random(seed)
    titles = sorted({r.get("title") or "" for r in records})
    by_title: dict[str, list[str]] = {}
    for r in records:
        by_title.setdefault(r.get("title") or "", []).append(r["context"])
    out = []
    for r in records:
        others = [t for t in titles if t != (r.get("title") or "")]
        if not others:
            continue
        out.append({**r, "context": rng.choice(by_title[rng.choice(others)]), "answers": []})
    return out


def margins(reader: SpanReader, records: list[dict]) -> list[tuple[float, float]]:
    """(margin, relevance) of each record's question read against its context alone: the best span's
    margin over the null score, and the context's retrieval relevance (generation.reader.relevance)."""
    out = []
    for r in records:
        span = reader.read(r["question"], [r["context"]])
        out.append((span.margin if span else float("-inf"), relevance(r["question"], r["context"])))
    return out


def choose_threshold(answerable: list[float], unanswerable: list[float], max_abstain: float) -> float:
    """The margin threshold alone (no relevance gate): choose_thresholds with every relevance equal."""
    return choose_thresholds([(m, 0.0) for m in answerable], [(m, 0.0) for m in unanswerable], max_abstain)[0]


def abstains(point: tuple[float, float], threshold: float, min_relevance: float | None) -> bool:
    margin, rel = point
    return margin < threshold or (min_relevance is not None and rel < min_relevance)


def choose_thresholds(
    answerable: list[tuple[float, float]], unanswerable: list[tuple[float, float]], max_abstain: float
) -> tuple[float, float | None]:
    """(threshold, min_relevance) over (margin, relevance) points: of the pairs that abstain on at most
    `max_abstain` of the answerable questions, the one abstaining on the most unanswerable ones, and of
    those the one abstaining on the fewest answerable ones: budget that catches no more unanswerable
    questions is not spent (SQuAD 2.0's best threshold, with the answerable abstention capped).

    Each candidate relevance gate is an answerable relevance (or none); the gate spends part of the
    abstention budget and the margin threshold the rest: each candidate threshold is one of the kept
    answerable margins, abstaining on the ones below it."""
    if not answerable:
        return 0.0, None
    budget = int(max_abstain * len(answerable))
    # (unanswerable caught, −answerable abstentions, threshold, gate): the largest wins; no gate on a tie
    best: tuple[int, int, float, float | None] | None = None
    gates: list[float | None] = [None, *sorted(rel for _, rel in answerable)[: budget + 1]]
    for gate in gates:
        kept = sorted(m for m, rel in answerable if gate is None or rel >= gate)
        spent = len(answerable) - len(kept)
        if spent > budget or not kept:
            continue
        for below in range(min(budget - spent, len(kept) - 1) + 1):  # the margin threshold's abstentions
            threshold = kept[below]
            caught = sum(abstains(p, threshold, gate) for p in unanswerable)
            candidate = (caught, -(spent + below), threshold, gate)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    assert best is not None  # the gate None spends nothing
    return best[2], best[3]


def calibrate(
    folder: Path, records: list[dict], *, target: float = 0.1, margin: float = 0.02, seed: int = 0, limit: int = 400
) -> dict:
    """Choose the reader's no-answer threshold and relevance gate on (a seeded sample of `limit`)
    held-out records; store them in reader.json (choose_thresholds: the answerable abstention stays
    within `target` less `margin`, for held-out error, and is not spent where it catches nothing)."""
    reader = SpanReader(folder)
    answerable = [r for r in records if _answer_of(r) is not None]
    if len(answerable) > limit:
        answerable = random.Random(seed).sample(answerable, limit)
    planted = planted_unanswerable(answerable, seed)
    pos = margins(reader, answerable)
    neg = margins(reader, planted)
    max_abstain = max(0.0, target - margin)
    threshold, min_relevance = choose_thresholds(pos, neg, max_abstain)
    margin_only = choose_threshold([m for m, _ in pos], [m for m, _ in neg], max_abstain)

    def share(points: list[tuple[float, float]], t: float, gate: float | None) -> float:
        return round(sum(abstains(p, t, gate) for p in points) / max(1, len(points)), 4)

    calibration = {
        "questions": len(pos),
        "unanswerable": len(neg),
        "target_answerable_abstention": target,
        "answerable_abstention": share(pos, threshold, min_relevance),
        "unanswerable_abstention": share(neg, threshold, min_relevance),
        # the same questions with the no-answer score alone: what the relevance gate adds
        "margin_only_threshold": round(float(margin_only), 4),
        "margin_only_answerable_abstention": share(pos, margin_only, None),
        "margin_only_unanswerable_abstention": share(neg, margin_only, None),
    }
    settings = reader.settings
    settings.threshold = round(float(threshold), 4)
    settings.min_relevance = None if min_relevance is None else round(float(min_relevance), 4)
    settings.calibration = calibration
    settings.save(folder)
    return {"threshold": settings.threshold, "min_relevance": settings.min_relevance, **calibration}

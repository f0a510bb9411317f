"""How `genloom demo` draws each step's result on stderr (the steps in genloom.demo_steps only compute).

One function per step that has its own view; a step without one is shown as a panel of
its result's keys and values (see cli/demo.py).
"""

from __future__ import annotations

from rich.markup import escape
from rich.panel import Panel

from genloom.cli.output import err_console


def render_retrieval(result: dict) -> None:
    err_console.print(
        f"collection [bold]demo[/bold]: {result['ingested']} documents ingested, {result['unchanged']} unchanged"
    )
    err_console.print(f"query: [italic]{escape(result['query'])}[/italic]")
    for row in result["rows"]:
        err_console.print(
            f"  {row['rank']}. {row['score']:.4f}  [cyan]{escape(row['doc'])}[/cyan]  {escape(row['title'] or '')}"
            f"  [dim](bm25 #{row['bm25_rank'] or '-'}, vector #{row['vector_rank'] or '-'})[/dim]",
            highlight=False,
        )


def render_generation(result: dict) -> None:
    lines = [f"[bold]Q:[/bold] {escape(result['question'])}", f"[bold]A:[/bold] {escape(result['answer'])}", ""]
    for c in result["citations"]:
        lines.append(escape(f"  [{c['n']}] {c['location']}"))
    check = result["check"]
    verdict = "[green]right[/green]" if check["correct"] else "[red]not right[/red]"
    lines += [
        "",
        f"check: {verdict} (expected {escape(repr(check['expected_span']))} citing {escape(check['expected_source'])}: "
        f"span {'present' if check['span_present'] else 'absent'}, "
        f"source {'cited' if check['cites_source'] else 'not cited'}); the feedback records this check",
        f"answered by: {escape(result['model'])}"
        + (f" · {escape(result['backend_note'])}" if result["backend_note"] else ""),
    ]
    t = result["timings_ms"]
    lines += [
        "",
        f"generation {result['generation_id']} · session {result['session_id']} · feedback {result['feedback_id']} · "
        f"{t['total']:.0f} ms (retrieval {t['retrieval']:.0f} ms)",
        f"next: genloom generations show {result['generation_id']}",
    ]
    err_console.print(Panel.fit("\n".join(lines)))


def render_evaluation(result: dict) -> None:
    lines = [
        f"dedup {result['dedup_input']} ({result['dedup_methods']}, dry run): {result['duplicates_found']} duplicates "
        f"{result['by_method']}; {result['leaked_val_test_items']} val/test items leak from train",
    ]
    if "fid" in result:
        lines += [
            f"demo-vae vs digits (features {result['features']}): FID {result['fid']} (real-vs-real floor "
            f"{result['fid_floor']}), KID {result['kid']}",
            f"precision {result['precision']}  recall {result['recall']}  density {result['density']}  "
            f"coverage {result['coverage']}  mode coverage {result['mode_coverage']}",
            f"VAE anomaly AUROC (corrupted vs clean test digits): {result['anomaly_auroc_corrupted']}",
            f"SQL: SELECT name, value FROM metrics WHERE run_id = {result['eval_run']};",
        ]
    else:
        lines.append(result.get("eval", ""))
    err_console.print(Panel.fit("\n".join(lines)))


def render_analytics(result: dict) -> None:
    from genloom.cli.summary_render import render_summary

    render_summary(result["summary"], err_console)
    missing = (
        f" · no data yet for: {', '.join(result['sections_without_data'])}" if result["sections_without_data"] else ""
    )
    err_console.print(f"report: [bold]{result['report']}[/bold] ({result['plots']} plots{missing})")
    err_console.print(
        'try: [bold]genloom sql "SELECT * FROM v_model_stats"[/bold] · '
        '[bold]genloom sql "SELECT score, question, sources FROM v_feedback_explained WHERE score <= 2"[/bold]'
    )


RENDERERS = {
    "retrieval": render_retrieval,
    "generation": render_generation,
    "evaluation": render_evaluation,
    "analytics": render_analytics,
}

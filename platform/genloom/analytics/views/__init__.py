"""The analytics views, in the order docs/analytics.md documents them.

The SQL lives in migration 0007 (views are schema); this is the list people and
`genloom analytics views` read.
"""

from __future__ import annotations

VIEWS: dict[str, str] = {
    "v_model_stats": "per model (name, revision, registry id): generations, error rate, feedback rate, mean score, "
    "thumbs-up share, p50/p95 latency (retrieval, generation, total), tokens/s",
    "v_template_stats": "the same figures per prompt template version",
    "v_daily": "per UTC day: generations, errors, active and new sessions, feedback, mean score",
    "v_model_daily": "per UTC day and model: generations, errors, mean latency, feedback on them, mean score",
    "v_chunk_citations": "per cited chunk: citations (answers citing it), mean rank, mean feedback of the answers citing it",
    "v_document_citations": "per cited document version: citations, answers, mean feedback of the answers citing it",
    "v_documents_never_cited": "current document versions no answer has cited",
    "v_feedback_explained": "why was this answer bad: feedback → generation → prompt → session → sources → model "
    "→ training run → training dataset version, one row per feedback",
    "v_feedback_sources": "the same, one row per (feedback, cited chunk)",
    "v_dataset_versions": "per dataset version: real/synthetic/augmented counts, splits, parent, creating run, "
    "models that sampled into it",
    "v_dataset_lineage": "everything upstream of a dataset version (recursive): parents, and the training "
    "versions of models whose samples it holds",
    "v_run_final_metrics": "per run and metric: the final value (the step-NULL row, else the last step)",
    "v_runs": "per run: kind, status, model, input/output dataset versions, duration, final metrics as JSON",
    "v_leaderboard": "per dataset version and metric: each model's latest succeeded value, ranked",
}

"""analytics: issue 8: analytics views and the read-only role

The views make the common questions one SELECT away (docs/analytics.md documents each
with an example query). `genloom sql` runs user SQL as `genloom_reader`, a LOGIN role
with SELECT grants only, so Postgres itself refuses writes.

Roles are cluster-wide while grants are per database: the role is created once (a
concurrent migration of another database may win the race, which is fine) and every
database that migrates grants it SELECT. A migrating user without CREATEROLE (a managed
server) skips the role with a NOTICE; docs/analytics.md says how to provision it.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

READER = "genloom_reader"

# Most views aggregate the big tables (generations, generation_sources, feedback) once
# per group first and join the small results afterwards: at 1M generations that keeps
# the per-model view to one sequential scan plus one sort per latency column.
VIEWS: list[tuple[str, str]] = [
    (
        # The three latency columns are one UNION ALL, so Postgres aggregates them side by
        # side (Parallel Append) instead of one after another; each is read in (model,
        # value) order from its own index (index-only, so percentile_cont's input arrives
        # sorted; the total_ms index also INCLUDEs what the counts need). Feedback is
        # aggregated over the feedback table. Nothing sorts the log: docs/benchmarks.md.
        "v_model_stats",
        """
WITH parts AS (
    SELECT 1 AS part, model_name, model_revision, model_id,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY total_ms) AS q,
           count(*) AS generations,
           count(*) FILTER (WHERE status = 'error') AS errors,
           sum(output_tokens) FILTER (WHERE status = 'ok' AND generation_ms > 0) AS out_tokens,
           sum(generation_ms) FILTER (WHERE status = 'ok' AND output_tokens IS NOT NULL) AS gen_ms,
           min(created_at) AS first_at, max(created_at) AS last_at
    FROM generations GROUP BY model_name, model_revision, model_id
    UNION ALL
    SELECT 2, model_name, model_revision, model_id,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY retrieval_ms),
           NULL, NULL, NULL, NULL, NULL, NULL
    FROM generations GROUP BY model_name, model_revision, model_id
    UNION ALL
    SELECT 3, model_name, model_revision, model_id,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY generation_ms),
           NULL, NULL, NULL, NULL, NULL, NULL
    FROM generations GROUP BY model_name, model_revision, model_id
), f AS (
    SELECT g.model_name, g.model_revision, g.model_id,
           count(*) AS feedback, sum(fb.score) AS score_sum, count(fb.score) AS scores,
           count(fb.thumbs) FILTER (WHERE fb.thumbs = 1) AS thumbs_up, count(fb.thumbs) AS thumbs
    FROM feedback fb JOIN generations g ON g.id = fb.generation_id
    GROUP BY g.model_name, g.model_revision, g.model_id
), rep AS (
    -- Generations rated more than once (rare): rated generations = feedback rows minus
    -- these repeats, without a count(DISTINCT) over all feedback.
    SELECT g.model_name, g.model_revision, g.model_id, sum(x.extra)::bigint AS extra
    FROM (SELECT generation_id, count(*) - 1 AS extra FROM feedback GROUP BY generation_id HAVING count(*) > 1) x
    JOIN generations g ON g.id = x.generation_id
    GROUP BY g.model_name, g.model_revision, g.model_id
), t AS (
    SELECT model_name, model_revision, model_id,
           max(generations) AS generations, max(errors) AS errors,
           max(out_tokens) AS out_tokens, max(gen_ms) AS gen_ms,
           min(first_at) AS first_at, max(last_at) AS last_at,
           max(q[1]) FILTER (WHERE part = 1) AS total_ms_p50,
           max(q[2]) FILTER (WHERE part = 1) AS total_ms_p95,
           max(q[1]) FILTER (WHERE part = 2) AS retrieval_ms_p50,
           max(q[2]) FILTER (WHERE part = 2) AS retrieval_ms_p95,
           max(q[1]) FILTER (WHERE part = 3) AS generation_ms_p50,
           max(q[2]) FILTER (WHERE part = 3) AS generation_ms_p95
    FROM parts
    GROUP BY model_name, model_revision, model_id
)
SELECT t.model_name,
       t.model_revision,
       t.model_id,
       m.name || '@' || m.version AS model_ref,
       t.generations,
       t.errors,
       t.errors::float8 / t.generations AS error_rate,
       coalesce(f.feedback - coalesce(rep.extra, 0), 0) AS generations_with_feedback,
       coalesce(f.feedback - coalesce(rep.extra, 0), 0)::float8 / t.generations AS feedback_rate,
       coalesce(f.feedback, 0) AS feedback,
       f.score_sum::float8 / nullif(f.scores, 0) AS mean_score,
       f.thumbs_up::float8 / nullif(f.thumbs, 0) AS thumbs_up_share,
       t.retrieval_ms_p50,
       t.retrieval_ms_p95,
       t.generation_ms_p50,
       t.generation_ms_p95,
       t.total_ms_p50,
       t.total_ms_p95,
       t.out_tokens / nullif(t.gen_ms / 1000.0, 0) AS tokens_per_s,
       t.first_at,
       t.last_at
FROM t
LEFT JOIN f ON f.model_name = t.model_name AND f.model_revision IS NOT DISTINCT FROM t.model_revision
           AND f.model_id IS NOT DISTINCT FROM t.model_id
LEFT JOIN rep ON rep.model_name = t.model_name AND rep.model_revision IS NOT DISTINCT FROM t.model_revision
           AND rep.model_id IS NOT DISTINCT FROM t.model_id
LEFT JOIN models m ON m.id = t.model_id
""",
    ),
    (
        "v_template_stats",
        """
WITH g AS (
    SELECT p.template_name, p.template_version,
           count(*) AS generations,
           count(*) FILTER (WHERE g.status = 'error') AS errors,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY g.retrieval_ms) AS retrieval_q,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY g.generation_ms) AS generation_q,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY g.total_ms) AS total_q,
           sum(g.output_tokens) FILTER (WHERE g.status = 'ok' AND g.generation_ms > 0) AS out_tokens,
           sum(g.generation_ms) FILTER (WHERE g.status = 'ok' AND g.output_tokens IS NOT NULL) AS gen_ms
    FROM generations g JOIN prompts p ON p.id = g.prompt_id
    GROUP BY p.template_name, p.template_version
), f AS (
    SELECT p.template_name, p.template_version,
           count(DISTINCT fb.generation_id) AS generations_with_feedback,
           count(*) AS feedback,
           avg(fb.score)::float8 AS mean_score,
           count(fb.thumbs) FILTER (WHERE fb.thumbs = 1) AS thumbs_up,
           count(fb.thumbs) AS thumbs
    FROM feedback fb
    JOIN generations g ON g.id = fb.generation_id
    JOIN prompts p ON p.id = g.prompt_id
    GROUP BY p.template_name, p.template_version
)
SELECT g.template_name,
       g.template_version,
       g.generations,
       g.errors,
       g.errors::float8 / g.generations AS error_rate,
       coalesce(f.generations_with_feedback, 0) AS generations_with_feedback,
       coalesce(f.generations_with_feedback, 0)::float8 / g.generations AS feedback_rate,
       coalesce(f.feedback, 0) AS feedback,
       f.mean_score,
       f.thumbs_up::float8 / nullif(f.thumbs, 0) AS thumbs_up_share,
       g.retrieval_q[1] AS retrieval_ms_p50,
       g.retrieval_q[2] AS retrieval_ms_p95,
       g.generation_q[1] AS generation_ms_p50,
       g.generation_q[2] AS generation_ms_p95,
       g.total_q[1] AS total_ms_p50,
       g.total_q[2] AS total_ms_p95,
       g.out_tokens / nullif(g.gen_ms / 1000.0, 0) AS tokens_per_s
FROM g
LEFT JOIN f ON f.template_name IS NOT DISTINCT FROM g.template_name
           AND f.template_version IS NOT DISTINCT FROM g.template_version
""",
    ),
    (
        # Days are UTC days, whatever the session's time zone, so two users agree.
        "v_daily",
        """
WITH g AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS generations,
           count(*) FILTER (WHERE status = 'error') AS errors
    FROM generations GROUP BY 1
), a AS (
    -- A session is active on a day when it has a turn (prompt) that day.
    SELECT day, count(*) AS active_sessions
    FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS day, session_id FROM prompts) x
    GROUP BY day
), s AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS new_sessions
    FROM sessions GROUP BY 1
), f AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS feedback,
           avg(score)::float8 AS mean_score,
           count(thumbs) FILTER (WHERE thumbs = 1)::float8 / nullif(count(thumbs), 0) AS thumbs_up_share
    FROM feedback GROUP BY 1
)
SELECT day,
       coalesce(g.generations, 0) AS generations,
       coalesce(g.errors, 0) AS errors,
       coalesce(a.active_sessions, 0) AS active_sessions,
       coalesce(s.new_sessions, 0) AS new_sessions,
       coalesce(f.feedback, 0) AS feedback,
       f.mean_score,
       f.thumbs_up_share
FROM g FULL JOIN a USING (day) FULL JOIN s USING (day) FULL JOIN f USING (day)
""",
    ),
    (
        # Feedback is attributed to the day and model of the generation it rates.
        "v_model_daily",
        """
WITH g AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_name,
           count(*) AS generations,
           count(*) FILTER (WHERE status = 'error') AS errors,
           avg(total_ms)::float8 AS total_ms_mean
    FROM generations GROUP BY 1, 2
), f AS (
    SELECT (g.created_at AT TIME ZONE 'UTC')::date AS day, g.model_name,
           count(*) AS feedback,
           avg(fb.score)::float8 AS mean_score,
           count(fb.thumbs) FILTER (WHERE fb.thumbs = 1)::float8 / nullif(count(fb.thumbs), 0) AS thumbs_up_share
    FROM feedback fb JOIN generations g ON g.id = fb.generation_id
    GROUP BY 1, 2
)
SELECT g.day, g.model_name, g.generations, g.errors, g.total_ms_mean,
       coalesce(f.feedback, 0) AS feedback, f.mean_score, f.thumbs_up_share
FROM g LEFT JOIN f USING (day, model_name)
""",
    ),
    (
        "v_chunk_citations",
        """
WITH fb AS (
    SELECT generation_id, sum(score) AS score_sum, count(score) AS scores,
           count(thumbs) FILTER (WHERE thumbs = 1) AS up, count(thumbs) AS thumbs
    FROM feedback GROUP BY generation_id
), c AS (
    -- A chunk is at most one source slot of an answer (retrieval returns distinct
    -- chunks), so a citation is an answer citing it: no count(DISTINCT) over the log.
    SELECT s.chunk_id,
           count(*) AS citations,
           avg(s.rank)::float8 AS mean_rank,
           sum(fb.score_sum) AS score_sum, sum(fb.scores) AS scores,
           sum(fb.up) AS up, sum(fb.thumbs) AS thumbs
    FROM generation_sources s LEFT JOIN fb ON fb.generation_id = s.generation_id
    GROUP BY s.chunk_id
)
SELECT c.chunk_id, ch.document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, ch.ordinal, d.superseded_at IS NULL AS is_current,
       c.citations, c.mean_rank,
       c.score_sum::float8 / nullif(c.scores, 0) AS mean_feedback_score,
       c.scores AS feedback_scores,
       c.up::float8 / nullif(c.thumbs, 0) AS thumbs_up_share,
       left(ch.text, 200) AS text_preview
FROM c
JOIN chunks ch ON ch.id = c.chunk_id
JOIN documents d ON d.id = ch.document_id
JOIN collections col ON col.id = d.collection_id
""",
    ),
    (
        # One (generation, document) pair per answer, so an answer citing three chunks of
        # one document counts its feedback once for that document.
        "v_document_citations",
        """
WITH fb AS (
    SELECT generation_id, sum(score) AS score_sum, count(score) AS scores,
           count(thumbs) FILTER (WHERE thumbs = 1) AS up, count(thumbs) AS thumbs
    FROM feedback GROUP BY generation_id
), pairs AS (
    -- DISTINCT ON walks the sources in primary-key (generation) order and only sorts
    -- within each answer, instead of hashing 3M (generation, document) groups.
    SELECT DISTINCT ON (s.generation_id, ch.document_id) s.generation_id, ch.document_id, s.rank AS best_rank
    FROM generation_sources s JOIN chunks ch ON ch.id = s.chunk_id
    ORDER BY s.generation_id, ch.document_id, s.rank
), cites AS (
    SELECT ch.document_id, sum(x.n) AS citations
    FROM (SELECT chunk_id, count(*) AS n FROM generation_sources GROUP BY chunk_id) x
    JOIN chunks ch ON ch.id = x.chunk_id
    GROUP BY ch.document_id
), d AS (
    SELECT p.document_id,
           count(*) AS answers,
           avg(p.best_rank)::float8 AS mean_best_rank,
           sum(fb.score_sum) AS score_sum, sum(fb.scores) AS scores,
           sum(fb.up) AS up, sum(fb.thumbs) AS thumbs
    FROM pairs p LEFT JOIN fb ON fb.generation_id = p.generation_id
    GROUP BY p.document_id
)
SELECT d.document_id, col.name AS collection, doc.external_id, doc.version AS document_version,
       doc.title, doc.uri, doc.superseded_at IS NULL AS is_current,
       cites.citations, d.answers, d.mean_best_rank,
       d.score_sum::float8 / nullif(d.scores, 0) AS mean_feedback_score,
       d.scores AS feedback_scores,
       d.up::float8 / nullif(d.thumbs, 0) AS thumbs_up_share
FROM d
JOIN cites ON cites.document_id = d.document_id
JOIN documents doc ON doc.id = d.document_id
JOIN collections col ON col.id = doc.collection_id
""",
    ),
    (
        "v_documents_never_cited",
        """
SELECT d.id AS document_id, col.name AS collection, d.external_id, d.version AS document_version,
       d.title, d.uri, d.created_at,
       (SELECT count(*) FROM chunks ch WHERE ch.document_id = d.id) AS chunks
FROM documents d
JOIN collections col ON col.id = d.collection_id
WHERE d.superseded_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM chunks ch JOIN generation_sources s ON s.chunk_id = ch.id
      WHERE ch.document_id = d.id)
""",
    ),
    (
        # "Why was this answer bad?": one row per feedback, everything behind it.
        "v_feedback_explained",
        """
SELECT fb.id AS feedback_id, fb.created_at AS feedback_at, fb.score, fb.thumbs, fb.label, fb.comment,
       fb.user_id AS feedback_user,
       g.id AS generation_id, g.status, g.error, g.output AS answer,
       g.model_name, g.model_revision, g.params AS generation_params,
       g.retrieval_ms, g.generation_ms, g.total_ms, g.input_tokens, g.output_tokens,
       g.created_at AS generated_at,
       p.id AS prompt_id, p.text AS question, p.parent_id AS previous_prompt_id,
       p.template_name, p.template_version,
       ses.id AS session_id, ses.user_id AS session_user, col.name AS collection,
       (SELECT count(*) FROM prompts pp WHERE pp.session_id = ses.id AND pp.created_at <= p.created_at) AS turn,
       (SELECT jsonb_agg(jsonb_build_object(
                   'rank', s.rank, 'chunk_id', s.chunk_id, 'document_id', d.id,
                   'doc_id', d.external_id, 'document_version', d.version, 'title', d.title,
                   'superseded', d.superseded_at IS NOT NULL,
                   'score', s.score, 'bm25_rank', s.bm25_rank, 'vector_rank', s.vector_rank)
                   ORDER BY s.rank)
          FROM generation_sources s
          JOIN chunks ch ON ch.id = s.chunk_id
          JOIN documents d ON d.id = ch.document_id
         WHERE s.generation_id = g.id) AS sources,
       g.model_id,
       m.name || '@' || m.version AS model_ref,
       m.architecture AS model_architecture,
       m.run_id AS training_run_id,
       tr.status AS training_run_status,
       dv.id AS training_dataset_version_id,
       ds.name || '@' || dv.version AS training_dataset
FROM feedback fb
JOIN generations g ON g.id = fb.generation_id
JOIN prompts p ON p.id = g.prompt_id
JOIN sessions ses ON ses.id = p.session_id
LEFT JOIN collections col ON col.id = ses.collection_id
LEFT JOIN models m ON m.id = g.model_id
LEFT JOIN runs tr ON tr.id = m.run_id
LEFT JOIN dataset_versions dv ON dv.id = coalesce(m.input_version_id, tr.input_version_id)
LEFT JOIN datasets ds ON ds.id = dv.dataset_id
""",
    ),
    (
        # The same join flattened to one row per (feedback, source): GROUP BY a chunk or a
        # document to find what the badly rated answers were grounded on.
        "v_feedback_sources",
        """
SELECT fb.id AS feedback_id, fb.score, fb.thumbs, fb.label,
       g.id AS generation_id, g.model_name, g.status,
       s.rank, s.chunk_id, s.score AS fused_score, s.bm25_rank, s.bm25_score, s.vector_rank, s.vector_score,
       d.id AS document_id, col.name AS collection, d.external_id, d.version AS document_version, d.title,
       d.superseded_at IS NOT NULL AS superseded, left(ch.text, 200) AS text_preview
FROM feedback fb
JOIN generations g ON g.id = fb.generation_id
JOIN generation_sources s ON s.generation_id = g.id
JOIN chunks ch ON ch.id = s.chunk_id
JOIN documents d ON d.id = ch.document_id
JOIN collections col ON col.id = d.collection_id
""",
    ),
    (
        "v_dataset_versions",
        """
WITH counts AS (
    SELECT dm.version_id,
           count(*) AS items,
           count(*) FILTER (WHERE i.origin = 'real') AS real,
           count(*) FILTER (WHERE i.origin = 'synthetic') AS synthetic,
           count(*) FILTER (WHERE i.origin = 'augmented') AS augmented,
           count(*) FILTER (WHERE dm.split = 'train') AS train,
           count(*) FILTER (WHERE dm.split = 'val') AS val,
           count(*) FILTER (WHERE dm.split = 'test') AS test
    FROM dataset_members dm JOIN items i ON i.id = dm.item_id
    GROUP BY dm.version_id
), samplers AS (
    SELECT dm.version_id, array_agg(DISTINCT m.name || '@' || m.version) AS models_sampled_in
    FROM dataset_members dm
    JOIN items i ON i.id = dm.item_id AND i.origin = 'synthetic'
    JOIN models m ON m.id = i.model_id
    GROUP BY dm.version_id
)
SELECT dv.id AS version_id, ds.name AS dataset, dv.version, ds.name || '@' || dv.version AS ref,
       ds.modality, dv.sealed,
       pds.name || '@' || pv.version AS parent,
       dv.created_by_run_id, r.kind AS created_by_run_kind,
       coalesce(c.items, 0) AS items,
       coalesce(c.real, 0) AS real,
       coalesce(c.synthetic, 0) AS synthetic,
       coalesce(c.augmented, 0) AS augmented,
       c.synthetic::float8 / nullif(c.items, 0) AS synthetic_share,
       coalesce(c.train, 0) AS train, coalesce(c.val, 0) AS val, coalesce(c.test, 0) AS test,
       coalesce(sm.models_sampled_in, '{}') AS models_sampled_in,
       dv.created_at
FROM dataset_versions dv
JOIN datasets ds ON ds.id = dv.dataset_id
LEFT JOIN dataset_versions pv ON pv.id = dv.parent_id
LEFT JOIN datasets pds ON pds.id = pv.dataset_id
LEFT JOIN runs r ON r.id = dv.created_by_run_id
LEFT JOIN counts c ON c.version_id = dv.id
LEFT JOIN samplers sm ON sm.version_id = dv.id
""",
    ),
    (
        # Upstream of a version: its parent chain, and for synthetic items the models that
        # made them and the versions those models were trained on, recursively. depth 0 is
        # the version itself; `path` guards against cycles.
        "v_dataset_lineage",
        """
WITH RECURSIVE edges AS (
    SELECT dv.id AS child_id, dv.parent_id AS upstream_id, 'parent'::text AS relation,
           NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id
    FROM dataset_versions dv WHERE dv.parent_id IS NOT NULL
    UNION
    SELECT DISTINCT dm.version_id, coalesce(m.input_version_id, tr.input_version_id),
           'sampled_from_model_trained_on', m.id, i.run_id
    FROM dataset_members dm
    JOIN items i ON i.id = dm.item_id AND i.origin = 'synthetic'
    JOIN models m ON m.id = i.model_id
    LEFT JOIN runs tr ON tr.id = m.run_id
    WHERE coalesce(m.input_version_id, tr.input_version_id) IS NOT NULL
), walk AS (
    SELECT dv.id AS version_id, dv.id AS ancestor_id, 0 AS depth, 'self'::text AS relation,
           NULL::bigint AS via_model_id, dv.created_by_run_id AS via_run_id, ARRAY[dv.id] AS path
    FROM dataset_versions dv
    UNION ALL
    SELECT w.version_id, e.upstream_id, w.depth + 1, e.relation, e.via_model_id, e.via_run_id,
           w.path || e.upstream_id
    FROM walk w JOIN edges e ON e.child_id = w.ancestor_id
    WHERE e.upstream_id <> ALL (w.path) AND w.depth < 32
)
SELECT w.version_id, ds.name || '@' || dv.version AS ref,
       w.depth, w.relation,
       w.ancestor_id AS ancestor_version_id, ads.name || '@' || adv.version AS ancestor,
       w.via_model_id, m.name || '@' || m.version AS via_model,
       m.run_id AS via_model_training_run_id,
       w.via_run_id, vr.kind AS via_run_kind,
       adv.created_by_run_id AS ancestor_created_by_run_id, ar.kind AS ancestor_created_by_run_kind,
       w.path
FROM walk w
JOIN dataset_versions dv ON dv.id = w.version_id
JOIN datasets ds ON ds.id = dv.dataset_id
JOIN dataset_versions adv ON adv.id = w.ancestor_id
JOIN datasets ads ON ads.id = adv.dataset_id
LEFT JOIN models m ON m.id = w.via_model_id
LEFT JOIN runs vr ON vr.id = w.via_run_id
LEFT JOIN runs ar ON ar.id = adv.created_by_run_id
""",
    ),
    (
        # A run's final value of a metric: its step-NULL row when it logged one, else the
        # value at its last step.
        "v_run_final_metrics",
        """
SELECT DISTINCT ON (mt.run_id, mt.name)
       mt.run_id, r.kind, r.status, r.name AS run_name,
       mt.name AS metric, mt.value, mt.step,
       r.model_id, m.name || '@' || m.version AS model_ref, m.architecture,
       r.input_version_id, ds.name AS dataset, ds.name || '@' || dv.version AS dataset_ref,
       r.started_at, r.finished_at
FROM metrics mt
JOIN runs r ON r.id = mt.run_id
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN dataset_versions dv ON dv.id = r.input_version_id
LEFT JOIN datasets ds ON ds.id = dv.dataset_id
WHERE mt.item_id IS NULL
ORDER BY mt.run_id, mt.name, (mt.step IS NULL) DESC, mt.step DESC, mt.id DESC
""",
    ),
    (
        "v_runs",
        """
SELECT r.id AS run_id, r.kind, r.status, r.name, r.device,
       m.name || '@' || m.version AS model_ref,
       ids.name || '@' || iv.version AS input_dataset,
       ods.name || '@' || ov.version AS output_dataset,
       r.started_at, r.finished_at,
       extract(epoch FROM r.finished_at - r.started_at)::float8 AS duration_s,
       coalesce((SELECT jsonb_object_agg(fm.metric, fm.value)
                   FROM v_run_final_metrics fm WHERE fm.run_id = r.id), '{}'::jsonb) AS final_metrics,
       (SELECT max(mt.step) FROM metrics mt WHERE mt.run_id = r.id) AS last_step,
       r.code_version, r.error
FROM runs r
LEFT JOIN models m ON m.id = r.model_id
LEFT JOIN dataset_versions iv ON iv.id = r.input_version_id
LEFT JOIN datasets ids ON ids.id = iv.dataset_id
LEFT JOIN dataset_versions ov ON ov.id = r.output_version_id
LEFT JOIN datasets ods ON ods.id = ov.dataset_id
""",
    ),
    (
        # Per (dataset version, metric), the latest succeeded run of each model, ranked.
        # Direction comes from the metric's name: losses, errors and distances (FID, NLL,
        # negative ELBO, perplexity, ...) are better low; everything else high.
        "v_leaderboard",
        """
WITH latest AS (
    SELECT DISTINCT ON (fm.input_version_id, fm.metric, fm.model_id)
           fm.dataset, fm.dataset_ref, fm.input_version_id, fm.metric, fm.model_id, fm.model_ref,
           fm.architecture, fm.run_id, fm.kind AS run_kind, fm.value, fm.finished_at,
           fm.metric ~* '(loss|fid|kid|nll|elbo|error|perplexity|ppl|mse|mae|rmse|bpd|bpc|distance|latency|_ms$)'
               AS lower_is_better
    FROM v_run_final_metrics fm
    WHERE fm.status = 'succeeded' AND fm.model_id IS NOT NULL AND fm.input_version_id IS NOT NULL
      -- Training bookkeeping is not a score to rank models by.
      AND fm.metric !~* '^(lr|learning_rate|grad_norm|.*per_s|.*_seconds|seconds|epoch|step|steps|ema_decay)$'
    ORDER BY fm.input_version_id, fm.metric, fm.model_id, fm.finished_at DESC NULLS LAST, fm.run_id DESC
)
SELECT dataset, dataset_ref, metric,
       rank() OVER (PARTITION BY input_version_id, metric
                    ORDER BY CASE WHEN lower_is_better THEN value ELSE -value END) AS rank,
       model_ref, architecture, value, NOT lower_is_better AS higher_is_better,
       run_id, run_kind, finished_at, input_version_id, model_id
FROM latest
""",
    ),
]

# One index per latency column, keyed by the model identity then the value: each feeds
# v_model_stats' percentiles in order from an index-only scan. The total_ms one INCLUDEs
# what the counts need, so that scan also yields them. Three more index entries per logged
# generation is cheap next to the call itself.
INDEXES = [
    "CREATE INDEX ix_generations_model_retrieval_ms ON generations (model_name, model_revision, model_id, retrieval_ms)",
    "CREATE INDEX ix_generations_model_generation_ms ON generations (model_name, model_revision, model_id, generation_ms)",
    "CREATE INDEX ix_generations_model_total_ms ON generations (model_name, model_revision, model_id, total_ms)"
    " INCLUDE (status, output_tokens, generation_ms, created_at)",
]


# Every view in docs/analytics.md and `genloom sql --help` order.
VIEW_NAMES = [name for name, _ in VIEWS]


def _grant_reader_sql() -> str:
    # One DO block: idempotent across databases and re-runs; tolerant of a concurrent
    # CREATE ROLE from another database's migration and of a user without CREATEROLE.
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
        BEGIN
            CREATE ROLE {READER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
                NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 32;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'genloom: role {READER} not created (% lacks CREATEROLE); '
                             'genloom sql needs GENLOOM_READONLY_URL, see docs/analytics.md', current_user;
                RETURN;
        END;
    END IF;
    -- Settings live on the role, so they hold however the reader connects (psql too).
    IF NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = '{READER}' AND s.setdatabase = 0
          AND 'default_transaction_read_only=on' = ANY (s.setconfig)
    ) THEN
        BEGIN
            ALTER ROLE {READER} SET default_transaction_read_only = on;
            ALTER ROLE {READER} SET statement_timeout = '30s';
            ALTER ROLE {READER} SET idle_in_transaction_session_timeout = '60s';
        EXCEPTION WHEN insufficient_privilege OR unique_violation THEN
            RAISE NOTICE 'genloom: could not set defaults on role {READER}';
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {READER}', current_database());
    GRANT USAGE ON SCHEMA public TO {READER};
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER};
END
$$;
"""


def _revoke_reader_sql() -> str:
    return f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {READER};
        REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {READER};
        REVOKE USAGE ON SCHEMA public FROM {READER};
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {READER}', current_database());
        -- The role is cluster-wide: other databases may still grant it something, in
        -- which case it stays.
        BEGIN
            DROP ROLE {READER};
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege OR undefined_object THEN
            NULL;
        END;
    END IF;
END
$$;
"""


def upgrade() -> None:
    for statement in INDEXES:
        op.execute(statement)
    for name, body in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {body}")
    op.execute(_grant_reader_sql())


def downgrade() -> None:
    op.execute(_revoke_reader_sql())
    for name, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for col in ("retrieval_ms", "generation_ms", "total_ms"):
        op.execute(f"DROP INDEX IF EXISTS ix_generations_model_{col}")

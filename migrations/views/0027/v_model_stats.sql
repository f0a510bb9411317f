-- v_model_stats: per model (name, revision, registry id): generations, error rate, feedback rate, mean
--   score, thumbs-up share, p50/p95 latency (retrieval, generation, total), tokens/s
--
-- The three latency columns are one UNION ALL, so Postgres aggregates them side by
-- side (Parallel Append) instead of one after another; each is read in (model,
-- value) order from its own index (index-only, so percentile_cont's input arrives
-- sorted; the total_ms index also INCLUDEs what the counts need). Feedback is
-- aggregated over the feedback table. Nothing sorts the log: docs/benchmarks.md.
-- The registry is joined as its own subquery (OFFSET 0): on a Citus cluster, where models is
-- distributed by tenant, an outer join of the aggregated log to the table itself fails under
-- the tenant policy ("failed to postpone qual containing lateral reference"); as a subquery
-- Citus reads the tenant's registry rows first. On one node it is the same small hash join.
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
LEFT JOIN (SELECT * FROM models OFFSET 0) m ON m.id = t.model_id

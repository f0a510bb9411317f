-- v_template_stats: the same figures per prompt template version
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

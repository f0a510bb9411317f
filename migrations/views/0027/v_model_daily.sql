-- v_model_daily: per UTC day and model: generations, errors, mean latency, feedback on them, mean
--   score
--
-- Feedback is attributed to the day and model of the generation it rates.
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

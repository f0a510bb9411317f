-- v_daily: per UTC day: generations, errors, active and new sessions, feedback, mean score
--
-- Days are UTC days, whatever the session's time zone, so two users agree.
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

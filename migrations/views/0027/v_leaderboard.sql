-- v_leaderboard: per dataset version and metric: each model's latest succeeded value, ranked
--
-- Per (dataset version, metric), the latest succeeded run of each model, ranked.
-- Direction comes from the metric's name: losses, errors and distances (FID, NLL,
-- negative ELBO, perplexity, ...) are better low; everything else high.
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

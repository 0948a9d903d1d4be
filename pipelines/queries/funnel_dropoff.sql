-- Signup funnel: per step, the sessions that reached it, the sessions that dropped out after
-- it (it was their last step; a session that reached the final step converted and did not
-- drop out) and the share of the sessions that reached the first step. From the funnel
-- report rows in obs.metrics (funnel.step.reached / funnel.step.dropoff), over all windows.
-- Runs unchanged in Trino (catalog iceberg) and in `obsflow query` (DuckDB).
WITH steps AS (
    SELECT CAST(labels['step_index'] AS INTEGER) AS step_index,
           labels['step'] AS step,
           sum(CASE WHEN name = 'funnel.step.reached' THEN "count" ELSE 0 END) AS sessions,
           sum(CASE WHEN name = 'funnel.step.dropoff' THEN "count" ELSE 0 END) AS dropped_after_step
    FROM obs.metrics
    WHERE name IN ('funnel.step.reached', 'funnel.step.dropoff') AND labels['funnel'] = 'signup'
    GROUP BY 1, 2
)
SELECT step_index,
       step,
       sessions,
       dropped_after_step,
       round(100.0 * sessions / nullif(first_value(sessions) OVER (ORDER BY step_index), 0), 1) AS pct_of_first_step
FROM steps
ORDER BY step_index

-- Signup funnel: sessions reaching each form step, and how many dropped out after it.
-- Runs unchanged in Trino (catalog iceberg) and in `obsflow query` (DuckDB).
WITH steps AS (
    SELECT form_step AS step, count(DISTINCT session_id) AS sessions
    FROM obs.events
    WHERE event_type = 'form_step' AND form = 'signup'
    GROUP BY form_step
)
SELECT step,
       sessions,
       sessions - lead(sessions, 1, 0) OVER (ORDER BY step) AS dropped_after_step,
       round(100.0 * sessions / first_value(sessions) OVER (ORDER BY step), 1) AS pct_of_step_1
FROM steps
ORDER BY step

-- Time to convert: per funnel and report window, the sessions that reached the funnel's final
-- step (conversions) and the time from their first step to the final one (for the signup
-- funnel: the signup duration), in ms. From funnel.time_to_convert_ms rows in obs.metrics
-- (p75 is null in rows written before obs.metrics had the column).
-- Runs unchanged in Trino (catalog iceberg) and in `obsflow query` (DuckDB).
SELECT labels['funnel'] AS funnel,
       window_start,
       "count" AS conversions,
       round("sum" / "count", 1) AS avg_ms,
       p50 AS p50_ms,
       p75 AS p75_ms,
       p90 AS p90_ms,
       "min" AS min_ms,
       "max" AS max_ms
FROM obs.metrics
WHERE name = 'funnel.time_to_convert_ms'
ORDER BY funnel, window_start

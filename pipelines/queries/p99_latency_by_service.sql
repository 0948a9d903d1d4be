-- p99 latency of server spans per service, from the RED metrics (computed from every
-- span before sampling; one row per series — service, operation, kind, status — and
-- minute, whose quantiles are the series' own, merged over the trace shards): the worst
-- series-minute p99 and p50 of the service, and the calls they cover.
SELECT labels['service'] AS service,
       round(max(p99), 3) AS worst_minute_p99_ms,
       round(max(p50), 3) AS worst_minute_p50_ms,
       sum(count) AS calls
FROM obs.metrics
WHERE name = 'span.duration_ms' AND resolution = '1m' AND labels['kind'] = 'SERVER'
GROUP BY labels['service']
ORDER BY worst_minute_p99_ms DESC, service

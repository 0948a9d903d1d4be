-- Error rate per service from the (sampled) logs, each line weighted by 1/sample_rate so
-- sampling does not bias the rate.
SELECT service,
       round(sum(CASE WHEN level IN ('ERROR', 'FATAL') THEN 1.0 / sample_rate ELSE 0 END), 1) AS errors,
       round(sum(1.0 / sample_rate), 1) AS lines,
       round(sum(CASE WHEN level IN ('ERROR', 'FATAL') THEN 1.0 / sample_rate ELSE 0 END) / sum(1.0 / sample_rate), 4) AS error_rate
FROM obs.logs
GROUP BY service
ORDER BY error_rate DESC, service

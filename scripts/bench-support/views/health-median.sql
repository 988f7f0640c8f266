-- The fleet's median and tenth percentile of health, each minute.
CREATE VIEW health_median AS
SELECT window_start, approx_percentile_cont(healthpoints, 0.5) AS median_health,
       approx_percentile_cont(healthpoints, 0.1) AS p10_health, COUNT(*) AS records
FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)
GROUP BY window_start

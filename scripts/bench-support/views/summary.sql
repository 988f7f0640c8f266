-- The workshop's per-minute summary (CONTRACT §2) as a view: distance flown and the range of
-- health and magic points, per unicorn and minute. Its rows equal the built-in summaries.
CREATE VIEW summary AS
SELECT name,
       window_start,
       window_end,
       SUM(distance) AS distance,
       MIN(magicpoints) AS minmagicpoints,
       MAX(magicpoints) AS maxmagicpoints,
       MIN(healthpoints) AS minhealthpoints,
       MAX(healthpoints) AS maxhealthpoints,
       COUNT(*) AS records
FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)
GROUP BY name, window_start, window_end

-- Each unicorn's rides: a ride ends when the unicorn has been silent for 30 seconds.
CREATE VIEW rides AS
SELECT name,
       window_start,
       window_end,
       SUM(distance) AS distance,
       COUNT(*) AS records,
       MIN(healthpoints) AS minhealthpoints
FROM SESSION(wildrydes, statustime, INTERVAL '30' SECOND)
GROUP BY name, window_start, window_end

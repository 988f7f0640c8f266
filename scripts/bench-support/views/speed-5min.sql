-- Each unicorn per five minutes: its mean and best distance a second.
CREATE VIEW speed_5min AS
SELECT name, window_start, AVG(distance) AS mean_distance, MAX(distance) AS best_distance
FROM TUMBLE(wildrydes, statustime, INTERVAL '5' MINUTE)
GROUP BY name, window_start

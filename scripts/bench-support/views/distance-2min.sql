-- Each unicorn's distance over two minutes, every minute.
CREATE VIEW distance_2min AS
SELECT name, window_start, SUM(distance) AS distance
FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE)
GROUP BY name, window_start

-- Grid cells (about 1 km) where at least three unicorns reported weak health in five minutes.
CREATE VIEW weak_cells AS
SELECT window_start,
       round(latitude, 2) AS lat,
       round(longitude, 2) AS lon,
       COUNT(*) AS weak_records,
       approx_distinct(name) AS weak_unicorns
FROM TUMBLE(wildrydes, statustime, INTERVAL '5' MINUTE)
WHERE healthpoints < 100
GROUP BY window_start, round(latitude, 2), round(longitude, 2)
HAVING approx_distinct(name) >= 3

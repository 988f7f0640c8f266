-- Where each unicorn was at the start and at the end of each minute.
CREATE VIEW legs AS
SELECT name, window_start,
       first_value(latitude ORDER BY statustime) AS from_lat, first_value(longitude ORDER BY statustime) AS from_lon,
       last_value(latitude ORDER BY statustime) AS to_lat, last_value(longitude ORDER BY statustime) AS to_lon
FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)
GROUP BY name, window_start

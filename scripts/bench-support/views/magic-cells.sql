-- Mean magic per ten-kilometre cell every ten minutes.
CREATE VIEW magic_cells AS
SELECT window_start, round(latitude, 1) AS lat, round(longitude, 1) AS lon,
       AVG(magicpoints) AS mean_magic, COUNT(*) AS records
FROM TUMBLE(wildrydes, statustime, INTERVAL '10' MINUTE)
GROUP BY window_start, round(latitude, 1), round(longitude, 1)

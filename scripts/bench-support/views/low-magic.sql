-- Records and unicorns with magic below 120, each minute.
CREATE VIEW low_magic AS
SELECT window_start, COUNT(*) AS records, approx_distinct(name) AS unicorns
FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)
WHERE magicpoints < 120
GROUP BY window_start

-- The fleet every minute, over the last five: records, unicorns reporting, distance flown.
CREATE VIEW fleet_5min AS
SELECT window_start,
       window_end,
       COUNT(*) AS records,
       approx_distinct(name) AS unicorns,
       SUM(distance) AS distance
FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
GROUP BY window_start, window_end

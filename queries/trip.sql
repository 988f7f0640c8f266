-- One unicorn's trip: its positions in the order it flew them (extra credit).
SELECT StatusTime, Latitude, Longitude
FROM wildrydes
WHERE Name = 'Shadowfax'
ORDER BY StatusTime;

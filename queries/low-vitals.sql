-- Every point where a vital is below 100 (extra credit).
SELECT Name, StatusTime, HealthPoints, MagicPoints
FROM wildrydes
WHERE HealthPoints < 100 OR MagicPoints < 100;

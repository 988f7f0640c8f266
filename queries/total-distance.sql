-- How far each unicorn has flown, all time (the workshop's "TotalDistance" query).
SELECT Name, SUM(Distance) AS TotalDistance
FROM wildrydes
GROUP BY Name;

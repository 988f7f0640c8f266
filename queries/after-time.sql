-- Every point reported after a given time (extra credit).
SELECT *
FROM wildrydes
WHERE StatusTime > TIMESTAMP '2018-03-18 05:00:00'
ORDER BY StatusTime, Name;

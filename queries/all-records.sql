-- The workshop's first Athena query: every record of the archive, with Athena's lower-case
-- columns (name, statustime, latitude, longitude, distance, healthpoints, magicpoints).
SELECT * FROM wildrydes;

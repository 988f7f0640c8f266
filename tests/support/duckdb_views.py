"""The example views of queries/views/, answered by DuckDB: an engine independent of Stampede's
(another SQL dialect, another planner, another implementation of every aggregate), over the
same accepted records. The continuous views must end with these rows (CONTRACT §9).

Each query is written by hand in DuckDB's SQL from what the view means, not translated from the
view: TUMBLE as time_bucket, HOP as the record joined with its window offsets, SESSION as a
running count of gaps, approx_distinct as an exact COUNT(DISTINCT) (exact at these sizes).

usage: duckdb_views.py VIEW FILE_OR_GLOB...   prints the view's rows as JSON lines, sorted
"""
import json
import sys

import duckdb

RECORDS = """
    SELECT Name AS name, CAST(StatusTime AS TIMESTAMP) AS t, Latitude AS lat, Longitude AS lon,
           Distance AS distance, HealthPoints AS health, MagicPoints AS magic
    FROM read_json({files}, format = 'newline_delimited', columns = {{
        Name: 'VARCHAR', StatusTime: 'VARCHAR', Latitude: 'DOUBLE', Longitude: 'DOUBLE',
        Distance: 'DOUBLE', HealthPoints: 'BIGINT', MagicPoints: 'BIGINT'}})
"""

QUERIES = {
    "summary": """
        SELECT name, time_bucket(INTERVAL 1 MINUTE, t) AS window_start,
               time_bucket(INTERVAL 1 MINUTE, t) + INTERVAL 1 MINUTE AS window_end,
               SUM(distance) AS distance, MIN(magic) AS minmagicpoints, MAX(magic) AS maxmagicpoints,
               MIN(health) AS minhealthpoints, MAX(health) AS maxhealthpoints, COUNT(*) AS records
        FROM records GROUP BY ALL
    """,
    "fleet_5min": """
        SELECT time_bucket(INTERVAL 1 MINUTE, t) - k * INTERVAL 1 MINUTE AS window_start,
               time_bucket(INTERVAL 1 MINUTE, t) - k * INTERVAL 1 MINUTE + INTERVAL 5 MINUTE AS window_end,
               COUNT(*) AS records, COUNT(DISTINCT name) AS unicorns, SUM(distance) AS distance
        FROM records CROSS JOIN range(5) AS offsets(k) GROUP BY ALL
    """,
    "rides": """
        WITH marked AS (
            SELECT *, CASE WHEN t - LAG(t) OVER (PARTITION BY name ORDER BY t) <= INTERVAL 30 SECOND
                           THEN 0 ELSE 1 END AS starts
            FROM records),
        numbered AS (
            SELECT *, SUM(starts) OVER (PARTITION BY name ORDER BY t ROWS UNBOUNDED PRECEDING) AS ride
            FROM marked)
        SELECT name, MIN(t) AS window_start, MAX(t) + INTERVAL 30 SECOND AS window_end,
               SUM(distance) AS distance, COUNT(*) AS records, MIN(health) AS minhealthpoints
        FROM numbered GROUP BY name, ride
    """,
    "weak_cells": """
        SELECT time_bucket(INTERVAL 5 MINUTE, t) AS window_start, round(lat, 2) AS lat,
               round(lon, 2) AS lon, COUNT(*) AS weak_records, COUNT(DISTINCT name) AS weak_unicorns
        FROM records WHERE health < 100
        GROUP BY ALL HAVING COUNT(DISTINCT name) >= 3
    """,
}


def main():
    view, files = sys.argv[1], sys.argv[2:]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE VIEW records AS " + RECORDS.format(files=json.dumps(files).replace('"', "'")))
    cursor = con.execute(QUERIES[view])
    columns = [d[0] for d in cursor.description]
    rows = []
    for values in cursor.fetchall():
        row = {}
        for column, value in zip(columns, values):
            if hasattr(value, "strftime"):
                value = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
            row[column] = value
        rows.append(json.dumps(row, sort_keys=True))
    for line in sorted(rows):
        print(line)


main()

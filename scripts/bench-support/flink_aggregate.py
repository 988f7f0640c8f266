"""The per-unicorn, per-minute aggregation of `stampede aggregate` as an Apache Flink job
(PyFlink, local, parallelism 1, event-time one-minute TUMBLE with a 5 s watermark delay), over
an NDJSON file. Prints the job's wall time and how many summaries it wrote, for scripts/bench-flink.

Usage: python flink_aggregate.py FILE OUT_DIR
"""
import glob
import os
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment


def main():
    path, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    started = time.monotonic()
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    env.execute_sql(f"""
        CREATE TABLE wildrydes (
          Name STRING,
          StatusTime STRING,
          Latitude DOUBLE,
          Longitude DOUBLE,
          Distance DOUBLE,
          HealthPoints BIGINT,
          MagicPoints BIGINT,
          ts AS TO_TIMESTAMP(StatusTime, 'yyyy-MM-dd HH:mm:ss.SSS'),
          WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH (
          'connector' = 'filesystem',
          'path' = 'file://{path}',
          'format' = 'json',
          'json.ignore-parse-errors' = 'true'
        )""")
    env.execute_sql(f"""
        CREATE TABLE summaries (
          Name STRING,
          WindowStart TIMESTAMP(3),
          Distance DOUBLE,
          MinHealthPoints BIGINT,
          MaxHealthPoints BIGINT,
          MinMagicPoints BIGINT,
          MaxMagicPoints BIGINT,
          Records BIGINT
        ) WITH ('connector' = 'filesystem', 'path' = 'file://{out}', 'format' = 'csv')""")
    job_started = time.monotonic()
    env.execute_sql("""
        INSERT INTO summaries
        SELECT Name, TUMBLE_START(ts, INTERVAL '1' MINUTE), SUM(Distance),
               MIN(HealthPoints), MAX(HealthPoints), MIN(MagicPoints), MAX(MagicPoints), COUNT(*)
        FROM wildrydes
        GROUP BY Name, TUMBLE(ts, INTERVAL '1' MINUTE)""").wait()
    done = time.monotonic()
    rows = 0
    for f in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        if os.path.isfile(f) and not os.path.basename(f).startswith("."):
            with open(f) as fh:
                rows += sum(1 for _ in fh)
    print(f"flink: job {done - job_started:.2f} s, process so far {done - started:.2f} s, {rows} summaries")


if __name__ == "__main__":
    main()

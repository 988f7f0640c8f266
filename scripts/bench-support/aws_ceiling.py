"""The emulators' own ceilings, measured with boto3 (the standard AWS client), for scripts/bench-aws.

  python aws_ceiling.py kinesis STREAM N   read N records from every shard with GetRecords
  python aws_ceiling.py dynamodb TABLE N   write N summary items with batch_writer (BatchWriteItem, 25 a call)

Endpoints come from AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL_DYNAMODB, as for Stampede.
"""
import os
import sys
import time

import boto3


def kinesis(stream, n):
    c = boto3.client("kinesis", endpoint_url=os.environ["AWS_ENDPOINT_URL_KINESIS"])
    shards = c.list_shards(StreamName=stream)["Shards"]
    its = [
        c.get_shard_iterator(StreamName=stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for s in shards
    ]
    read, first = 0, None
    while read < n:
        nxt = []
        for it in its:
            page = c.get_records(ShardIterator=it, Limit=10000)
            if page["Records"] and first is None:
                first = time.monotonic()
            read += len(page["Records"])
            if page.get("NextShardIterator"):
                nxt.append(page["NextShardIterator"])
        its = nxt
    secs = time.monotonic() - first
    print(f"boto3 GetRecords: {read} records in {secs:.2f} s = {read / secs:.0f} records/s")


def dynamodb(table, n):
    d = boto3.resource("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    t = d.Table(table)
    start = time.monotonic()
    with t.batch_writer() as w:
        for i in range(n):
            w.put_item(Item={
                "Name": f"u{i % 1000:05}", "StatusTime": f"2018-03-18 {i // 60000:02}:{(i // 1000) % 60:02}:00.000",
                "WindowEnd": "2018-03-18 03:21:00.000", "Distance": 1798, "MinMagicPoints": 170,
                "MaxMagicPoints": 172, "MinHealthPoints": 146, "MaxHealthPoints": 149, "Records": 60, "Revision": 0,
            })
    secs = time.monotonic() - start
    print(f"boto3 batch_writer: {n} items in {secs:.2f} s = {n / secs:.0f} items/s ({(n + 24) // 25} BatchWriteItem calls)")


if __name__ == "__main__":
    {"kinesis": kinesis, "dynamodb": dynamodb}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))

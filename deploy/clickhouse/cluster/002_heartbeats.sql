-- Cluster variant of ../002_heartbeats.sql (replace {db} and {cluster}).
CREATE TABLE IF NOT EXISTS {db}.heartbeats_local ON CLUSTER {cluster} (
  role String, holder String, since UInt64, at UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/heartbeats', '{replica}')
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(at, 1000000)))
  ORDER BY (role, at, holder);
CREATE TABLE IF NOT EXISTS {db}.heartbeats ON CLUSTER {cluster} AS {db}.heartbeats_local
  ENGINE = Distributed({cluster}, {db}, heartbeats_local, rand());

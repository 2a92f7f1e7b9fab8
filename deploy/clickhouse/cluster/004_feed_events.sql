-- Cluster variant of ../004_feed_events.sql (replace {db} and {cluster}).
-- Feed events shard by subscriber, so one subscriber's host-days (and
-- FINAL over them) are on one shard.
ALTER TABLE {db}.subscribers_local ON CLUSTER {cluster} ADD COLUMN webhook String DEFAULT '';
ALTER TABLE {db}.subscribers_local ON CLUSTER {cluster} ADD COLUMN webhook_key String DEFAULT '';
-- A Distributed table cannot be altered ON CLUSTER when shards replicate
-- (ClickHouse refuses: "isn't replicated"); it holds no rows (inserts are
-- synchronous), so it is created again with the new columns.
DROP TABLE IF EXISTS {db}.subscribers ON CLUSTER {cluster};
CREATE TABLE IF NOT EXISTS {db}.subscribers ON CLUSTER {cluster} AS {db}.subscribers_local
  ENGINE = Distributed({cluster}, {db}, subscribers_local, cityHash64(id));

CREATE TABLE IF NOT EXISTS {db}.feed_events_local ON CLUSTER {cluster} (
  subscriber String, day UInt64, ip String, sensor String, start UInt64, stored_at UInt64,
  country String, asn UInt32, geo String, packets UInt64, destinations UInt64,
  classes UInt8, fingerprints UInt8, first_seen UInt64, last_seen UInt64, top_ports String
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/feed_events', '{replica}', stored_at)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (subscriber, day, ip, sensor, start);
CREATE TABLE IF NOT EXISTS {db}.feed_events ON CLUSTER {cluster} AS {db}.feed_events_local
  ENGINE = Distributed({cluster}, {db}, feed_events_local, cityHash64(subscriber));

CREATE TABLE IF NOT EXISTS {db}.feed_push_local ON CLUSTER {cluster} (
  subscriber String, stored_at UInt64, day UInt64, ip String, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/feed_push', '{replica}', ver) ORDER BY subscriber;
CREATE TABLE IF NOT EXISTS {db}.feed_push ON CLUSTER {cluster} AS {db}.feed_push_local
  ENGINE = Distributed({cluster}, {db}, feed_push_local, cityHash64(subscriber));

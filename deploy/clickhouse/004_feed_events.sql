-- darkscope on ClickHouse, migration 004: feed events recorded at ingest.
-- Every source of an ingested summary that falls in a subscriber's prefixes
-- (or ASNs) becomes one row per (subscriber, day, host, sensor, window),
-- written in the same batch as its window; a replayed window is skipped by
-- the ingest duplicate check, and a row written twice by two replicas
-- collapses under FINAL. Subscribers gain a push webhook, and digests a
-- position.

ALTER TABLE {db}.subscribers ADD COLUMN webhook String DEFAULT '';

ALTER TABLE {db}.subscribers ADD COLUMN webhook_key String DEFAULT '';

CREATE TABLE IF NOT EXISTS {db}.feed_events (
  subscriber String, day UInt64, ip String, sensor String, start UInt64, stored_at UInt64,
  country String, asn UInt32, geo String, packets UInt64, destinations UInt64,
  classes UInt8, fingerprints UInt8, first_seen UInt64, last_seen UInt64, top_ports String
) ENGINE = ReplacingMergeTree(stored_at)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (subscriber, day, ip, sensor, start);

-- Where each subscriber's webhook digests stand (the last accepted position).
CREATE TABLE IF NOT EXISTS {db}.feed_push (
  subscriber String, stored_at UInt64, day UInt64, ip String, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY subscriber;

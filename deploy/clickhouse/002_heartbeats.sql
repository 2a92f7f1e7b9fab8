-- darkscope on ClickHouse, migration 002: replica heartbeats. Every
-- aggregator replica writes one row per interval; the live replica that
-- has been up longest leads (runs detection and federation pulls). Old
-- rows go by partition (one per day).

CREATE TABLE IF NOT EXISTS {db}.heartbeats (
  role String, holder String, since UInt64, at UInt64
) ENGINE = MergeTree
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(at, 1000000)))
  ORDER BY (role, at, holder);

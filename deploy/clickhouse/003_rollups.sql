-- darkscope on ClickHouse, migration 003: hourly and daily port roll-ups,
-- as SQLite keeps them: per sensor, and pre-merged across local sensors
-- ('*', '*CC') and across all with federation peers ('**', '**CC'), so a
-- query over weeks reads one row per port and hour or day. Built by the
-- leader replica once an hour is over; a window arriving late for a rolled
-- hour marks it dirty (rollup_hours) and queries read that hour raw until
-- it is rebuilt. Rows are replaced by newer versions (FINAL).

CREATE TABLE IF NOT EXISTS {db}.port_hours (
  hour UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(hour, 1000000)))
  ORDER BY (proto, port, sensor, hour);

CREATE TABLE IF NOT EXISTS {db}.port_days (
  day UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (proto, port, sensor, day);

-- Hours rolled up (dirty = 0) or changed since by a late window (dirty = 1).
CREATE TABLE IF NOT EXISTS {db}.rollup_hours (
  hour UInt64, dirty UInt8, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY hour;

-- The roll-up watermark: hours before `rolled_until` have been rolled up.
CREATE TABLE IF NOT EXISTS {db}.rollup_state (
  key String, value UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY key;

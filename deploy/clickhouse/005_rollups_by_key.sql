-- darkscope on ClickHouse, migration 005: the roll-ups move to tables
-- ordered by key (sensor, or the pre-merged '*', '*CC', '**', '**CC')
-- first, then port and time. The questions asked most name the key and
-- not the port: top ports over a span then read one key's rows instead of
-- every sensor's (each with its sketch), and a port's series one (key,
-- port) run. ClickHouse cannot change a table's ORDER BY, so the rows are
-- copied into new tables and the old ones dropped; running it again after
-- a failure copies again (ReplacingMergeTree keeps one row per key and
-- version). Upgrade with the aggregators stopped: a roll-up written by an
-- older replica during the copy would go to the old table.

CREATE TABLE IF NOT EXISTS {db}.port_hours_by_key (
  hour UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(hour, 1000000)))
  ORDER BY (sensor, proto, port, hour);
CREATE TABLE IF NOT EXISTS {db}.port_days_by_key (
  day UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (sensor, proto, port, day);
-- (An empty stand-in when a previous run already dropped the old table.)
CREATE TABLE IF NOT EXISTS {db}.port_hours AS {db}.port_hours_by_key ENGINE = Memory;
CREATE TABLE IF NOT EXISTS {db}.port_days AS {db}.port_days_by_key ENGINE = Memory;
INSERT INTO {db}.port_hours_by_key SELECT * FROM {db}.port_hours;
INSERT INTO {db}.port_days_by_key SELECT * FROM {db}.port_days;
DROP TABLE {db}.port_hours;
DROP TABLE {db}.port_days;

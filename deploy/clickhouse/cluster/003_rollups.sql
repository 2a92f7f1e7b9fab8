-- Cluster variant of ../003_rollups.sql (replace {db} and {cluster}).
-- Roll-up rows shard by port, so one port's series is on one shard;
-- the small bookkeeping tables live on every shard behind Distributed.
CREATE TABLE IF NOT EXISTS {db}.port_hours_local ON CLUSTER {cluster} (
  hour UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/port_hours', '{replica}', ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(hour, 1000000)))
  ORDER BY (proto, port, sensor, hour);
CREATE TABLE IF NOT EXISTS {db}.port_hours ON CLUSTER {cluster} AS {db}.port_hours_local
  ENGINE = Distributed({cluster}, {db}, port_hours_local, cityHash64(proto, port));

CREATE TABLE IF NOT EXISTS {db}.port_days_local ON CLUSTER {cluster} (
  day UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/port_days', '{replica}', ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (proto, port, sensor, day);
CREATE TABLE IF NOT EXISTS {db}.port_days ON CLUSTER {cluster} AS {db}.port_days_local
  ENGINE = Distributed({cluster}, {db}, port_days_local, cityHash64(proto, port));

CREATE TABLE IF NOT EXISTS {db}.rollup_hours_local ON CLUSTER {cluster} (hour UInt64, dirty UInt8, ver UInt64)
  ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/rollup_hours', '{replica}', ver) ORDER BY hour;
CREATE TABLE IF NOT EXISTS {db}.rollup_hours ON CLUSTER {cluster} AS {db}.rollup_hours_local
  ENGINE = Distributed({cluster}, {db}, rollup_hours_local, hour);

CREATE TABLE IF NOT EXISTS {db}.rollup_state_local ON CLUSTER {cluster} (key String, value UInt64, ver UInt64)
  ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/rollup_state', '{replica}', ver) ORDER BY key;
CREATE TABLE IF NOT EXISTS {db}.rollup_state ON CLUSTER {cluster} AS {db}.rollup_state_local
  ENGINE = Distributed({cluster}, {db}, rollup_state_local, cityHash64(key));

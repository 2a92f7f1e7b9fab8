-- Cluster variant of ../005_rollups_by_key.sql (replace {db} and {cluster}):
-- replicated roll-up tables ordered by key first, behind Distributed
-- tables port_hours_by_key and port_days_by_key (sharded by port as
-- before); the rows are copied through the Distributed tables, then the
-- old tables dropped. Safe to run again after a failure (the copy repeats;
-- an empty stand-in replaces an old table already dropped). Upgrade with
-- the aggregators stopped (see ../005_rollups_by_key.sql).

CREATE TABLE IF NOT EXISTS {db}.port_hours_by_key_local ON CLUSTER {cluster} (
  hour UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/port_hours_by_key', '{replica}', ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(hour, 1000000)))
  ORDER BY (sensor, proto, port, hour);
CREATE TABLE IF NOT EXISTS {db}.port_hours_by_key ON CLUSTER {cluster} AS {db}.port_hours_by_key_local
  ENGINE = Distributed({cluster}, {db}, port_hours_by_key_local, cityHash64(proto, port));
CREATE TABLE IF NOT EXISTS {db}.port_hours ON CLUSTER {cluster} AS {db}.port_hours_by_key_local ENGINE = Memory;
INSERT INTO {db}.port_hours_by_key SELECT * FROM {db}.port_hours;
DROP TABLE {db}.port_hours ON CLUSTER {cluster};
DROP TABLE IF EXISTS {db}.port_hours_local ON CLUSTER {cluster};

CREATE TABLE IF NOT EXISTS {db}.port_days_by_key_local ON CLUSTER {cluster} (
  day UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  windows UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/port_days_by_key', '{replica}', ver)
  PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000000)))
  ORDER BY (sensor, proto, port, day);
CREATE TABLE IF NOT EXISTS {db}.port_days_by_key ON CLUSTER {cluster} AS {db}.port_days_by_key_local
  ENGINE = Distributed({cluster}, {db}, port_days_by_key_local, cityHash64(proto, port));
CREATE TABLE IF NOT EXISTS {db}.port_days ON CLUSTER {cluster} AS {db}.port_days_by_key_local ENGINE = Memory;
INSERT INTO {db}.port_days_by_key SELECT * FROM {db}.port_days;
DROP TABLE {db}.port_days ON CLUSTER {cluster};
DROP TABLE IF EXISTS {db}.port_days_local ON CLUSTER {cluster};

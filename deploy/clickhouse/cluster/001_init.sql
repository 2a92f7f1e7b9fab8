-- darkscope on a ClickHouse *cluster*: the same tables as ../001_init.sql,
-- stored as Replicated*MergeTree "<name>_local" tables on every node and
-- served through Distributed tables with the names darkscope queries.
-- Applied by `darkscope-aggregator migrate` when [clickhouse] cluster is
-- set, with {db} and {cluster} replaced; the macros {shard} and {replica}
-- come from each node's config (cluster.xml). Needs ZooKeeper (or
-- ClickHouse Keeper) as any replicated table does. `migrate` creates
-- {db} and schema_migrations (replicated to every node) before this file.
--
-- Sharding keeps every row of one sensor on one shard (cityHash64(sensor)),
-- so FINAL on each shard still collapses a window's duplicates; source
-- rows shard by address so a source lookup touches one shard.
-- Run by the test suite on 2 shards x 2 replicas with ZooKeeper
-- (aggregator/tests/store_conformance.rs, clickhouse_cluster_*).


CREATE TABLE IF NOT EXISTS {db}.sensors_local ON CLUSTER {cluster} (
  id String, country String, token_hash String,
  created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/sensors', '{replica}', ver) ORDER BY id;
CREATE TABLE IF NOT EXISTS {db}.sensors ON CLUSTER {cluster} AS {db}.sensors_local
  ENGINE = Distributed({cluster}, {db}, sensors_local, cityHash64(id));

CREATE TABLE IF NOT EXISTS {db}.analysts_local ON CLUSTER {cluster} (
  name String, token_hash String, created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/analysts', '{replica}', ver) ORDER BY name;
CREATE TABLE IF NOT EXISTS {db}.analysts ON CLUSTER {cluster} AS {db}.analysts_local
  ENGINE = Distributed({cluster}, {db}, analysts_local, cityHash64(name));

CREATE TABLE IF NOT EXISTS {db}.subscribers_local ON CLUSTER {cluster} (
  id String, prefixes String, token_hash String, created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/subscribers', '{replica}', ver) ORDER BY id;
CREATE TABLE IF NOT EXISTS {db}.subscribers ON CLUSTER {cluster} AS {db}.subscribers_local
  ENGINE = Distributed({cluster}, {db}, subscribers_local, cityHash64(id));

CREATE TABLE IF NOT EXISTS {db}.alerts_local ON CLUSTER {cluster} (
  id UInt64, proto UInt8, port UInt16, scope String, start UInt64, severity String,
  baseline Float64, observed UInt64, state String, resolved_at UInt64, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/alerts', '{replica}', ver) ORDER BY id;
CREATE TABLE IF NOT EXISTS {db}.alerts ON CLUSTER {cluster} AS {db}.alerts_local
  ENGINE = Distributed({cluster}, {db}, alerts_local, cityHash64(id));

CREATE TABLE IF NOT EXISTS {db}.windows_local ON CLUSTER {cluster} (
  sensor String, start UInt64, end UInt64, stored_at UInt64, seq UInt64, country String,
  packets UInt64, bytes UInt64, sources UInt64, exact UInt8,
  received UInt64, kernel_dropped UInt64, if_dropped UInt64, pipeline_dropped UInt64,
  malformed UInt64, non_ip UInt64, not_darknet UInt64, spool_evicted UInt64,
  tcp_syn UInt64, backscatter UInt64, udp UInt64, icmp_echo UInt64, icmp_other UInt64,
  tcp_other UInt64, other UInt64, fp_mirai UInt64, fp_zmap UInt64, fp_masscan UInt64,
  sources_hll String, darknet String, monitored_ipv4 UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/windows', '{replica}', stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (sensor, start);
CREATE TABLE IF NOT EXISTS {db}.windows ON CLUSTER {cluster} AS {db}.windows_local
  ENGINE = Distributed({cluster}, {db}, windows_local, cityHash64(sensor));

CREATE TABLE IF NOT EXISTS {db}.port_rows_local ON CLUSTER {cluster} (
  start UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  stored_at UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/port_rows', '{replica}', stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (proto, port, start, sensor);
CREATE TABLE IF NOT EXISTS {db}.port_rows ON CLUSTER {cluster} AS {db}.port_rows_local
  ENGINE = Distributed({cluster}, {db}, port_rows_local, cityHash64(sensor));

CREATE TABLE IF NOT EXISTS {db}.sources_local ON CLUSTER {cluster} (
  start UInt64, sensor String, ip String, packets UInt64, bytes UInt64, ports UInt64,
  destinations UInt64, classes UInt8, fingerprints UInt8, first_seen UInt64,
  last_seen UInt64, top_ports String, stored_at UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/sources', '{replica}', stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (ip, start, sensor);
CREATE TABLE IF NOT EXISTS {db}.sources ON CLUSTER {cluster} AS {db}.sources_local
  ENGINE = Distributed({cluster}, {db}, sources_local, cityHash64(ip));

CREATE TABLE IF NOT EXISTS {db}.peer_state_local ON CLUSTER {cluster} (
  peer String, cursor UInt64, last_pull UInt64, last_success UInt64, last_error String,
  errors UInt64, imported UInt64, newest_window_end UInt64, tlp String, ver UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/peer_state', '{replica}', ver) ORDER BY peer;
CREATE TABLE IF NOT EXISTS {db}.peer_state ON CLUSTER {cluster} AS {db}.peer_state_local
  ENGINE = Distributed({cluster}, {db}, peer_state_local, cityHash64(peer));

CREATE TABLE IF NOT EXISTS {db}.export_audit_local ON CLUSTER {cluster} (
  time UInt64, peer String, share String, tlp String, cursor_from UInt64, cursor_to UInt64,
  observations UInt64, port_rows UInt64, source_rows UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/export_audit', '{replica}')
  PARTITION BY toYYYYMM(toDateTime(intDiv(time, 1000000)))
  ORDER BY (time, peer);
CREATE TABLE IF NOT EXISTS {db}.export_audit ON CLUSTER {cluster} AS {db}.export_audit_local
  ENGINE = Distributed({cluster}, {db}, export_audit_local, rand());

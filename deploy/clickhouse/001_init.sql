-- darkscope on ClickHouse, migration 001: the tables behind the Store trait.
-- Applied by `darkscope-aggregator migrate`; {db} is the configured database.
-- Tested on ClickHouse 18.16 (Debian 12's clickhouse-server); uses only SQL
-- that old and current releases both accept (no TTL clause: that needs
-- 19.6+, so retention deletes by mutation instead).
--
-- Idempotency without transactions: every table that an insert may repeat
-- is a ReplacingMergeTree keyed by what makes a row unique and versioned by
-- the time it was stored; readers use FINAL, so a retried or concurrent
-- insert (another replica) is seen once, and a federation import that
-- replaces a window wins by its newer version.

CREATE TABLE IF NOT EXISTS {db}.sensors (
  id String, country String, token_hash String,
  created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY id;

CREATE TABLE IF NOT EXISTS {db}.analysts (
  name String, token_hash String, created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY name;

CREATE TABLE IF NOT EXISTS {db}.subscribers (
  id String, prefixes String, token_hash String, created UInt64, revoked UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY id;

CREATE TABLE IF NOT EXISTS {db}.alerts (
  id UInt64, proto UInt8, port UInt16, scope String, start UInt64, severity String,
  baseline Float64, observed UInt64, state String, resolved_at UInt64, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY id;

-- One row per (sensor, window): health, class totals, the sources sketch
-- (base64), and `seq`, the federation export position of local windows.
CREATE TABLE IF NOT EXISTS {db}.windows (
  sensor String, start UInt64, end UInt64, stored_at UInt64, seq UInt64, country String,
  packets UInt64, bytes UInt64, sources UInt64, exact UInt8,
  received UInt64, kernel_dropped UInt64, if_dropped UInt64, pipeline_dropped UInt64,
  malformed UInt64, non_ip UInt64, not_darknet UInt64, spool_evicted UInt64,
  tcp_syn UInt64, backscatter UInt64, udp UInt64, icmp_echo UInt64, icmp_other UInt64,
  tcp_other UInt64, other UInt64, fp_mirai UInt64, fp_zmap UInt64, fp_masscan UInt64,
  sources_hll String, darknet String, monitored_ipv4 UInt64
) ENGINE = ReplacingMergeTree(stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (sensor, start);

-- Per (window, sensor, protocol, port), ordered for a port's series and top ports.
CREATE TABLE IF NOT EXISTS {db}.port_rows (
  start UInt64, sensor String, country String, proto UInt8, port UInt16,
  packets UInt64, bytes UInt64, sources UInt64, destinations UInt64, hll String,
  stored_at UInt64
) ENGINE = ReplacingMergeTree(stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (proto, port, start, sensor);

-- Per (window, sensor, source address), ordered for a source's history.
CREATE TABLE IF NOT EXISTS {db}.sources (
  start UInt64, sensor String, ip String, packets UInt64, bytes UInt64, ports UInt64,
  destinations UInt64, classes UInt8, fingerprints UInt8, first_seen UInt64,
  last_seen UInt64, top_ports String, stored_at UInt64
) ENGINE = ReplacingMergeTree(stored_at)
  PARTITION BY toYYYYMMDD(toDateTime(intDiv(start, 1000000)))
  ORDER BY (ip, start, sensor);

CREATE TABLE IF NOT EXISTS {db}.peer_state (
  peer String, cursor UInt64, last_pull UInt64, last_success UInt64, last_error String,
  errors UInt64, imported UInt64, newest_window_end UInt64, tlp String, ver UInt64
) ENGINE = ReplacingMergeTree(ver) ORDER BY peer;

CREATE TABLE IF NOT EXISTS {db}.export_audit (
  time UInt64, peer String, share String, tlp String, cursor_from UInt64, cursor_to UInt64,
  observations UInt64, port_rows UInt64, source_rows UInt64
) ENGINE = MergeTree
  PARTITION BY toYYYYMM(toDateTime(intDiv(time, 1000000)))
  ORDER BY (time, peer);

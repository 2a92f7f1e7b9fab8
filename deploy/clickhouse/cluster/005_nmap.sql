-- Cluster variant of ../005_nmap.sql (replace {db} and {cluster}).
ALTER TABLE {db}.windows_local ON CLUSTER {cluster} ADD COLUMN fp_nmap UInt64 DEFAULT 0;
-- The Distributed table holds no rows (inserts are synchronous) and cannot
-- be altered ON CLUSTER when shards replicate: it is created again with the
-- new column (as migration 004 does for subscribers).
DROP TABLE IF EXISTS {db}.windows ON CLUSTER {cluster};
CREATE TABLE IF NOT EXISTS {db}.windows ON CLUSTER {cluster} AS {db}.windows_local
  ENGINE = Distributed({cluster}, {db}, windows_local, cityHash64(sensor));

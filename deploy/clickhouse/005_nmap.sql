-- darkscope on ClickHouse, migration 005: windows count the sources that
-- carry the Nmap fingerprint (0 for windows stored before).

ALTER TABLE {db}.windows ADD COLUMN fp_nmap UInt64 DEFAULT 0;

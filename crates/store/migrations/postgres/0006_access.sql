-- Issue 15: what a node's endpoint serves only (keep in step with ../sqlite/0006_access.sql): the
-- requestor's method, origin and address allowlists, as asked at create time and validated by
-- the server, passed in the runtime's start arguments on every start. JSON
-- {"methods": [...], "allow_origins": [...], "allow_ips": [...]}, each list absent for "any";
-- NULL for none at all.
ALTER TABLE nodes ADD COLUMN access TEXT;

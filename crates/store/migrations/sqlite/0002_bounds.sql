-- Issue 14: bounded growth. Nonces remember the client (IP, or IPv6 /64) they were issued to, so
-- that the outstanding ones per client can be capped; events are purged by age.
ALTER TABLE nonces ADD COLUMN client TEXT;
CREATE INDEX nonces_client_expires_at ON nonces (client, expires_at);
CREATE INDEX node_events_at ON node_events (at);

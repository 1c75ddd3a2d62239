-- The replacement of a failed node is looked up by its predecessor (GET /nodes/{id}).
CREATE INDEX nodes_replaces ON nodes (replaces);

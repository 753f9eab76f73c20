-- The outbox relay (postgres_outbox input, pipelines/outbox-relay.yaml):
-- 1. A NOTIFY on every INSERT into an outbox table, so the relay wakes at once instead of at its
--    next poll. Channel `outbox_relay`, payload `schema.table`. One notification per statement
--    (a multi-row INSERT wakes the relay once); PostgreSQL delivers it at COMMIT and drops it on
--    ROLLBACK. The relay still polls on an interval: a missed notification only delays.
-- 2. A partial index per table on the unpublished rows by aggregate, for the relay's check that no
--    earlier event of the same aggregate is still unpublished (per-aggregate order).

CREATE SCHEMA IF NOT EXISTS outbox_relay;

CREATE FUNCTION outbox_relay.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  RETURN NULL;
END
$$;

CREATE TRIGGER outbox_relay_notify AFTER INSERT ON whatsapp_handler.outbox_events
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('outbox_relay');
CREATE TRIGGER outbox_relay_notify AFTER INSERT ON darwin_ingestor.outbox_events
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('outbox_relay');
CREATE TRIGGER outbox_relay_notify AFTER INSERT ON journey_matcher.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('outbox_relay');
CREATE TRIGGER outbox_relay_notify AFTER INSERT ON data_retention.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('outbox_relay');

CREATE INDEX outbox_events_unpublished_by_aggregate_idx ON whatsapp_handler.outbox_events (aggregate_id, created_at, id) WHERE published_at IS NULL;
CREATE INDEX outbox_events_unpublished_by_aggregate_idx ON darwin_ingestor.outbox_events (aggregate_id, created_at, id) WHERE published_at IS NULL;
CREATE INDEX outbox_unprocessed_by_aggregate_idx ON journey_matcher.outbox (aggregate_id, created_at, id) WHERE processed_at IS NULL;
CREATE INDEX outbox_unpublished_by_aggregate_idx ON data_retention.outbox (aggregate_id, created_at, id) WHERE NOT published;

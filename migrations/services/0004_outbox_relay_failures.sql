-- Events the outbox relay could not publish.
--
-- outbox_relay.delivery_errors: one row per failed attempt. The relay pipeline's dead_letter
-- output (a `postgres` output, see pipelines/outbox-relay.yaml) writes it: every message the
-- kafka output or the relay itself rejects (unknown topic, too large, payload not JSON) lands
-- here with the error, the dlq_* headers and the payload.
--
-- outbox_relay.event_failures: per event (source, event id) the attempts so far, the last error,
-- when the relay tries again (next_attempt_at, set by the relay with exponential backoff) and,
-- after the last attempt, dead_lettered_at: the relay no longer publishes the event, and later
-- events of its aggregate go on. A trigger on delivery_errors counts the attempts. To publish a
-- dead-lettered event again after fixing the cause, delete its event_failures row.

CREATE SCHEMA IF NOT EXISTS outbox_relay;

CREATE TABLE outbox_relay.event_failures (
  source           text        NOT NULL,
  event_id         text        NOT NULL,
  attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_error       text,
  last_error_code  text,
  first_failed_at  timestamptz NOT NULL DEFAULT now(),
  last_failed_at   timestamptz NOT NULL DEFAULT now(),
  next_attempt_at  timestamptz,
  dead_lettered_at timestamptz,
  PRIMARY KEY (source, event_id)
);
CREATE INDEX event_failures_dead_lettered_idx ON outbox_relay.event_failures (source) WHERE dead_lettered_at IS NOT NULL;

CREATE TABLE outbox_relay.delivery_errors (
  id         bigserial   PRIMARY KEY,
  source     text        NOT NULL,
  event_id   text        NOT NULL,
  event_type text,
  error_code text,
  error      text,
  component  text,
  payload    text,
  headers    jsonb,
  failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_errors_event_idx ON outbox_relay.delivery_errors (source, event_id);

CREATE FUNCTION outbox_relay.count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO outbox_relay.event_failures AS f (source, event_id, attempts, last_error, last_error_code, first_failed_at, last_failed_at)
  VALUES (NEW.source, NEW.event_id, 1, NEW.error, NEW.error_code, NEW.failed_at, NEW.failed_at)
  ON CONFLICT (source, event_id) DO UPDATE
    SET attempts = f.attempts + 1, last_error = EXCLUDED.last_error, last_error_code = EXCLUDED.last_error_code, last_failed_at = EXCLUDED.last_failed_at;
  RETURN NULL;
END
$$;

CREATE TRIGGER delivery_errors_count_attempt AFTER INSERT ON outbox_relay.delivery_errors
  FOR EACH ROW EXECUTE FUNCTION outbox_relay.count_attempt();

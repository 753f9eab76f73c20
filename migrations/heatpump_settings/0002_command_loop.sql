-- The settings command loop (DOMAIN.md system 3, issue 6): dispatch, confirmation, audit.
-- docs/command-loop.md describes the pipelines that use these tables.
--
-- 1. outbox gets the columns the postgres_outbox input reads (aggregate_type, event_type), and a
--    NOTIFY on insert so pipelines/command-dispatch.yaml sends a new command at once.
-- 2. outbox_relay.event_failures / delivery_errors / relay_state: the input's failure record and
--    state (the same layout as migrations/services/0002 and 0004). The dispatcher's attempts are
--    also kept in the outbox row (retry_count, next_attempt_at, error_message, status failed).
-- 3. device_reports: per device the newest reported settings (pipelines/command-confirm.yaml
--    writes it from telemetry), with the Kafka position and device time of that report, so
--    duplicate and stale telemetry change nothing.
-- 4. Trigger on pending -> published (the dispatcher's mark): older published commands of the
--    device whose settings the new one all covers become superseded; and when a report received
--    since this dispatch attempt began already carries every commanded value (the device answered
--    before the mark was committed), the row is confirmed at once. The trigger locks the device's
--    device_reports row first, and the confirm pipeline writes that row before it looks for
--    published commands, so one of the two always sees the other.
-- 5. settings_events: every status transition of an outbox row (audit trail), an outbox of its
--    own that pipelines/command-events.yaml relays to the Kafka topic heatpump-settings-events.

ALTER TABLE outbox
  ADD COLUMN aggregate_type text NOT NULL DEFAULT 'heatpump',
  ADD COLUMN event_type     text NOT NULL DEFAULT 'settings.command';

-- Per-device order check of the dispatcher (no earlier pending command of the device).
CREATE INDEX outbox_pending_by_device_idx ON outbox (aggregate_id, created_at, id) WHERE status = 'pending';

CREATE SCHEMA IF NOT EXISTS outbox_relay;

CREATE FUNCTION outbox_relay.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('command_dispatch');

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

CREATE TABLE relay_state (
  source          text        PRIMARY KEY,
  last_poll_at    timestamptz,
  published_total bigint      NOT NULL DEFAULT 0 CHECK (published_total >= 0),
  last_error      text,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- settings: the settable fields the device reported last (merged over earlier reports; a report
-- with some fields keeps the others). received_at: database time of that report. reported_ts:
-- the device's timestamp (telemetry older than it is stale). kafka_partition/kafka_offset: the
-- record it came from (a record at or below it is a duplicate). A row without a report yet
-- (created by the publish trigger only to be locked) has received_at NULL.
CREATE TABLE device_reports (
  device_id       text PRIMARY KEY,
  settings        jsonb       NOT NULL DEFAULT '{}'::jsonb,
  reported_ts     float8,
  kafka_partition integer,
  kafka_offset    bigint,
  received_at     timestamptz
);

CREATE TABLE settings_events (
  id             bigserial   PRIMARY KEY,
  aggregate_id   text        NOT NULL,
  aggregate_type text        NOT NULL DEFAULT 'heatpump',
  event_type     text        NOT NULL,
  payload        jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  published_at   timestamptz
);
CREATE INDEX settings_events_unpublished_idx ON settings_events (aggregate_id, created_at, id) WHERE published_at IS NULL;

CREATE TRIGGER settings_events_notify AFTER INSERT ON settings_events
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_relay.notify_insert('settings_events');

-- pending -> published: supersede older covered commands, confirm at once from an early report.
CREATE FUNCTION outbox_on_publish() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r device_reports%ROWTYPE;
BEGIN
  -- Lock the device's report row (created empty if there is none): a confirm transaction that
  -- wrote a report is waited for, and one that comes later waits for this one.
  INSERT INTO device_reports AS d (device_id) VALUES (NEW.aggregate_id)
  ON CONFLICT (device_id) DO UPDATE SET device_id = d.device_id
  RETURNING d.* INTO r;

  UPDATE outbox o
     SET status = 'superseded'
   WHERE o.aggregate_id = NEW.aggregate_id AND o.status = 'published' AND o.id < NEW.id
     AND ARRAY(SELECT jsonb_object_keys(o.payload -> 'settings')) <@ ARRAY(SELECT jsonb_object_keys(NEW.payload -> 'settings'));

  -- now() is the start of the dispatcher's transaction, which claimed the row before sending it:
  -- a report received since then can be the device's answer to this command.
  IF r.received_at IS NOT NULL AND r.received_at >= now() AND r.settings @> (NEW.payload -> 'settings') THEN
    NEW.status := 'confirmed';
    NEW.confirmed_at := clock_timestamp();
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER outbox_on_publish BEFORE UPDATE OF status ON outbox
  FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status = 'published')
  EXECUTE FUNCTION outbox_on_publish();

-- Every status change of a command as an event (a confirmation straight from pending is two
-- events: published, then confirmed).
CREATE FUNCTION outbox_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  s text;
  prev text := OLD.status;
BEGIN
  FOREACH s IN ARRAY (CASE WHEN OLD.status = 'pending' AND NEW.status = 'confirmed' THEN ARRAY['published', 'confirmed'] ELSE ARRAY[NEW.status] END) LOOP
    INSERT INTO settings_events (aggregate_id, event_type, payload)
    VALUES (NEW.aggregate_id, 'settings.command.' || s, jsonb_build_object(
      'outbox_id', NEW.id, 'device_id', NEW.aggregate_id, 'status', s, 'previous_status', prev,
      'settings', NEW.payload -> 'settings', 'at', clock_timestamp(),
      'created_at', NEW.created_at, 'published_at', NEW.published_at, 'confirmed_at', NEW.confirmed_at,
      'retry_count', NEW.retry_count, 'error_message', NEW.error_message));
    prev := s;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER outbox_audit AFTER UPDATE OF status ON outbox
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION outbox_audit();

-- The outbox tables of the four services (DOMAIN.md system 4) that one relay publishes to Kafka.
-- Same columns everywhere; correlation_id only in whatsapp_handler and journey_matcher; the
-- published marker differs per schema:
--   whatsapp_handler.outbox_events  published_at timestamptz, NULL = unpublished
--   darwin_ingestor.outbox_events   published_at timestamptz, NULL = unpublished
--   journey_matcher.outbox          processed_at timestamptz, NULL = unprocessed
--   data_retention.outbox           published boolean, false = unpublished
-- Each table has a partial index on its unpublished rows in creation order, the relay's query.

CREATE SCHEMA IF NOT EXISTS whatsapp_handler;
CREATE SCHEMA IF NOT EXISTS darwin_ingestor;
CREATE SCHEMA IF NOT EXISTS journey_matcher;
CREATE SCHEMA IF NOT EXISTS data_retention;

CREATE TABLE whatsapp_handler.outbox_events (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregate_id   text        NOT NULL,
  aggregate_type text        NOT NULL,
  event_type     text        NOT NULL,
  payload        jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  correlation_id text,
  published_at   timestamptz
);
CREATE INDEX outbox_events_unpublished_idx ON whatsapp_handler.outbox_events (created_at, id) WHERE published_at IS NULL;

CREATE TABLE darwin_ingestor.outbox_events (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregate_id   text        NOT NULL,
  aggregate_type text        NOT NULL,
  event_type     text        NOT NULL,
  payload        jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  published_at   timestamptz
);
CREATE INDEX outbox_events_unpublished_idx ON darwin_ingestor.outbox_events (created_at, id) WHERE published_at IS NULL;

CREATE TABLE journey_matcher.outbox (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregate_id   text        NOT NULL,
  aggregate_type text        NOT NULL,
  event_type     text        NOT NULL,
  payload        jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  correlation_id text,
  processed_at   timestamptz
);
CREATE INDEX outbox_unprocessed_idx ON journey_matcher.outbox (created_at, id) WHERE processed_at IS NULL;

CREATE TABLE data_retention.outbox (
  id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregate_id   text        NOT NULL,
  aggregate_type text        NOT NULL,
  event_type     text        NOT NULL,
  payload        jsonb       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  published      boolean     NOT NULL DEFAULT false
);
CREATE INDEX outbox_unpublished_idx ON data_retention.outbox (created_at, id) WHERE NOT published;

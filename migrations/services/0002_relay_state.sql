-- Per relay source (e.g. "whatsapp_handler.outbox_events"): when it was last polled, how many
-- events it published in total, and its last error. Kept by the relay itself.

CREATE TABLE relay_state (
  source          text        PRIMARY KEY,
  last_poll_at    timestamptz,
  published_total bigint      NOT NULL DEFAULT 0 CHECK (published_total >= 0),
  last_error      text,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

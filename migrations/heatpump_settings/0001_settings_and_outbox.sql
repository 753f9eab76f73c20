-- Settings state and the command outbox (DOMAIN.md system 3; issue 6 may extend both).
--
-- settings: one row per heat pump. The settable fields and their ranges are those of
-- schemas/heatpump-settings-patch.schema.json, checked here too so that no writer can store a
-- value the device would reject. NULL = not known yet. reported_at is the time of the newest
-- reported state the row reflects (the settings sink updates a row only with a newer one);
-- updated_at is when the row was last written.

CREATE TABLE settings (
  device_id             text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  indoor_target_temp    numeric(3,1) CHECK (indoor_target_temp BETWEEN 15 AND 30 AND indoor_target_temp % 0.5 = 0),
  mode                  smallint     CHECK (mode BETWEEN 0 AND 3),
  hot_water_target_temp numeric(3,1) CHECK (hot_water_target_temp BETWEEN 35 AND 65 AND hot_water_target_temp % 0.5 = 0),
  heating_curve         numeric      CHECK (heating_curve BETWEEN 0.2 AND 3.5),
  heating_curve_offset  numeric(2,1) CHECK (heating_curve_offset BETWEEN -5 AND 5 AND heating_curve_offset % 0.5 = 0),
  eco_mode              boolean,
  reported_at           timestamptz,
  updated_at            timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN settings.indoor_target_temp IS 'room temperature set point, degC, 15-30 in steps of 0.5';
COMMENT ON COLUMN settings.mode IS '0 off, 1 heating, 2 cooling, 3 auto';
COMMENT ON COLUMN settings.hot_water_target_temp IS 'hot water tank set point, degC, 35-65 in steps of 0.5';
COMMENT ON COLUMN settings.heating_curve IS 'heating curve slope, 0.2-3.5';
COMMENT ON COLUMN settings.heating_curve_offset IS 'heating curve parallel shift, K, -5 to 5 in steps of 0.5';
COMMENT ON COLUMN settings.reported_at IS 'time of the newest reported state this row reflects';

-- outbox: one command per row, written in the same transaction as the settings change.
-- pending -> published (PUBACK) -> confirmed (telemetry reports the values) | timed_out;
-- failed after the last attempt; superseded by a newer command for the same setting.
-- The dispatcher picks pending rows whose next_attempt_at has come, oldest first.
CREATE TABLE outbox (
  id              bigserial PRIMARY KEY,
  aggregate_id    text        NOT NULL,
  payload         jsonb       NOT NULL,
  status          text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'published', 'confirmed', 'failed', 'timed_out', 'superseded')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  published_at    timestamptz,
  confirmed_at    timestamptz,
  error_message   text,
  retry_count     integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
  next_attempt_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN outbox.aggregate_id IS 'the device id (settings.device_id)';

-- The dispatcher: WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at, id.
CREATE INDEX outbox_dispatch_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
-- Confirmation and the timeout sweep: the newest published row of a device.
CREATE INDEX outbox_published_idx ON outbox (aggregate_id, published_at DESC) WHERE status = 'published';

-- The settings API's PATCH as one statement (issue 6, session 4): settings_patch() does in one
-- call what pipelines/settings-api.yaml did in three statements (update the settings row, queue
-- the command in the outbox, supersede the older pending commands it covers), with its plans
-- cached per connection, plus the Idempotency-Key of the request. docs/settings-api.md describes
-- the behaviour; the pipeline calls `SELECT settings_patch($1, $2, $3, $4)`.
--
-- settings_idempotency_keys: one row per Idempotency-Key the API carried out (202), with the
-- request it was used for (device and body) and the answer that was given. A key is kept for the
-- TTL the caller passes (settings_patch's p_key_ttl); expired rows are reused when the key comes
-- again and deleted a few at a time by later keyed PATCHes (the created_at index).

CREATE TABLE settings_idempotency_keys (
  key        text        PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
  request    jsonb       NOT NULL,
  response   json,
  outbox_id  bigint,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX settings_idempotency_keys_expires_idx ON settings_idempotency_keys (expires_at);

COMMENT ON TABLE settings_idempotency_keys IS 'Idempotency-Key of PATCH /api/v1/heatpump/settings/{device_id}: the request a key was used for and the answer given';
COMMENT ON COLUMN settings_idempotency_keys.request IS '{"device_id": ..., "settings": <the PATCH body>}; the same key with another request is refused';
COMMENT ON COLUMN settings_idempotency_keys.response IS 'the 202 body given the first time, given again for a repeat';

-- One PATCH. Returns the 202 body (one row), or no row when the device does not exist (nothing
-- is written then). Raises SQLSTATE 22023 when the key was used for another request (the API
-- answers 422); any other error rolls back the whole call.
--
-- Order: (1) the key row first, so that a second request with the same key waits for the first
-- one's transaction at the unique index and then sees its answer; (2) the settings row (its lock
-- serialises PATCHes of one device); (3) the outbox row, its payload complete with the id from
-- nextval(); (4) older pending commands whose settings the new one all covers become superseded
-- (the audit trigger of 0002 records each); (5) the answer, kept with the key.
CREATE FUNCTION settings_patch(p_device_id text, p_patch jsonb, p_idempotency_key text DEFAULT NULL, p_key_ttl interval DEFAULT interval '24 hours')
RETURNS SETOF json LANGUAGE plpgsql AS $$
DECLARE
  req jsonb := jsonb_build_object('device_id', p_device_id, 'settings', p_patch);
  k settings_idempotency_keys%ROWTYPE;
  s settings%ROWTYPE;
  new_id bigint;
  answer json;
BEGIN
  IF p_idempotency_key IS NOT NULL THEN
    INSERT INTO settings_idempotency_keys AS i (key, request, expires_at)
    VALUES (p_idempotency_key, req, now() + p_key_ttl)
    ON CONFLICT (key) DO UPDATE
      SET request = EXCLUDED.request, response = NULL, outbox_id = NULL, created_at = now(), expires_at = EXCLUDED.expires_at
      WHERE i.expires_at <= now()
    RETURNING i.* INTO k;
    IF NOT FOUND THEN
      -- A live key: a repeat, or a key used for something else.
      SELECT * INTO k FROM settings_idempotency_keys WHERE key = p_idempotency_key;
      IF k.request = req THEN
        RETURN NEXT k.response;
        RETURN;
      END IF;
      RAISE EXCEPTION 'Idempotency-Key % was already used for another request (%)', p_idempotency_key, k.request
        USING ERRCODE = 'invalid_parameter_value', HINT = 'send a new key for a new request';
    END IF;
    -- Housekeeping: a few expired keys of others (SKIP LOCKED: concurrent PATCHes do not wait).
    DELETE FROM settings_idempotency_keys
     WHERE key IN (SELECT key FROM settings_idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT 4 FOR UPDATE SKIP LOCKED);
  END IF;

  UPDATE settings AS t
     SET (indoor_target_temp, mode, hot_water_target_temp, heating_curve, heating_curve_offset, eco_mode, updated_at) =
         (SELECT p.indoor_target_temp, p.mode, p.hot_water_target_temp, p.heating_curve, p.heating_curve_offset, p.eco_mode, now()
            FROM jsonb_populate_record(t, p_patch) AS p)
   WHERE t.device_id = p_device_id
  RETURNING t.* INTO s;
  IF NOT FOUND THEN
    IF p_idempotency_key IS NOT NULL THEN
      DELETE FROM settings_idempotency_keys WHERE key = p_idempotency_key;
    END IF;
    RETURN;
  END IF;

  new_id := nextval(pg_get_serial_sequence('outbox', 'id'));
  INSERT INTO outbox (id, aggregate_id, payload)
  VALUES (new_id, p_device_id, jsonb_build_object('outbox_id', new_id, 'device_id', p_device_id, 'settings', p_patch));

  UPDATE outbox AS o
     SET status = 'superseded'
   WHERE o.aggregate_id = p_device_id AND o.status = 'pending' AND o.id < new_id
     AND ARRAY(SELECT jsonb_object_keys(o.payload -> 'settings')) <@ ARRAY(SELECT jsonb_object_keys(p_patch));

  answer := json_build_object(
    'device_id', s.device_id, 'indoor_target_temp', s.indoor_target_temp, 'mode', s.mode,
    'hot_water_target_temp', s.hot_water_target_temp, 'heating_curve', s.heating_curve,
    'heating_curve_offset', s.heating_curve_offset, 'eco_mode', s.eco_mode,
    'reported_at', s.reported_at, 'updated_at', s.updated_at,
    'outbox_id', new_id, 'outbox_status', 'pending');

  IF p_idempotency_key IS NOT NULL THEN
    UPDATE settings_idempotency_keys SET response = answer, outbox_id = new_id WHERE key = p_idempotency_key;
  END IF;
  RETURN NEXT answer;
END
$$;

COMMENT ON FUNCTION settings_patch(text, jsonb, text, interval) IS 'PATCH /api/v1/heatpump/settings/{device_id} in one statement: settings row, outbox command, supersede, Idempotency-Key (pipelines/settings-api.yaml)';

-- settings_patch_batch() takes the settings rows of a batch in device order (issue 6, session 5).
--
-- 0004 ran the requests of a batch in the order they arrived. Two batches in flight at the same
-- time (the API's step has 4 connections) that hold requests for the same two devices in the
-- opposite order wait for each other's settings row: a deadlock, which PostgreSQL finds only
-- after deadlock_timeout (1 s by default), then aborts one batch, which the API runs again. The
-- 32-client throughput bench hit 16 of them in 23 s (each one holding up to 64 requests for more
-- than a second: the 1.2 s p99 against a 25 ms median; docs/benchmarks.md, settings command
-- loop, session 5). Taking the rows in one global order (device id; requests of the same device
-- in arrival order, so the later one still supersedes the earlier) makes a cycle impossible:
-- batches only queue behind each other.
--
-- Unchanged: one output row per request with batch_index = its position in the arrays (the rows
-- come out in device order; the API matches them by batch_index), each request in a block of its
-- own, the same errors.
CREATE OR REPLACE FUNCTION settings_patch_batch(p_device_ids text[], p_patches jsonb[], p_idempotency_keys text[], p_key_ttl interval DEFAULT interval '24 hours')
RETURNS TABLE (batch_index integer, answer json, error_code text, error text) LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  a json;
BEGIN
  FOR i IN SELECT u.ord::integer FROM unnest(p_device_ids) WITH ORDINALITY AS u(device_id, ord) ORDER BY u.device_id COLLATE "C", u.ord LOOP
    batch_index := i;
    answer := NULL;
    error_code := NULL;
    error := NULL;
    BEGIN
      SELECT x INTO a FROM settings_patch(p_device_ids[i], p_patches[i], p_idempotency_keys[i], p_key_ttl) AS x;
      IF FOUND THEN
        answer := a;
      ELSE
        error_code := 'NOT_FOUND';
        error := format('device %s not found', p_device_ids[i]);
      END IF;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
      error_code := 'WRITE_REJECTED';
      error := format('PostgreSQL rejected the row: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
    END;
    RETURN NEXT;
  END LOOP;
END
$$;

COMMENT ON FUNCTION settings_patch_batch(text[], jsonb[], text[], interval) IS 'settings_patch() for several requests in one call, in device order (no deadlock between batches); one row per request (batch_index), refused ones with error_code/error and nothing written (pipelines/settings-api.yaml, batch_size)';

-- Several PATCHes in one call (issue 6, session 4): the settings API's postgres step with
-- batch_size > 1 hands the requests that queued while its connections were busy to this function
-- together, in one transaction. Why: every PATCH transaction NOTIFYs the dispatcher (the outbox
-- trigger of 0002), and PostgreSQL serialises the commits of all notifying transactions of the
-- cluster behind one lock held across the WAL flush, so one PATCH per transaction tops out at a
-- few hundred a second on this kind of machine (docs/benchmarks.md, settings command loop,
-- session 4). A batch takes that lock and flushes once.
--
-- One output row per request, batch_index = its position (1-based) in the arrays. A request the
-- API must refuse gets error_code (NOT_FOUND: unknown device; WRITE_REJECTED: a value or an
-- Idempotency-Key the database refuses) and error, and leaves nothing behind: each request runs in
-- a block of its own (a subtransaction), so the others of the batch still commit. Other errors
-- (connection, deadlock, statement_timeout) fail the whole call, and the API retries or answers
-- every request of the batch alike.
CREATE FUNCTION settings_patch_batch(p_device_ids text[], p_patches jsonb[], p_idempotency_keys text[], p_key_ttl interval DEFAULT interval '24 hours')
RETURNS TABLE (batch_index integer, answer json, error_code text, error text) LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  a json;
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_device_ids, 1), 0) LOOP
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

COMMENT ON FUNCTION settings_patch_batch(text[], jsonb[], text[], interval) IS 'settings_patch() for several requests in one call; one row per request (batch_index), refused ones with error_code/error and nothing written (pipelines/settings-api.yaml, batch_size)';

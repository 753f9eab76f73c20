-- runner:timescaledb-only
--
-- Hypertables, compression after 7 days and retention of raw data for 1 year (TimescaleDB 2.x).
-- Runs only where the timescaledb extension is available (it must also be in
-- shared_preload_libraries); in plain mode `runner migrate` records it as skipped and applies it
-- when the extension becomes available. migrate_data moves rows already in the plain tables into
-- chunks (this takes a while on a large table). create_default_indexes => FALSE: 0001 created the
-- (device, time) primary keys and the time DESC indexes already.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('heatpump', 'time',
  chunk_time_interval => INTERVAL '1 day', create_default_indexes => FALSE,
  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('energy_consumption', 'time',
  chunk_time_interval => INTERVAL '1 day', create_default_indexes => FALSE,
  if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('temperature', 'time',
  chunk_time_interval => INTERVAL '7 days', create_default_indexes => FALSE,
  if_not_exists => TRUE, migrate_data => TRUE);

-- Compressed chunks are segmented by device, so one device's history stays cheap to read.
ALTER TABLE heatpump SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE energy_consumption SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_serial', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE temperature SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor_id', timescaledb.compress_orderby = 'time DESC');

SELECT add_compression_policy('heatpump', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('energy_consumption', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('temperature', INTERVAL '7 days', if_not_exists => TRUE);

-- Raw data for 1 year; the hourly aggregates of 0003 are kept (their refresh window, 3 days, lies
-- well inside the retention period, so dropping raw chunks never empties an aggregate).
SELECT add_retention_policy('heatpump', INTERVAL '1 year', if_not_exists => TRUE);
SELECT add_retention_policy('energy_consumption', INTERVAL '1 year', if_not_exists => TRUE);
SELECT add_retention_policy('temperature', INTERVAL '1 year', if_not_exists => TRUE);

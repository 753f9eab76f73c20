-- runner:timescaledb-only
-- runner:no-transaction
--
-- Hourly continuous aggregates (TimescaleDB 2.x). CREATE MATERIALIZED VIEW ... WITH
-- (timescaledb.continuous) ... WITH DATA refuses to run inside a transaction block, hence
-- no-transaction: the statements run one by one and the file is recorded after the last one.
-- Every statement is idempotent (IF NOT EXISTS, if_not_exists => TRUE), so a run that stopped
-- half way is simply run again. WITH DATA materialises what is already there (rows migrated from
-- plain tables); the policies keep the last 3 days fresh every 30 minutes, and
-- materialized_only = false adds the not yet materialised newest rows at query time.

CREATE MATERIALIZED VIEW IF NOT EXISTS heatpump_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
  time_bucket(INTERVAL '1 hour', time) AS bucket,
  device_id,
  count(*)              AS samples,
  avg(outdoor_temp)     AS outdoor_temp_avg,
  min(outdoor_temp)     AS outdoor_temp_min,
  max(outdoor_temp)     AS outdoor_temp_max,
  avg(indoor_temp)      AS indoor_temp_avg,
  avg(hot_water_temp)   AS hot_water_temp_avg,
  avg(supply_temp)      AS supply_temp_avg,
  avg(return_temp)      AS return_temp_avg,
  avg(compressor_on)    AS compressor_on_ratio,
  avg(power_input)      AS power_input_avg,
  max(power_input)      AS power_input_max,
  avg(heat_output)      AS heat_output_avg,
  avg(indoor_target_temp) AS indoor_target_temp_avg
FROM heatpump
GROUP BY bucket, device_id
WITH DATA;

SELECT add_continuous_aggregate_policy('heatpump_hourly',
  start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
  schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS energy_consumption_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
  time_bucket(INTERVAL '1 hour', time) AS bucket,
  device_serial,
  count(*)                 AS samples,
  avg(active_power_total)  AS active_power_avg,
  min(active_power_total)  AS active_power_min,
  max(active_power_total)  AS active_power_max,
  min(energy_import_total) AS energy_import_first,
  max(energy_import_total) AS energy_import_last,
  min(energy_export_total) AS energy_export_first,
  max(energy_export_total) AS energy_export_last
FROM energy_consumption
GROUP BY bucket, device_serial
WITH DATA;

SELECT add_continuous_aggregate_policy('energy_consumption_hourly',
  start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
  schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS temperature_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
  time_bucket(INTERVAL '1 hour', time) AS bucket,
  sensor_id,
  count(*)         AS samples,
  avg(temperature) AS temperature_avg,
  min(temperature) AS temperature_min,
  max(temperature) AS temperature_max,
  avg(humidity)    AS humidity_avg
FROM temperature
GROUP BY bucket, sensor_id
WITH DATA;

SELECT add_continuous_aggregate_policy('temperature_hourly',
  start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
  schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

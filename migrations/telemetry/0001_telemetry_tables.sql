-- The three telemetry tables as plain PostgreSQL tables. Where the timescaledb extension is
-- available, 0002 turns them into hypertables and 0003 adds hourly continuous aggregates.
--
-- One row per device and reading time: PRIMARY KEY (device, time) makes the sink idempotent
-- (INSERT ... ON CONFLICT DO NOTHING) and serves "this device, newest first" queries by scanning
-- the key backwards, so no second (device, time DESC) index is needed. time_idx serves time-range
-- queries over all devices (create_hypertable in 0002 is told not to add its own).
-- Columns follow docs/payloads.md; `raw` keeps the whole payload, registers and fields included
-- that have no column of their own. `time` is the payload's `timestamp` (Unix seconds).

CREATE TABLE heatpump (
  time                  timestamptz      NOT NULL,
  device_id             text             NOT NULL,
  outdoor_temp          double precision,
  indoor_temp           double precision,
  hot_water_temp        double precision,
  compressor_freq       double precision,
  compressor_on         double precision,
  supply_temp           double precision,
  return_temp           double precision,
  flow_rate             double precision,
  power_input           double precision,
  heat_output           double precision,
  operating_state       double precision,
  pump_speed            double precision,
  compressor_starts     double precision,
  indoor_target_temp    double precision,
  mode                  smallint,
  hot_water_target_temp double precision,
  heating_curve         double precision,
  heating_curve_offset  double precision,
  eco_mode              boolean,
  raw                   jsonb,
  PRIMARY KEY (device_id, time)
);
CREATE INDEX heatpump_time_idx ON heatpump (time DESC);

COMMENT ON TABLE heatpump IS 'Heat-pump telemetry (schemas/heatpump-telemetry.schema.json), one row per device_id and time';
COMMENT ON COLUMN heatpump.time IS 'payload timestamp (Unix seconds)';
COMMENT ON COLUMN heatpump.outdoor_temp IS 'd0: outdoor air temperature, degC';
COMMENT ON COLUMN heatpump.indoor_temp IS 'd1: room temperature at the heat pump''s room sensor, degC';
COMMENT ON COLUMN heatpump.hot_water_temp IS 'd2: domestic hot water tank temperature, degC';
COMMENT ON COLUMN heatpump.compressor_freq IS 'd3: compressor frequency, Hz (0 when stopped)';
COMMENT ON COLUMN heatpump.compressor_on IS 'd4: compressor running, 1 on, 0 off';
COMMENT ON COLUMN heatpump.supply_temp IS 'd5: supply (flow) water temperature, degC';
COMMENT ON COLUMN heatpump.return_temp IS 'd6: return water temperature, degC';
COMMENT ON COLUMN heatpump.flow_rate IS 'd7: water flow rate in the heating circuit, l/min';
COMMENT ON COLUMN heatpump.power_input IS 'd8: electrical power input, W';
COMMENT ON COLUMN heatpump.heat_output IS 'd9: thermal output, W (heat positive, cooling negative)';
COMMENT ON COLUMN heatpump.operating_state IS 'd10: 0 standby, 1 space heating, 2 space cooling, 3 hot water, 4 defrost';
COMMENT ON COLUMN heatpump.pump_speed IS 'd11: circulation pump speed, % (0 when stopped)';
COMMENT ON COLUMN heatpump.compressor_starts IS 'd12: compressor starts since installation (counter)';
COMMENT ON COLUMN heatpump.indoor_target_temp IS 'reported room temperature set point, degC';
COMMENT ON COLUMN heatpump.mode IS 'reported mode: 0 off, 1 heating, 2 cooling, 3 auto';
COMMENT ON COLUMN heatpump.raw IS 'the whole telemetry payload';

CREATE TABLE energy_consumption (
  time                 timestamptz      NOT NULL,
  device_serial        text             NOT NULL,
  active_power_total   double precision NOT NULL,
  active_power_l1      double precision,
  active_power_l2      double precision,
  active_power_l3      double precision,
  reactive_power_total double precision,
  apparent_power_total double precision,
  power_factor         double precision,
  voltage_l1           double precision,
  voltage_l2           double precision,
  voltage_l3           double precision,
  current_l1           double precision,
  current_l2           double precision,
  current_l3           double precision,
  frequency            double precision,
  energy_import_total  double precision,
  energy_export_total  double precision,
  raw                  jsonb,
  PRIMARY KEY (device_serial, time)
);
CREATE INDEX energy_consumption_time_idx ON energy_consumption (time DESC);

COMMENT ON TABLE energy_consumption IS 'Energy meter telemetry (schemas/energy-telemetry.schema.json): powers in W (negative = export), voltages V, currents A, frequency Hz, energy counters kWh';
COMMENT ON COLUMN energy_consumption.raw IS 'the whole meter payload';

CREATE TABLE temperature (
  time        timestamptz      NOT NULL,
  sensor_id   text             NOT NULL,
  temperature double precision NOT NULL,
  humidity    double precision,
  battery     double precision,
  location    text,
  raw         jsonb,
  PRIMARY KEY (sensor_id, time)
);
CREATE INDEX temperature_time_idx ON temperature (time DESC);

COMMENT ON TABLE temperature IS 'Room sensor telemetry (schemas/temperature-telemetry.schema.json): temperature degC, humidity and battery %';
COMMENT ON COLUMN temperature.raw IS 'the whole sensor payload';

-- The stack's databases, created once when the TimescaleDB volume is new. The schema comes from
-- `runner migrate` (the migrate service), not from here.
CREATE DATABASE telemetry;
CREATE DATABASE heatpump_settings;
CREATE DATABASE services;

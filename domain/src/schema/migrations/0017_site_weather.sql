-- The devices whose temperature_c is a site's outdoor temperature (the
-- registry's `weather = [...]`). Degree-days come from these only: a
-- hot-water sensor in the plant room is not the weather.
ALTER TABLE sites ADD COLUMN weather_devices text[] NOT NULL DEFAULT '{}';

-- Inspection cycles and the inspections technicians record (issue 20):
-- each device's class (A daily, B weekly, C monthly) or explicit cycle and
-- checklist; each inspection with who, when, the checklist's results and
-- readings; a failed item opens a work item with its deadline.
ALTER TABLE devices ADD COLUMN class text,
                    ADD COLUMN inspection_cycle text,
                    ADD COLUMN checklist jsonb NOT NULL DEFAULT '[]';

CREATE TABLE inspections (
    id            bigserial PRIMARY KEY,
    device_id     text NOT NULL,
    inspected_at  timestamptz NOT NULL,
    inspector     text NOT NULL,
    -- api, cli, mqtt (a patrol app) …
    source        text NOT NULL,
    results       jsonb NOT NULL DEFAULT '{}',
    readings      jsonb NOT NULL DEFAULT '{}',
    note          text,
    passed        boolean NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, inspected_at, inspector)
);
CREATE INDEX inspections_device_time ON inspections (device_id, inspected_at);

CREATE TABLE work_items (
    id             bigserial PRIMARY KEY,
    device_id      text NOT NULL,
    inspection_id  bigint REFERENCES inspections (id),
    item           text NOT NULL,
    -- small: not left overnight; large: not beyond a week
    size           text NOT NULL CHECK (size IN ('small', 'large')),
    opened_at      timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    closed_at      timestamptz,
    note           text
);
CREATE INDEX work_items_open ON work_items (device_id) WHERE closed_at IS NULL;

-- A lift's maintenance-mode visits count as its inspections: the
-- inspection rules read them every cycle, a few rows among many state
-- events (10,000 devices: 263 ms without this index, a few ms with it).
CREATE INDEX events_maintenance_idx ON events (device_id, ts)
    WHERE event_type = 'state' AND state = 'maintenance';

-- streamproc 008: custom event properties.
--
-- event_props_daily: custom events per site, UTC day, event name, property key and
-- property value (the value as text: strings as sent, numbers and booleans as JSON).
-- Bounded like the other rollups: at most 30 keys per event and 256 characters per
-- key or value, the rest counted under '(other)' (README "Custom event properties").
-- A plain table (like bots_daily): `streamproc maintain` does not partition it or
-- apply a retention to it yet.
CREATE TABLE event_props_daily (
    site   text   NOT NULL,
    day    date   NOT NULL,
    name   text   NOT NULL,
    key    text   NOT NULL,
    value  text   NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (site, day, name, key, value)
);

-- Each meter's consumption over each local day, beside the register at its
-- start: the next day's register minus this one's, where the next day is
-- known and the register did not fall (NULL otherwise). Daily consumption
-- panels then sum a column instead of running a window function over a
-- year of days per meter at query time. Maintained with the registers.
ALTER TABLE registers_daily ADD COLUMN used double precision;

UPDATE registers_daily r
   SET used = n.first - r.first
  FROM registers_daily n
 WHERE n.device_id = r.device_id AND n.metric = r.metric
   AND n.day = r.day + 1 AND n.first >= r.first;

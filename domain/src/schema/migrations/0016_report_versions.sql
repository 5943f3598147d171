-- Each generation of a site's quarterly report gets the next version
-- number: the cover prints it, so an auditor signs a version, and a
-- regenerated report is visibly another one.
ALTER TABLE reports ADD COLUMN version integer NOT NULL DEFAULT 1;

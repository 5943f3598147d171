-- A site's electricity supplier, as the registry names it
-- (`electricity_supplier = "clp"`): its tariff and grid emission factor
-- are the supplier's (`[[energy.supplier]]`), never chosen by the site id.
ALTER TABLE sites ADD COLUMN electricity_supplier text;

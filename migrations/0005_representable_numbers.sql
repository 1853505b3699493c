-- Money and quantities that read back. Append-only: never edit a landed
-- migration.
--
-- A money or quantity value, given or computed (line totals, quote totals),
-- is finite, below 10^15 in magnitude and has at most 15 significant digits,
-- so it crosses the wire as a double exactly. The service checks what
-- clients send; these constraints hold the computed values too (a line total
-- is quantity × unit_price − discount, a quote total the sum of its lines),
-- and are the backstop that nothing stored can fail to read back. Violations
-- of <table>_<field>_representable are reported as INVALID_ARGUMENT naming
-- the field.

CREATE FUNCTION crm_representable(x numeric) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT x IS NULL OR (abs(x) < 1e15
              AND length(ltrim(replace(trim_scale(abs(x))::text, '.', ''), '0')) <= 15) $$;

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('accounts', 'annual_revenue'),
        ('deals', 'value'),
        ('deals', 'probability'),
        ('quotes', 'value'),
        ('quotes', 'total'),
        ('line_items', 'quantity'),
        ('line_items', 'unit_price'),
        ('line_items', 'discount'),
        ('line_items', 'total')) AS v(tbl, col)
    LOOP
        -- NOT VALID first (no long lock), then validated where the data
        -- allows; a database holding older out-of-range values keeps working
        -- and is told which constraint stays unvalidated.
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (crm_representable(%I)) NOT VALID',
                       c.tbl, c.tbl || '_' || c.col || '_representable', c.col);
        BEGIN
            EXECUTE format('ALTER TABLE %I VALIDATE CONSTRAINT %I',
                           c.tbl, c.tbl || '_' || c.col || '_representable');
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE '%.% holds values beyond 10^15 or 15 significant digits; constraint % left NOT VALID',
                c.tbl, c.col, c.tbl || '_' || c.col || '_representable';
        END;
    END LOOP;
END
$$;

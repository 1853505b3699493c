-- List builds each row's JSON with row_to_json. Append-only: never edit a
-- landed migration.
--
-- Costed as the trivial function it is declared to be, row_to_json is
-- evaluated below a sort: a page whose matches are sorted (a selective
-- filter served by another index than the order's, e.g. a custom field
-- equal to a value 2000 records hold, at 1M records) built the JSON of
-- every match and kept 51 (30 ms of 33). Costed as what it is, it is
-- evaluated after the sort and the limit, for the page's rows only. (A
-- subquery choosing the page first does the same, but costs every list
-- 1.5 ms more planning.) Needs a superuser, as the LEAKPROOF marks do;
-- without one, lists stay correct and sorted pages stay slower.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER FUNCTION row_to_json(record) COST 1000;
    ELSE
        RAISE NOTICE 'not a superuser: row_to_json keeps its cost; sorted list pages build JSON for every match';
    END IF;
END
$$;

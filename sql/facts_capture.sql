-- The capture trigger's two ways of writing change rows, and rebuild_facts()'s
-- two ways of writing facts: the fast ones while our tables have the shape
-- we created, the general ones once someone adds indexes, triggers or
-- constraints. Privileges are the same either way.
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET client_min_messages = warning;
SET timezone = 'UTC';
CREATE SCHEMA cshop;
CREATE TABLE cshop.orders (id int PRIMARY KEY, cust int, at timestamptz NOT NULL, total numeric NOT NULL);
SELECT segments.attach_orders('cshop.orders', customer => 'cust', order_id => 'id', placed_at => 'at',
	amount => 'total', backfill => false);
SELECT segments.rebuild_facts('2026-06-01') AS rebuilt;

-- 1. Direct heap writes: one row per distinct key and statement, in the
-- writing transaction, with changed_at = now().
INSERT INTO cshop.orders VALUES (1, 5, '2026-05-01', 10), (2, 5, '2026-05-02', 20), (3, 6, '2026-05-03', 30), (4, NULL, '2026-05-04', 1);
UPDATE cshop.orders SET total = total + 1 WHERE id = 1;     -- old and new key are one
UPDATE cshop.orders SET cust = 7 WHERE id = 3;              -- both customers
BEGIN;
INSERT INTO cshop.orders VALUES (5, 9, '2026-05-05', 5);
SELECT key, changed_at = now() AS changed_now FROM segments.customer_changes WHERE key = '9';
ROLLBACK;
SELECT relation, key_kind, key FROM segments.customer_changes ORDER BY ctid;
-- a multi-row statement with many customers
INSERT INTO cshop.orders SELECT 100 + g, g % 50, '2026-05-10', g FROM generate_series(1, 500) g;
SELECT count(*) AS rows, count(DISTINCT key) AS keys FROM segments.customer_changes;

-- 2. The writer needs INSERT on customer_changes, on the table or on the
-- columns the trigger writes, as an INSERT statement would.
CREATE ROLE segments_test_writer;
GRANT USAGE ON SCHEMA cshop TO segments_test_writer;
GRANT INSERT ON cshop.orders TO segments_test_writer;
REVOKE INSERT ON segments.customer_changes FROM PUBLIC;
SET ROLE segments_test_writer;
INSERT INTO cshop.orders VALUES (10, 11, '2026-05-11', 1);
RESET ROLE;
GRANT INSERT (relation, key_kind, key) ON segments.customer_changes TO segments_test_writer;
SET ROLE segments_test_writer;
INSERT INTO cshop.orders VALUES (10, 11, '2026-05-11', 1);
RESET ROLE;
REVOKE ALL ON segments.customer_changes FROM segments_test_writer;
GRANT INSERT ON segments.customer_changes TO PUBLIC;
SELECT key_kind, key FROM segments.customer_changes WHERE key = '11';

-- 3. A keyless marker for a lost column (TRUNCATE: see facts.sql).
ALTER TABLE cshop.orders RENAME COLUMN cust TO customer;
INSERT INTO cshop.orders VALUES (11, 12, '2026-05-12', 1);
ALTER TABLE cshop.orders RENAME COLUMN customer TO cust;
SELECT key_kind, key FROM segments.customer_changes WHERE key IS NULL;
SELECT full_rebuild FROM segments.refresh_facts('2026-06-01');

-- 4. An index on customer_changes: the trigger writes through INSERT, so
-- the index has every row.
CREATE INDEX customer_changes_key_test ON segments.customer_changes (key);
INSERT INTO cshop.orders VALUES (12, 13, '2026-05-13', 1), (13, 14, '2026-05-13', 1);
SET enable_seqscan = off;
SELECT key_kind, key FROM segments.customer_changes WHERE key IN ('13', '14') ORDER BY key;
RESET enable_seqscan;
DROP INDEX segments.customer_changes_key_test;
-- a key kind the CHECK constraint refuses still fails through INSERT
CREATE TRIGGER bad_capture AFTER INSERT ON cshop.orders REFERENCING NEW TABLE AS n
	FOR EACH STATEMENT EXECUTE FUNCTION segments.capture_changes('nonsense', 'cust');
INSERT INTO cshop.orders VALUES (14, 15, '2026-05-14', 1);
DROP TRIGGER bad_capture ON cshop.orders;
SELECT customers_checked, full_rebuild FROM segments.refresh_facts('2026-06-01');

-- 5. rebuild_facts() loads the heap and builds the indexes after; every
-- index answers like the table.
SELECT segments.rebuild_facts('2026-06-01') AS rebuilt;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT (SELECT count(*) FROM segments.customer_facts WHERE customer_id = '5') AS by_pkey,
	   (SELECT count(*) FROM segments.customer_facts WHERE orders > 0 AND orders >= 10) AS by_orders,
	   (SELECT count(*) FROM segments.customer_facts WHERE orders > 0 AND net_revenue > 100) AS by_revenue,
	   (SELECT count(*) FROM segments.customer_facts WHERE next_change_at IS NOT NULL AND next_change_at < '2027-01-01') AS by_next_change;
RESET enable_seqscan;
RESET enable_bitmapscan;
SELECT (SELECT count(*) FROM segments.customer_facts WHERE customer_id = '5') AS by_pkey,
	   (SELECT count(*) FROM segments.customer_facts WHERE orders > 0 AND orders >= 10) AS by_orders,
	   (SELECT count(*) FROM segments.customer_facts WHERE orders > 0 AND net_revenue > 100) AS by_revenue,
	   (SELECT count(*) FROM segments.customer_facts WHERE next_change_at IS NOT NULL AND next_change_at < '2027-01-01') AS by_next_change;
SELECT count(*) AS differences FROM segments.verify_facts('2026-06-01');
-- the loader refuses to run on a table nobody truncated
SELECT segments._load_facts('SELECT 1', '2026-06-01');
-- a trigger on customer_facts: the rebuild INSERTs, so the trigger fires
CREATE TABLE public.facts_inserts (n bigint);
CREATE FUNCTION count_facts_inserts() RETURNS trigger LANGUAGE plpgsql AS
	$$BEGIN INSERT INTO public.facts_inserts SELECT count(*) FROM new_rows; RETURN NULL; END$$;
CREATE TRIGGER count_inserts AFTER INSERT ON segments.customer_facts REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION count_facts_inserts();
SELECT segments.rebuild_facts('2026-06-01') AS rebuilt;
SELECT n AS rows_the_trigger_saw FROM public.facts_inserts;
DROP TRIGGER count_inserts ON segments.customer_facts;
DROP FUNCTION count_facts_inserts();
DROP TABLE public.facts_inserts;
SELECT count(*) AS differences FROM segments.verify_facts('2026-06-01');

SELECT segments.detach('cshop.orders');
DROP SCHEMA cshop CASCADE;
DROP ROLE segments_test_writer;
SELECT segments.rebuild_facts() >= 0 AS rebuilt;

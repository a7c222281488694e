-- Every customer key, time and amount type a shop may use is accepted
-- without changing the shop's table, and gives the same facts.
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET timezone = 'UTC';
SELECT segments.set_setting('shop_time_zone', 'America/New_York');
CREATE SCHEMA tshop;
CREATE TABLE tshop.o_int (cid integer, oid integer, at date, amount real);
CREATE TABLE tshop.o_text (cid text, oid text, at timestamp, amount money);
CREATE TABLE tshop.o_varchar (cid varchar(20), oid bigint, at timestamptz, amount double precision);
CREATE TABLE tshop.o_small (cid smallint, oid int, at timestamptz, amount bigint);
INSERT INTO tshop.o_int VALUES (7, 1, '2026-03-01', 10.5), (7, 2, '2026-03-11', 4.5), (NULL, 3, '2026-03-12', 1);
INSERT INTO tshop.o_text VALUES ('c-1', 'a', '2026-03-01 23:30', 12.34), ('c-1', 'b', '2026-03-02 00:30', 1.00);
INSERT INTO tshop.o_varchar VALUES ('v-1', 1, '2026-03-01 12:00+00', 0.1), ('v-1', 2, '2026-03-04 12:00+00', 0.2);
INSERT INTO tshop.o_small VALUES (3, 1, '2026-03-01 12:00+00', 1999);
SELECT segments.attach_orders('tshop.o_int', customer => 'cid', order_id => 'oid', placed_at => 'at', amount => 'amount');
SELECT segments.attach_orders('tshop.o_text', customer => 'cid', order_id => 'oid', placed_at => 'at', amount => 'amount');
SELECT segments.attach_orders('tshop.o_varchar', customer => 'cid', order_id => 'oid', placed_at => 'at', amount => 'amount');
SELECT segments.attach_orders('tshop.o_small', customer => 'cid', order_id => 'oid', placed_at => 'at', amount => 'amount',
	amount_scale => 0.01);
-- date and timestamp columns are read in shop_time_zone (New York: UTC-5 in March before DST)
SELECT customer_id, orders, net_revenue, first_order_at, last_order_at, median_gap_days
  FROM segments.customer_facts ORDER BY customer_id;
-- keys of every type flow through the capture triggers and the typed key filter
INSERT INTO tshop.o_int VALUES (8, 4, '2026-04-01', 2);
INSERT INTO tshop.o_text VALUES ('c-2', 'c', '2026-04-01 10:00', 3.00);
UPDATE tshop.o_varchar SET amount = 1.5 WHERE oid = 2;
DELETE FROM tshop.o_small;
SELECT key_kind, key FROM segments.customer_changes ORDER BY key;
-- (one transaction, so refresh and verify share one now(): the backfill ran as of now())
BEGIN;
SELECT customers_checked, customers_changed, customers_removed FROM segments.refresh_facts();
SELECT customer_id, orders, net_revenue FROM segments.customer_facts ORDER BY customer_id;
SELECT * FROM segments.verify_facts();
COMMIT;
SELECT segments.detach(relation) FROM segments.sources WHERE NOT builtin ORDER BY relation::text;
SELECT segments.reset_setting('shop_time_zone');
DROP SCHEMA tshop CASCADE;
SELECT segments.rebuild_facts();

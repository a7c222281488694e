-- Customer facts from the shop's own tables: attach, capture, refresh, verify.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';

CREATE SCHEMA shop;
CREATE TABLE shop.customers (
	id bigint PRIMARY KEY, country char(2), lang text, tz text, kind text,
	labels text[], wallet numeric(10,2), created timestamptz);
CREATE TABLE shop.orders (
	id bigint PRIMARY KEY, customer_id bigint, placed_at timestamptz NOT NULL,
	total numeric(10,2) NOT NULL, status text NOT NULL, refunded numeric(10,2) DEFAULT 0,
	coupon text, cost numeric(10,2));
CREATE INDEX ON shop.orders (customer_id);
CREATE TABLE shop.order_lines (order_id bigint, line_no int, product_id int, qty int, PRIMARY KEY (order_id, line_no));
CREATE TABLE shop.products (id int PRIMARY KEY, category text);
CREATE TABLE shop.carts (
	id bigint PRIMARY KEY, customer_id bigint, created_at timestamptz, updated_at timestamptz,
	value numeric(10,2), stage text, order_id bigint);
CREATE VIEW shop.completed_orders AS SELECT * FROM shop.orders WHERE status = 'completed';

INSERT INTO shop.customers VALUES
	(1, 'DE', 'de', 'Europe/Berlin', 'retail', '{coffee}', 5.00, '2025-01-01'),
	(2, 'US', 'en', 'America/New_York', 'wholesale', NULL, NULL, '2025-02-01'),
	(3, 'FR', 'fr', NULL, 'retail', NULL, NULL, '2025-03-01'),
	(4, 'DE', 'de', NULL, 'retail', NULL, NULL, '2025-04-01');   -- a browser: no orders
INSERT INTO shop.orders VALUES
	(10, 1, '2026-01-10 10:00+00', 30.00, 'completed', 0, NULL, 12.00),
	(11, 1, '2026-02-09 10:00+00', 50.00, 'completed', 10.00, 'WELCOME', 20.00),
	(12, 1, '2026-04-10 10:00+00', 20.00, 'completed', 0, NULL, 8.00),
	(13, 2, '2026-03-01 09:00+00', 400.00, 'completed', 0, NULL, NULL),
	(14, 2, '2026-03-05 09:00+00', 100.00, 'refunded', 0, NULL, NULL),
	(15, 3, '2026-05-01 12:00+00', 25.00, 'cancelled', 0, NULL, NULL),
	(16, NULL, '2026-05-02 12:00+00', 9.00, 'completed', 0, NULL, NULL);  -- a guest order
INSERT INTO shop.products VALUES (1, 'coffee'), (2, 'tea'), (3, 'mugs');
INSERT INTO shop.order_lines VALUES (10, 1, 1, 1), (11, 1, 2, 2), (11, 2, 3, 1), (13, 1, 1, 40), (14, 1, 3, 1);
INSERT INTO shop.carts VALUES
	(100, 3, '2026-05-03 10:00+00', '2026-05-03 10:20+00', 45.00, 'checkout', NULL),
	(101, 1, '2026-04-10 09:00+00', '2026-04-10 09:30+00', 20.00, 'cart', 12);

-- Every shop table's content, to prove that our functions never alter it.
CREATE FUNCTION shop_hash() RETURNS TABLE (t text, h text) LANGUAGE sql AS $$
	SELECT 'orders', md5(string_agg(o::text, ',' ORDER BY o.id)) FROM shop.orders o
	UNION ALL SELECT 'customers', md5(string_agg(c::text, ',' ORDER BY c.id)) FROM shop.customers c
	UNION ALL SELECT 'carts', md5(string_agg(c::text, ',' ORDER BY c.id)) FROM shop.carts c
	UNION ALL SELECT 'order_lines', md5(string_agg(l::text, ',' ORDER BY l.order_id, l.line_no)) FROM shop.order_lines l
$$;
CREATE TABLE shop_before AS SELECT * FROM shop_hash();

-- 1. Bad mappings fail with a clear error and install nothing.
SELECT segments.attach_orders('shop.completed_orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
SELECT segments.attach_orders('shop.nope', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
SELECT segments.attach_orders('shop.orders', customer => 'customer', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'status', amount => 'total');
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'coupon');
SELECT segments.attach_orders('shop.orders', customer => 'placed_at', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
SELECT segments.attach_orders('shop.orders', customer => NULL, order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total', timestamp_time_zone => 'Mars/Olympus');
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total', amount_scale => 0);
-- a role that may not read the table cannot attach it
CREATE ROLE segments_test_outsider;
GRANT USAGE ON SCHEMA shop, segments TO segments_test_outsider;
GRANT TRIGGER ON shop.orders TO segments_test_outsider;
SET ROLE segments_test_outsider;
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
RESET ROLE;
-- negative amounts are refused unless asked for
INSERT INTO shop.orders VALUES (17, 3, '2026-05-02 12:00+00', -5.00, 'completed', 0, NULL, NULL);
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');
DELETE FROM shop.orders WHERE id = 17;
SELECT count(*) AS attached_shop_tables FROM segments.sources WHERE NOT builtin;
SELECT count(*) AS our_triggers_on_shop FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'shop'::regnamespace;

-- 2. Attach for real; facts are backfilled.
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total', status => 'status', refunded_amount => 'refunded',
	discount => 'coupon', cost => 'cost');
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
	placed_at => 'placed_at', amount => 'total');  -- twice: refused
SELECT segments.attach_order_lines('shop.order_lines', orders => 'shop.orders', order_id => 'order_id',
	product => 'product_id', quantity => 'qty', products => 'shop.products', product_key => 'id',
	product_category => 'category');
SELECT segments.attach_carts('shop.carts', cart_id => 'id', customer => 'customer_id',
	created_at => 'created_at', updated_at => 'updated_at', value => 'value', stage => 'stage',
	converted_order => 'order_id');
SELECT segments.attach_customers('shop.customers', customer => 'id', country => 'country',
	language => 'lang', time_zone => 'tz', account_type => 'kind', tags => 'labels',
	wallet_balance => 'wallet', created_at => 'created');
SELECT relation, kind, key_type FROM segments.sources WHERE NOT builtin ORDER BY relation::text;
SELECT b.t, b.h = a.h AS unchanged_by_attach FROM shop_before b JOIN shop_hash() a USING (t) ORDER BY 1;

SELECT customer_id, orders, refunded_orders AS ref, cancelled_orders AS can, gross_revenue AS gross,
	   refunded_amount AS refunds, net_revenue AS net, aov, discounted_orders AS disc, margin,
	   median_gap_days AS gap, gap_count AS gaps, categories
  FROM segments.customer_facts ORDER BY customer_id;
SELECT customer_id, first_order_at, last_order_at, cart_id, cart_value, cart_stage, cart_updated_at,
	   country, language, time_zone, account_type, tags, wallet_balance
  FROM segments.customer_facts ORDER BY customer_id;

-- 3. Changes flow in through the triggers and one refresh.
INSERT INTO shop.orders VALUES (20, 3, '2026-06-01 08:00+00', 60.00, 'completed', 0, NULL, NULL);
SELECT key_kind, key FROM segments.customer_changes ORDER BY key;
SELECT customers_checked, customers_changed, customers_removed, full_rebuild
  FROM segments.refresh_facts('2026-06-02 00:00+00');
SELECT count(*) AS changes_left FROM segments.customer_changes;
SELECT customer_id, orders, net_revenue, cart_id FROM segments.customer_facts WHERE customer_id = '3';
-- a refund, a cancellation, a corrected amount, a back-dated order, a moved order, a delete
UPDATE shop.orders SET status = 'refunded' WHERE id = 13;
UPDATE shop.orders SET total = 35.00 WHERE id = 10;
INSERT INTO shop.orders VALUES (21, 2, '2025-12-01 08:00+00', 80.00, 'completed', 0, NULL, NULL);
UPDATE shop.orders SET customer_id = 4 WHERE id = 12;
DELETE FROM shop.orders WHERE id = 20;
SELECT customers_checked, customers_changed FROM segments.refresh_facts('2026-06-02 00:00+00');
SELECT customer_id, orders, refunded_orders AS ref, net_revenue AS net, first_order_at, last_order_at, gap_count
  FROM segments.customer_facts ORDER BY customer_id;
-- a refresh with nothing to do writes nothing
SELECT customers_checked, customers_changed FROM segments.refresh_facts('2026-06-02 00:00+00');
-- an update that changes nothing we read marks the customer but writes no facts
UPDATE shop.customers SET created = created WHERE id = 1;
SELECT customers_checked, customers_changed FROM segments.refresh_facts('2026-06-02 00:00+00');
SELECT * FROM segments.verify_facts('2026-06-02 00:00+00');

-- 4. Time-driven changes: next_change_at finds them through its index.
SELECT customer_id, last_order_at, next_change_at FROM segments.customer_facts ORDER BY customer_id;
SELECT customers_checked FROM segments.refresh_facts('2026-06-10 00:00+00');

-- 5. The tracking API: consent per channel with history, engagement, wallet, referral.
SELECT segments.track_consent('1', 'email', true, '2026-01-01');
SELECT segments.track_consent('1', 'email', false, '2026-03-01', 'unsubscribe link');
SELECT segments.track_consent('1', 'sms', true, '2026-02-01');
SELECT segments.track_consent('2', 'telegram', true, '2026-02-01');
SELECT segments.track_engagement('1', 'email', 'sent', '2026-05-01');
SELECT segments.track_engagement('1', 'email', 'opened', '2026-05-02');
SELECT segments.track_engagement('1', 'email', 'sent', '2026-05-10');
SELECT segments.track_engagement('1', 'sms', 'sent', '2026-05-20');
SELECT segments.track_wallet('2', 15.00, 'gift card', '2026-05-05');
SELECT segments.track_wallet('2', -5.00, 'spent', '2026-05-06');
SELECT segments.track_referral('1', '3', 10.00, '2026-04-01');
SELECT segments.track_order('t-77', 'T1', '2026-05-01 10:00+00', 12.50);
SELECT segments.track_order('t-77', 'T2', '2026-05-09 10:00+00', 30.00, discount_code => 'SPRING');
SELECT segments.track_refund('T2', 10.00);
SELECT segments.track_cart('t-77', 'C9', 18.00, 'checkout', 'https://shop.example/cart/C9', '2026-05-30 10:00+00');
SELECT customers_checked, customers_changed FROM segments.refresh_facts('2026-06-10 00:00+00');
SELECT customer_id, consent_email AS email, consent_sms AS sms, consent_telegram AS tg, consent_push AS push,
	   messages_sent AS sent, messages_opened AS opened, consecutive_ignored AS ignored, last_engaged_at,
	   wallet_balance AS wallet, referred_by, referrals_made AS refs, referral_credit AS credit
  FROM segments.customer_facts ORDER BY customer_id;
SELECT customer_id, orders, net_revenue, discounted_orders, median_gap_days, cart_id, cart_stage, cart_link
  FROM segments.customer_facts WHERE customer_id = 't-77';
SELECT channel, granted, occurred_at, source FROM segments.consent_events WHERE customer_id = '1' ORDER BY occurred_at;

-- 6. Bad tracking input: clear errors, nothing written.
SELECT segments.track_order(NULL, 'X1', now(), 1);
SELECT segments.track_order('c', 'X1', now(), -1);
SELECT segments.track_order('c', 'X1', 'infinity', 1);
SELECT segments.track_order('c', 'X1', now(), 1, 'shipped-ish');
SELECT segments.track_refund('nope', 1);
SELECT segments.track_refund('T2', 31);
SELECT segments.track_consent('1', 'fax', true);
SELECT segments.track_consent('1', 'email', NULL);
SELECT segments.track_engagement('1', 'email', 'liked');
SELECT segments.track_wallet('1', 0);
SELECT segments.track_referral('1', '1');
SELECT segments.track_cart('1', 'C1', 5, 'basket');
SELECT segments.track_customer('9', time_zone => 'Europe/Atlantis');
SELECT count(*) AS tracked_orders FROM segments.tracked_orders;

-- 7. Settings: timestamp columns without time zone are read in shop_time_zone.
CREATE TABLE shop.legacy_orders (uid uuid, ts timestamp, cents int, state text);
INSERT INTO shop.legacy_orders VALUES
	('6ecd8c99-4036-403d-bf84-cf8400f67836', '2026-05-01 09:00', 1999, 'paid'),
	('6ecd8c99-4036-403d-bf84-cf8400f67836', '2026-05-11 09:00', 501, 'paid');
SELECT segments.set_setting('shop_time_zone', 'Europe/Berlin');
SELECT segments.set_setting('shop_time_zone', 'Nowhere/Land');
SELECT segments.set_setting('cart_abandon_after', '-1 hour');
SELECT segments.set_setting('no_such_setting', '1');
SELECT segments.attach_orders('shop.legacy_orders', customer => 'uid', order_id => 'uid',
	placed_at => 'ts', amount => 'cents', amount_scale => 0.01, status => 'state');
SELECT customer_id, orders, net_revenue, first_order_at, median_gap_days
  FROM segments.customer_facts WHERE customer_id LIKE '6ecd%';
INSERT INTO shop.legacy_orders VALUES ('6ecd8c99-4036-403d-bf84-cf8400f67836', '2026-05-21 09:00', 100, 'paid');
SELECT customers_checked, customers_changed FROM segments.refresh_facts('2026-06-10 00:00+00');
SELECT customer_id, orders, net_revenue FROM segments.customer_facts WHERE customer_id LIKE '6ecd%';
-- changing a setting that facts depend on makes the next refresh a rebuild
SELECT segments.reset_setting('shop_time_zone');
SELECT full_rebuild FROM segments.refresh_facts('2026-06-10 00:00+00');
SELECT customer_id, first_order_at FROM segments.customer_facts WHERE customer_id LIKE '6ecd%';

-- 7b. More mistakes that must fail cleanly.
CREATE TABLE shop.parted (id int, cust int, at timestamptz, total numeric) PARTITION BY RANGE (at);
SELECT segments.attach_orders('shop.parted', customer => 'cust', order_id => 'id', placed_at => 'at', amount => 'total');
CREATE TABLE shop.parted_2026 PARTITION OF shop.parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT segments.attach_orders('shop.parted_2026', customer => 'cust', order_id => 'id', placed_at => 'at', amount => 'total');
CREATE TABLE shop.o2 (id int, cust int, at timestamptz, total numeric, st text);
SELECT segments.attach_orders('shop.o2', customer => 'cust', order_id => 'id', placed_at => 'at', amount => 'total',
	status => 'st', completed => NULL);
SELECT segments.set_setting('watch_days', '{{1,2},{3,4}}');
SELECT segments.set_setting('watch_days', '{1,-2}');
SELECT * FROM segments.refresh_facts(NULL);
-- a full refund can be taken back to a partial one
SELECT segments.track_order('t-78', 'T3', '2026-05-01 10:00+00', 40.00);
SELECT segments.track_refund('T3', 40.00);
SELECT status, refunded_amount FROM segments.tracked_orders WHERE order_id = 'T3';
SELECT segments.track_refund('T3', 15.00);
SELECT status, refunded_amount FROM segments.tracked_orders WHERE order_id = 'T3';
-- dropping an attached table forgets it (and asks for a rebuild)
SELECT segments.attach_orders('shop.o2', customer => 'cust', order_id => 'id', placed_at => 'at', amount => 'total');
DROP TABLE shop.o2;
SELECT count(*) AS o2_sources FROM segments.sources WHERE relation::text LIKE '%o2';
SELECT full_rebuild FROM segments.refresh_facts('2026-06-10 00:00+00');
-- dropping an orders table also forgets its order lines and their triggers
CREATE TABLE shop.o3 (id int, cust int, at timestamptz, total numeric);
CREATE TABLE shop.l3 (order_id int, cat text);
SELECT segments.attach_orders('shop.o3', customer => 'cust', order_id => 'id', placed_at => 'at', amount => 'total') >= 0 AS attached;
SELECT segments.attach_order_lines('shop.l3', orders => 'shop.o3', order_id => 'order_id', product => 'cat', category => 'cat') >= 0 AS attached;
DROP TABLE shop.o3;
SELECT (SELECT count(*) FROM segments.sources WHERE relation::text LIKE 'shop.%3') AS sources_left,
	   (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shop.l3'::regclass) AS triggers_left;
DROP TABLE shop.l3;
SELECT full_rebuild FROM segments.refresh_facts('2026-06-10 00:00+00');

-- 8. TRUNCATE asks for a rebuild; detach leaves the shop's tables as they were.
SELECT * FROM segments.verify_facts('2026-06-10 00:00+00');
TRUNCATE shop_before;
INSERT INTO shop_before SELECT * FROM shop_hash();
TRUNCATE shop.legacy_orders;
SELECT full_rebuild FROM segments.refresh_facts('2026-06-10 00:00+00');
SELECT count(*) AS legacy_customers FROM segments.customer_facts WHERE customer_id LIKE '6ecd%';
SELECT segments.detach('shop.orders');
SELECT segments.detach('shop.order_lines');
SELECT segments.detach('shop.orders');
SELECT segments.detach('shop.legacy_orders');
SELECT segments.detach('shop.carts');
SELECT segments.detach('shop.customers');
SELECT count(*) AS our_triggers_on_shop FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'shop'::regnamespace;
SELECT segments.rebuild_facts('2026-06-10 00:00+00') > 0 AS rebuilt;
SELECT b.t, b.h = a.h AS unchanged_by_refresh_and_detach FROM shop_before b JOIN shop_hash() a USING (t) ORDER BY 1;

DROP SCHEMA shop CASCADE;
DROP TABLE shop_before;
DROP FUNCTION shop_hash();
REVOKE ALL ON SCHEMA segments FROM segments_test_outsider;
DROP ROLE segments_test_outsider;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.engagement_events;
DELETE FROM segments.consent_events;
DELETE FROM segments.wallet_events;
DELETE FROM segments.referral_events;
SELECT segments.rebuild_facts();

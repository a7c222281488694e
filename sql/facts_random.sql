-- Incremental facts equal a full recomputation after a randomized workload
-- of 10 000 mixed inserts, updates (status, amounts, moved orders), deletes,
-- multi-row statements, cart activity and tracked events, refreshed every
-- 500 operations with the clock moving forward.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';
CREATE SCHEMA rshop;
CREATE TABLE rshop.orders (id bigint PRIMARY KEY, cust int, at timestamptz NOT NULL,
	total numeric(10,2) NOT NULL, status text NOT NULL, refunded numeric(10,2) NOT NULL DEFAULT 0);
CREATE INDEX ON rshop.orders (cust);
CREATE TABLE rshop.carts (id int PRIMARY KEY, cust int, created timestamptz, updated timestamptz,
	value numeric(10,2), stage text, order_id bigint);
SELECT segments.attach_orders('rshop.orders', customer => 'cust', order_id => 'id', placed_at => 'at',
	amount => 'total', status => 'status', refunded_amount => 'refunded');
SELECT segments.attach_carts('rshop.carts', cart_id => 'id', customer => 'cust', created_at => 'created',
	updated_at => 'updated', value => 'value', stage => 'stage', converted_order => 'order_id');

SELECT setseed(0.25);
DO $$
DECLARE
	i int;
	r float8;
	next_id bigint := 0;
	clock timestamptz := '2026-01-01 00:00+00';
	statuses text[] := '{completed,completed,completed,completed,refunded,cancelled,pending}';
	checks int := 0;
BEGIN
	FOR i IN 1..10000 LOOP
		r := random();
		clock := clock + interval '37 minutes';
		IF r < 0.40 THEN
			next_id := next_id + 1;
			INSERT INTO rshop.orders VALUES (next_id,
				CASE WHEN random() < 0.02 THEN NULL ELSE 1 + floor(random() * 400)::int END,
				clock - random() * interval '200 days',           -- back-dated orders too
				round((random() * 200)::numeric, 2),
				statuses[1 + floor(random() * 7)::int]);
		ELSIF r < 0.55 THEN
			UPDATE rshop.orders SET status = statuses[1 + floor(random() * 7)::int]
			 WHERE id = 1 + floor(random() * greatest(next_id, 1))::bigint;
		ELSIF r < 0.62 THEN
			UPDATE rshop.orders SET refunded = least(total, round((random() * 50)::numeric, 2))
			 WHERE id = 1 + floor(random() * greatest(next_id, 1))::bigint;
		ELSIF r < 0.67 THEN
			UPDATE rshop.orders SET total = round((random() * 200)::numeric, 2), refunded = 0
			 WHERE id = 1 + floor(random() * greatest(next_id, 1))::bigint;
		ELSIF r < 0.72 THEN                                   -- an order moves to another customer
			UPDATE rshop.orders SET cust = 1 + floor(random() * 400)::int
			 WHERE id = 1 + floor(random() * greatest(next_id, 1))::bigint;
		ELSIF r < 0.78 THEN
			DELETE FROM rshop.orders WHERE id = 1 + floor(random() * greatest(next_id, 1))::bigint;
		ELSIF r < 0.80 THEN                                   -- multi-row statements
			UPDATE rshop.orders SET status = 'cancelled' WHERE cust = 1 + floor(random() * 400)::int AND status = 'pending';
		ELSIF r < 0.81 THEN
			DELETE FROM rshop.orders WHERE cust = 1 + floor(random() * 400)::int AND at < clock - interval '150 days';
		ELSIF r < 0.90 THEN
			INSERT INTO rshop.carts VALUES (1 + floor(random() * 600)::int, 1 + floor(random() * 400)::int,
				clock - interval '2 hours', clock - random() * interval '3 hours',
				round((random() * 90)::numeric, 2), CASE WHEN random() < 0.3 THEN 'checkout' ELSE 'cart' END, NULL)
			ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, value = excluded.value, stage = excluded.stage,
				order_id = CASE WHEN random() < 0.2 THEN 1 ELSE NULL END;
		ELSIF r < 0.95 THEN
			PERFORM segments.track_engagement((1 + floor(random() * 400)::int)::text,
				(ARRAY['email','sms','telegram'])[1 + floor(random() * 3)::int],
				(ARRAY['sent','sent','opened','clicked','bounced'])[1 + floor(random() * 5)::int], clock);
		ELSIF r < 0.98 THEN
			PERFORM segments.track_consent((1 + floor(random() * 400)::int)::text,
				(ARRAY['email','sms','telegram','push'])[1 + floor(random() * 4)::int], random() < 0.7, clock);
		ELSE
			PERFORM segments.track_wallet((1 + floor(random() * 400)::int)::text,
				round((random() * 40 - 15)::numeric, 2) + 0.01, 'random', clock);
		END IF;
		IF i % 500 = 0 THEN
			PERFORM segments.refresh_facts(clock);
			checks := checks + 1;
		END IF;
	END LOOP;
	PERFORM segments.refresh_facts(clock);
	RAISE NOTICE 'refreshed % times', checks;
	CREATE TEMP TABLE final_clock AS SELECT clock AS as_of;
END
$$;

SELECT count(*) > 300 AS many_customers, sum(orders) > 1000 AS many_orders,
	   count(*) FILTER (WHERE cart_id IS NOT NULL) > 0 AS some_open_carts,
	   count(*) FILTER (WHERE consent_email) > 0 AS some_consent
  FROM segments.customer_facts;
SELECT count(*) AS differences FROM segments.verify_facts((SELECT as_of FROM final_clock));
SELECT * FROM segments.verify_facts((SELECT as_of FROM final_clock)) LIMIT 5;

-- verify does catch a wrong row
UPDATE segments.customer_facts SET orders = orders + 1
 WHERE customer_id = (SELECT min(customer_id) FROM segments.customer_facts);
SELECT problem, stored, expected IS NOT NULL AS has_expected
  FROM segments.verify_facts((SELECT as_of FROM final_clock));

SELECT segments.detach('rshop.carts');
SELECT segments.detach('rshop.orders');
DROP SCHEMA rshop CASCADE;
DELETE FROM segments.engagement_events;
DELETE FROM segments.consent_events;
DELETE FROM segments.wallet_events;
SELECT segments.rebuild_facts();

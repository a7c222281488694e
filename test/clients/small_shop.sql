-- A small shop for the client tests (test/t/005_clients.pl), written through
-- the tracking API only.  Customer ids look like nothing else a report could
-- hold ('cust-0042'), so "no report value equals a customer id" is a sharp
-- check.  A year of orders, then four simulated days with three campaigns
-- (cart recovery, first-order follow-up, win-back), one tick per hour and a
-- small sender that acknowledges, opens, clicks and sometimes buys.
--   psql -X -v ON_ERROR_STOP=1 -v customers=240 -f test/clients/small_shop.sql
\set QUIET on
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
\if :{?customers}
\else
\set customers 240
\endif
SELECT setseed(0.17);

SELECT count(*) AS profiles FROM (
	SELECT segments.track_customer('cust-' || lpad(i::text, 4, '0'),
		country => (ARRAY['DE', 'FR', 'NL', 'AT'])[1 + i % 4], language => 'en', time_zone => 'Europe/Berlin',
		created_at => '2025-10-01'::timestamptz + i * interval '1 hour')
	  FROM generate_series(1, :customers) i) x;
SELECT count(*) AS consents FROM (
	SELECT segments.track_consent('cust-' || lpad(i::text, 4, '0'), 'email', true, '2025-10-01', 'signup form')
	  FROM generate_series(1, :customers) i WHERE i % 5 <> 0) x;
-- one customer in ten never orders; the rest 1 to 9 orders over the year
SELECT count(*) AS orders FROM (
	SELECT segments.track_order(c.id, c.id || '-o' || k,
		'2025-11-01'::timestamptz + (random() * 360) * interval '1 day', round((15 + random() * 120)::numeric, 2))
	  FROM (SELECT 'cust-' || lpad(i::text, 4, '0') AS id, 1 + floor(8 * random() ^ 3)::int AS n
			  FROM generate_series(1, :customers) i WHERE i % 10 <> 0) c,
		   generate_series(1, c.n) k) x;

INSERT INTO segments.tick_state (watermark) VALUES ('2026-11-01');
SELECT segments.set_setting('shop_link', 'https://shop.example/');
SELECT segments.campaign_from_template('cart_recovery', activate => true),
	   segments.campaign_from_template('first_order_followup', activate => true),
	   segments.campaign_from_template('win_back', channel => 'email', activate => true);
UPDATE segments.campaign SET activated_at = '2026-11-01';
SELECT status FROM segments.tick('2026-11-01');

DO $$
DECLARE
	t timestamptz;
	m record;
	n int := 0;
BEGIN
	FOR h IN 1 .. 96 LOOP
		t := '2026-11-01'::timestamptz + h * interval '1 hour';
		-- a few carts an hour; a third check out on their own
		FOR m IN SELECT 'cust-' || lpad((1 + floor(random() * 240))::int::text, 4, '0') AS customer_id,
						round((15 + random() * 90)::numeric, 2) AS value, random() < 0.35 AS buys
				   FROM generate_series(1, 2 + floor(random() * 3)::int) LOOP
			n := n + 1;
			PERFORM segments.track_cart(m.customer_id, 'cart-' || n, m.value, at => t - interval '50 minutes');
			IF m.buys THEN
				PERFORM segments.track_order(m.customer_id, 'web-' || n, t - interval '10 minutes', m.value);
				PERFORM segments.track_cart_closed('cart-' || n, 'converted', 'web-' || n, t - interval '10 minutes');
			END IF;
		END LOOP;
		PERFORM segments.tick(t);
		-- the sender
		FOR m IN SELECT c.message_id, c.attempt, c.customer_id, e.cart_id
				   FROM segments.claim_messages('email', 500, 'bi-test-sender', t) c
				   JOIN segments.outbox o USING (message_id)
				   JOIN segments.enrollment e USING (enrollment_id) LOOP
			PERFORM segments.ack_message(m.message_id, m.attempt, 'esp-' || m.message_id, t + interval '1 minute');
			IF random() < 0.5 THEN
				PERFORM segments.track_engagement(m.customer_id, 'email', 'opened', t + interval '20 minutes', m.message_id::text);
				IF random() < 0.4 THEN
					PERFORM segments.track_engagement(m.customer_id, 'email', 'clicked', t + interval '22 minutes', m.message_id::text);
					IF random() < 0.5 THEN
						n := n + 1;
						PERFORM segments.track_order(m.customer_id, 'mail-' || n, t + interval '30 minutes',
													 round((20 + random() * 80)::numeric, 2));
						IF m.cart_id IS NOT NULL THEN
							PERFORM segments.track_cart_closed(m.cart_id, 'converted', 'mail-' || n, t + interval '30 minutes');
						END IF;
					END IF;
				END IF;
			END IF;
		END LOOP;
	END LOOP;
END
$$;
SELECT status FROM segments.tick('2026-11-05 02:00+00');

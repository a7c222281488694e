-- segments demo, part 3: segments -> campaigns -> outbox -> a sender -> orders back.
-- Runs in database `shop` after test/demo_segments.sql. Three weeks of shop
-- traffic after the fixture's "now", one tick per simulated hour
-- (CALL segments.run_tick(T), what pg_cron runs every minute), with a small
-- sender that drains the outbox and sometimes gets opens, clicks and orders.
\set QUIET on
\pset footer off
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
\set start '2026-11-06 12:00:00+00'
\set hours 504

\echo
\echo '=== 9. Campaigns: cart recovery (e-mail) and win-back (Telegram), from the templates ==='
-- consent, as a signup form would have recorded it: e-mail for three in four
-- buyers, Telegram for two in five; nobody is messaged without it
SELECT count(*) AS email_consents FROM (
	SELECT segments.track_consent(c.id::text, 'email', true, c.created_at, 'signup form')
	  FROM shop.customers c WHERE c.id % 4 <> 0) x;
SELECT count(*) AS telegram_consents FROM (
	SELECT segments.track_consent(c.id::text, 'telegram', true, c.created_at, 'telegram bot')
	  FROM shop.customers c WHERE c.id % 5 < 2) x;
SELECT segments.set_setting('shop_link', 'https://shop.example/');
SELECT segments.campaign_from_template('cart_recovery', activate => true) AS campaign
UNION ALL
SELECT segments.campaign_from_template('win_back', channel => 'telegram', activate => true);
UPDATE segments.campaign SET activated_at = :'start';
SELECT c.campaign_id, c.signal, s.step_no, s.delay, s.channel, s.message_key, s.offer_percent AS offer,
       c.holdout_percent AS holdout
  FROM segments.campaign c JOIN segments.campaign_step s USING (campaign_id) ORDER BY 1, 3;

-- Three weeks, hour by hour. Every hour: a few shoppers fill carts, about a
-- third of new carts check out unprompted, regulars order; then the tick;
-- then the sender claims, sends and acknowledges; some messages are opened,
-- some clicked, and some clicked cart reminders end in an order.
SELECT setseed(0.42);
SET demo.start TO :'start';
SET demo.hours TO :hours;
DO $$
DECLARE
	t timestamptz;
	h int;
	next_cart bigint := (SELECT max(id) FROM shop.carts);
	next_order bigint := (SELECT max(id) FROM shop.orders);
	m record;
BEGIN
	FOR h IN 1 .. current_setting('demo.hours')::int LOOP
		t := current_setting('demo.start')::timestamptz + h * interval '1 hour';
		-- new carts from random known customers
		INSERT INTO shop.carts (id, customer_id, created_at, updated_at, value, stage, status)
		SELECT next_cart + g, 1 + floor(random() * 2000)::bigint, t - interval '55 minutes',
			   t - interval '1 minute' * (5 + floor(random() * 50)), round((15 + random() * 120)::numeric, 2),
			   CASE WHEN random() < 0.3 THEN 'checkout' ELSE 'cart' END, 'open'
		  FROM generate_series(1, 2 + floor(random() * 3)::int) g;
		next_cart := (SELECT max(id) FROM shop.carts);
		-- about a third of the hour's carts check out without any reminder
		FOR m IN SELECT c.id, c.customer_id, c.value FROM shop.carts c
				  WHERE c.status = 'open' AND c.created_at > t - interval '1 hour' AND random() < 0.35 LOOP
			next_order := next_order + 1;
			INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency, sales_channel)
			VALUES (next_order, m.customer_id, t - interval '2 minutes', 'completed', m.value, 'EUR', 'web');
			UPDATE shop.carts SET status = 'converted', order_id = next_order WHERE id = m.id;
		END LOOP;
		-- regular orders
		INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency, sales_channel)
		SELECT next_order + g, 1 + floor(random() * 2000)::bigint, t - interval '30 minutes', 'completed',
			   round((20 + random() * 80)::numeric, 2), 'EUR', 'web'
		  FROM generate_series(1, floor(random() * 4)::int) g;
		next_order := (SELECT max(id) FROM shop.orders);
		-- now and then an abandoned cart comes back on its own, reminded or
		-- not: the baseline the holdout group measures
		FOR m IN SELECT c.id, c.customer_id, c.value FROM shop.carts c
				  WHERE c.status = 'open' AND c.customer_id IS NOT NULL AND c.updated_at < t - interval '2 hours'
					AND random() < 0.001 LOOP
			next_order := next_order + 1;
			INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency, sales_channel)
			VALUES (next_order, m.customer_id, t - interval '10 minutes', 'completed', m.value, 'EUR', 'web');
			UPDATE shop.carts SET status = 'converted', order_id = next_order WHERE id = m.id;
		END LOOP;
		-- and now and then an order of the last week is refunded
		UPDATE shop.orders o SET status = 'refunded'
		 WHERE o.id IN (SELECT x.id FROM shop.orders x
						 WHERE x.status = 'completed' AND x.placed_at > t - interval '7 days' AND random() < 0.0005);

		CALL segments.run_tick(t);

		-- the sender
		FOR m IN SELECT c.*, o.channel, o.campaign_id, o.step_no, e.cart_id
				   FROM (SELECT * FROM segments.claim_messages('email', 500, 'demo-sender', t)
						 UNION ALL
						 SELECT * FROM segments.claim_messages('telegram', 500, 'demo-sender', t)) c
				   JOIN segments.outbox o USING (message_id)
				   JOIN segments.enrollment e USING (enrollment_id) LOOP
			PERFORM segments.ack_message(m.message_id, m.attempt, 'provider-' || m.message_id, t + interval '1 minute');
			IF random() < 0.97 THEN
				-- the provider reports deliveries with its own message id
				PERFORM segments.track_engagement(m.customer_id, m.channel, 'delivered', t + interval '2 minutes',
												  'provider-' || m.message_id);
			END IF;
			IF random() < 0.01 THEN
				PERFORM segments.track_consent(m.customer_id, m.channel, false, t + interval '25 minutes', 'unsubscribe link');
			ELSIF random() < 0.003 THEN
				PERFORM segments.track_engagement(m.customer_id, m.channel, 'complained', t + interval '25 minutes', m.message_id::text);
			ELSIF random() < 0.45 THEN
				PERFORM segments.track_engagement(m.customer_id, m.channel, 'opened', t + interval '20 minutes', m.message_id::text);
				IF random() < 0.35 THEN
					PERFORM segments.track_engagement(m.customer_id, m.channel, 'clicked', t + interval '22 minutes', m.message_id::text);
					IF m.cart_id IS NOT NULL AND random() < 0.5 THEN
						-- the reminder worked: the buyer checks out that cart
						next_order := next_order + 1;
						INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency, sales_channel, discount_code)
						SELECT next_order, c.customer_id, t + interval '30 minutes', 'completed',
							   round(c.value * (1 - COALESCE((m.variables->>'offer_percent')::numeric, 0) / 100), 2),
							   'EUR', 'web', 'COMEBACK' || (m.variables->>'offer_percent')
						  FROM shop.carts c WHERE c.id = m.cart_id::bigint AND c.status = 'open';
						UPDATE shop.carts SET status = 'converted', order_id = next_order
						 WHERE id = m.cart_id::bigint AND status = 'open';
					ELSIF m.cart_id IS NULL AND random() < 0.3 THEN
						next_order := next_order + 1;
						INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency, sales_channel)
						VALUES (next_order, m.customer_id::bigint, t + interval '40 minutes', 'completed',
								round((25 + random() * 60)::numeric, 2), 'EUR', 'telegram');
					END IF;
				END IF;
			END IF;
		END LOOP;
		COMMIT;
	END LOOP;
END
$$;

\echo
\echo '=== 10. Three weeks of ticks ==='
SELECT count(*) AS ticks, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       sum(enrolled) AS enrolled, sum(steps_due) AS steps_decided, sum(queued) AS queued,
       sum(deferred) AS deferred, sum(skipped) AS skipped,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000)) AS median_tick_ms
  FROM segments.tick_runs WHERE as_of > :'start';

\echo
\echo '=== 11. Messages per campaign and step, and what became of them ==='
SELECT o.campaign_id, o.step_no, o.message_key, o.channel,
       count(*) FILTER (WHERE o.state = 'sent') AS sent,
       count(*) FILTER (WHERE o.state NOT IN ('sent')) AS not_sent,
       count(DISTINCT ev.message_id) FILTER (WHERE ev.event = 'opened') AS opened,
       count(DISTINCT ev.message_id) FILTER (WHERE ev.event = 'clicked') AS clicked
  FROM segments.outbox o
  LEFT JOIN segments.engagement_events ev ON ev.message_id = o.message_id::text AND ev.event IN ('opened', 'clicked')
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2;
SELECT customer_id, message_key, variables FROM segments.outbox
 WHERE campaign_id = 'cart_recovery' AND state = 'sent' ORDER BY message_id LIMIT 3;

\echo
\echo '=== 12. Every skip and deferral keeps its reason ==='
SELECT campaign_id, stage, decision, reason, count(*) AS decisions
  FROM segments.decision_log WHERE decision <> 'send'
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 5 DESC;

\echo
\echo '=== 13. Cart recovery: abandoned carts, recovered by the reminders or on their own ==='
SELECT count(*) AS carts_enrolled,
       count(*) FILTER (WHERE holdout) AS in_holdout,
       count(*) FILTER (WHERE stop_reason = 'cart_recovered') AS recovered,
       count(*) FILTER (WHERE stop_reason = 'cart_recovered' AND NOT holdout) AS recovered_treated,
       count(*) FILTER (WHERE stop_reason = 'cart_recovered' AND holdout) AS recovered_holdout,
       count(*) FILTER (WHERE state = 'completed') AS got_every_step,
       count(*) FILTER (WHERE state = 'active') AS still_running
  FROM segments.enrollment WHERE campaign_id = 'cart_recovery';

\echo
\echo '=== 14. A buyer who ordered after the first reminder: the rest stopped ==='
SELECT e.customer_id AS buyer, e.cart_id FROM segments.enrollment e
 WHERE e.campaign_id = 'cart_recovery' AND e.stop_reason = 'cart_recovered'
   AND EXISTS (SELECT FROM segments.outbox o WHERE o.enrollment_id = e.enrollment_id AND o.state = 'sent')
 ORDER BY e.enrollment_id LIMIT 1 \gset
SELECT step_no, stage, decision, reason, defer_until, message_state,
       facts->>'last_order_at' AS last_order_at, facts->>'cart_state' AS cart
  FROM segments.explain_campaign(:'buyer', 'cart_recovery');

\echo
\echo '=== 15. And one who never got a message: why ==='
SELECT min(c.id)::text AS no_consent_buyer FROM shop.customers c
 WHERE c.id % 4 = 0 AND c.id % 5 >= 2
   AND EXISTS (SELECT FROM segments.enrollment e WHERE e.customer_id = c.id::text AND e.campaign_id = 'cart_recovery') \gset
SELECT step_no, decision, reason, facts->>'consent' AS email_consent
  FROM segments.explain_campaign(:'no_consent_buyer', 'cart_recovery') LIMIT 3;

-- Attribution and the report views, on hand-computed cases.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

--------------------------------------------------------------------------------
-- Settings: per-channel windows, validated
--------------------------------------------------------------------------------
SELECT name, value FROM segments.settings WHERE name IN ('attribution_windows', 'lift_min_group') ORDER BY name;
\set VERBOSITY terse
SELECT segments.set_setting('attribution_windows', '[]');
SELECT segments.set_setting('attribution_windows', '{"fax": {"click": "1 day"}}');
SELECT segments.set_setting('attribution_windows', '{"email": {"view": "1 day"}}');
SELECT segments.set_setting('attribution_windows', '{"email": {"click": "-1 day"}}');
SELECT segments.set_setting('attribution_windows', '{"email": {"click": "soon"}}');
SELECT segments.set_setting('attribution_windows', '{"email": {"click": 5}}');
\set VERBOSITY default
SELECT count(*) AS overrides_after_errors FROM segments.setting WHERE name = 'attribution_windows';
SELECT * FROM segments._attribution_windows() ORDER BY 1, 2;

--------------------------------------------------------------------------------
-- A shop: campaign a (e-mail, step 2 offers 10 %), campaign b (SMS), and
-- messages already sent (the outbox rows a sender acknowledged).  Day 0 is
-- Monday 2026-05-04; the shop's orders table is attached next to the
-- tracking API's.
--------------------------------------------------------------------------------
CREATE TABLE public.shop_orders (id int PRIMARY KEY, buyer int NOT NULL, placed timestamptz NOT NULL,
	total numeric NOT NULL, state text NOT NULL DEFAULT 'paid', refunded numeric NOT NULL DEFAULT 0, coupon text, cost numeric);
SELECT segments.attach_orders('public.shop_orders', customer => 'buyer', order_id => 'id', placed_at => 'placed',
	amount => 'total', status => 'state', refunded_amount => 'refunded', discount => 'coupon', cost => 'cost') AS attached;

SELECT segments.create_campaign('a', 'order_completed', holdout_percent => 0);
SELECT segments.add_campaign_step('a', '0', 'email', 'hello'),
	   segments.add_campaign_step('a', '1 day', 'email', 'offer', offer_percent => 10);
UPDATE segments.campaign SET max_offer_percent = 20 WHERE campaign_id = 'a';
SELECT segments.create_campaign('b', 'order_completed', holdout_percent => 0);
SELECT segments.add_campaign_step('b', '0', 'sms', 'hello_sms');

CREATE FUNCTION pg_temp.enroll(campaign text, customer text, signal_at timestamptz, holdout bool DEFAULT false)
RETURNS int8 LANGUAGE sql AS $$
	INSERT INTO segments.enrollment (campaign_id, customer_id, signal_key, signal_at, enrolled_at, holdout, state, stop_reason)
	VALUES (campaign, customer, 'test@' || signal_at, signal_at, signal_at, holdout, 'completed', NULL)
	RETURNING enrollment_id
$$;
CREATE FUNCTION pg_temp.sent(enrollment int8, step int, channel text, at timestamptz, provider_id text DEFAULT NULL)
RETURNS int8 LANGUAGE sql AS $$
	INSERT INTO segments.outbox (idempotency_key, enrollment_id, campaign_id, step_no, customer_id, channel,
		message_key, state, not_before, not_after, attempt, created_at, sent_at, provider_message_id)
	SELECT e.campaign_id || ':' || step || ':' || e.customer_id || ':' || e.enrollment_id, e.enrollment_id, e.campaign_id,
		   step, e.customer_id, channel, 'm', 'sent', at, at + interval '1 day', 1, at, at, provider_id
	  FROM segments.enrollment e WHERE e.enrollment_id = enrollment
	RETURNING message_id
$$;

-- u1: e-mail sent at 10:00, clicked at 11:00; buys on day 3 (credited to the
-- click) and on day 6 (past the 5-day click window: not credited)
SELECT pg_temp.enroll('a', 'u1', '2026-05-04 09:00+00') AS e_u1 \gset
SELECT pg_temp.sent(:e_u1, 1, 'email', '2026-05-04 10:00+00') AS m_u1 \gset
SELECT segments.track_engagement('u1', 'email', 'delivered', '2026-05-04 10:01+00', :'m_u1'),
	   segments.track_engagement('u1', 'email', 'clicked', '2026-05-04 11:00+00', :'m_u1');
SELECT segments.track_order('u1', 'o1-before', '2026-05-04 08:00+00', 10),   -- before the signal: not a campaign order
	   segments.track_order('u1', 'o1-a', '2026-05-07 12:00+00', 100),
	   segments.track_order('u1', 'o1-b', '2026-05-09 11:00+00', 50),           -- 5 days after the click, to the second
	   segments.track_order('u1', 'o1-c', '2026-05-10 12:00+00', 60);

-- u2: an e-mail nobody opened earns nothing; an SMS earns for 1 day after the send
SELECT pg_temp.enroll('a', 'u2', '2026-05-04 09:00+00') AS e_u2a \gset
SELECT pg_temp.sent(:e_u2a, 1, 'email', '2026-05-04 10:00+00') AS m_u2_email \gset
SELECT segments.track_order('u2', 'o2-a', '2026-05-04 12:00+00', 30);
SELECT pg_temp.enroll('b', 'u2', '2026-05-04 12:30+00') AS e_u2b \gset
SELECT pg_temp.sent(:e_u2b, 1, 'sms', '2026-05-04 13:00+00') AS m_u2_sms \gset
SELECT segments.track_order('u2', 'o2-b', '2026-05-04 20:00+00', 40),
	   segments.track_order('u2', 'o2-c', '2026-05-05 13:00+00', 45);           -- 1 day after the send: outside

-- u3: overlapping touches on two channels: the last one wins while its window lasts
SELECT pg_temp.enroll('a', 'u3', '2026-05-04 08:00+00') AS e_u3a \gset
SELECT pg_temp.sent(:e_u3a, 1, 'email', '2026-05-04 08:30+00', 'esp-77') AS m_u3_email \gset
-- the provider reports the click with its own message id
SELECT segments.track_engagement('u3', 'email', 'clicked', '2026-05-04 09:00+00', 'esp-77');
SELECT pg_temp.enroll('b', 'u3', '2026-05-04 11:00+00') AS e_u3b \gset
SELECT pg_temp.sent(:e_u3b, 1, 'sms', '2026-05-04 12:00+00') AS m_u3_sms \gset
SELECT segments.track_order('u3', 'o3-a', '2026-05-04 15:00+00', 70),           -- SMS send (12:00) is later than the click
	   segments.track_order('u3', 'o3-b', '2026-05-06 10:00+00', 80);           -- SMS window over, click still on

-- u4: an open earns for 1 day; step 2 offered 10 %, and the order used a coupon
SELECT pg_temp.enroll('a', 'u4', '2026-05-04 09:00+00') AS e_u4 \gset
SELECT pg_temp.sent(:e_u4, 2, 'email', '2026-05-05 10:00+00') AS m_u4 \gset
SELECT segments.track_engagement('u4', 'email', 'opened', '2026-05-05 10:30+00');   -- no message id: the latest e-mail
SELECT segments.track_order('u4', 'o4-a', '2026-05-06 10:29+00', 90, discount_code => 'SAVE10', cost => 50),
	   segments.track_order('u4', 'o4-b', '2026-05-06 10:30+00', 20),           -- exactly 1 day after the open: outside
	   segments.track_order('u4', 'o4-early', '2026-05-05 09:00+00', 15);       -- before the message

-- u5: orders in the shop's own table (integer ids), one refunded in part, one in full
SELECT pg_temp.enroll('a', '5', '2026-05-04 09:00+00') AS e_u5 \gset
SELECT pg_temp.sent(:e_u5, 1, 'email', '2026-05-04 10:00+00') AS m_u5 \gset
SELECT segments.track_engagement('5', 'email', 'clicked', '2026-05-04 10:05+00', :'m_u5');
INSERT INTO public.shop_orders (id, buyer, placed, total, refunded) VALUES
	(501, 5, '2026-05-04 11:00+00', 100, 30), (502, 5, '2026-05-04 12:00+00', 200, 0);
UPDATE public.shop_orders SET state = 'refunded', refunded = 200 WHERE id = 502;

-- u6: in the holdout of campaign a; buys anyway (counts for lift, credited to nothing)
SELECT pg_temp.enroll('a', 'u6', '2026-05-04 09:00+00', holdout => true) AS e_u6 \gset
SELECT segments.track_order('u6', 'o6-a', '2026-05-05 09:00+00', 55);

-- u7: never enrolled: none of its orders is a campaign order
SELECT segments.track_order('u7', 'o7-a', '2026-05-05 09:00+00', 99);

SELECT segments.reattribute('2026-05-12') AS rows_written;
SELECT o.customer_id, o.order_id, o.amount, o.refunded_amount, o.state, o.campaign_id, o.step_no, o.channel, o.touch,
	   o.touch_at, o.discounted, o.offer_percent
  FROM segments.campaign_orders o ORDER BY o.customer_id, o.placed_at;
-- every order credited at most once (the key), and only to a message sent before it
SELECT count(*) AS orders, count(DISTINCT (source, order_id)) AS distinct_orders,
	   count(*) FILTER (WHERE o.touch_at > o.placed_at) AS credited_before_touch
  FROM segments.campaign_orders o;
-- the same again writes nothing
SELECT segments.reattribute('2026-05-13') AS rows_written_again;

--------------------------------------------------------------------------------
-- The tick keeps attribution current: a refund reverses the credited revenue,
-- a late click credits an order already there; a shorter window un-credits
--------------------------------------------------------------------------------
INSERT INTO segments.tick_state (watermark) VALUES ('2026-05-12');
SELECT segments.track_refund('o1-a', 100);
SELECT segments.track_engagement('u2', 'email', 'clicked', '2026-05-04 11:00+00', :'m_u2_email');
SELECT status FROM segments.tick('2026-05-13');
SELECT orders_attributed FROM segments.tick_runs ORDER BY run_id DESC LIMIT 1;
SELECT o.order_id, o.state, o.amount - o.refunded_amount AS net, o.campaign_id, o.touch
  FROM segments.campaign_orders o WHERE o.customer_id IN ('u1', 'u2') ORDER BY o.customer_id, o.placed_at;
SELECT segments.set_setting('attribution_windows', '{"email": {"click": "1 day", "open": "1 day"}, "sms": {"send": "1 day"}}');
SELECT status FROM segments.tick('2026-05-14');
SELECT o.order_id, o.campaign_id, o.touch FROM segments.campaign_orders o WHERE o.customer_id = 'u3' ORDER BY o.placed_at;
SELECT segments.reset_setting('attribution_windows') IS NOT NULL AS reset;
SELECT status FROM segments.tick('2026-05-15');
SELECT o.order_id, o.campaign_id, o.touch FROM segments.campaign_orders o WHERE o.customer_id = 'u3' ORDER BY o.placed_at;

--------------------------------------------------------------------------------
-- Reports
--------------------------------------------------------------------------------
SELECT campaign_id, enrolled, holdout, recipients, sent, delivered, opened, clicked, credited_orders, revenue, refunded,
	   round(revenue_per_recipient, 2) AS rpr, round(conversion_rate::numeric, 3) AS conversion, round(aov, 2) AS aov,
	   round(discount_cost, 2) AS discount_cost, credited_margin, opt_outs, complaints
  FROM segments.report_campaigns ORDER BY campaign_id;
SELECT campaign_id, step_no, channel, day, sent, clicked, credited_orders, revenue
  FROM segments.report_campaign_steps_daily ORDER BY 1, 2, 4;
-- totals agree with the daily rows
SELECT c.campaign_id, c.sent = d.sent AS sent_agrees, c.revenue = d.revenue AS revenue_agrees
  FROM segments.report_campaigns c
  JOIN (SELECT campaign_id, sum(sent) AS sent, sum(revenue) AS revenue FROM segments.report_campaign_steps_daily GROUP BY 1) d
	USING (campaign_id) ORDER BY 1;

-- opt-outs and complaints go to the latest message on their channel
SELECT segments.track_consent('u4', 'email', false, '2026-05-05 12:00+00'),
	   segments.track_engagement('u1', 'email', 'complained', '2026-05-04 12:00+00', :'m_u1');
SELECT campaign_id, step_no, opt_outs, complaints FROM segments.report_campaign_steps_daily
 WHERE opt_outs > 0 OR complaints > 0 ORDER BY 1, 2;

-- holdout lift on campaign a: 5 treatment enrollments (u1..u5), 1 holdout (u6)
SELECT campaign_id, conversion_window, treatment_enrollments, holdout_enrollments, treatment_conversions,
	   holdout_conversions, treatment_revenue, holdout_revenue, too_small_to_tell, conversion_lift_significant
  FROM segments.report_holdout_lift ORDER BY 1;

-- lift statistics on a known population: 1 000 treatment enrollments with 150
-- conversions of 20.00, 1 000 holdout with 100 (same window, no messages)
CREATE TEMP TABLE lift_case AS
SELECT i, i <= 1000 AS treatment, CASE WHEN i <= 1000 THEN i <= 150 ELSE i <= 1100 END AS buys
  FROM generate_series(1, 2000) i;
SELECT segments.create_campaign('lift', 'order_completed', holdout_percent => 50);
SELECT segments.add_campaign_step('lift', '2 days', 'telegram', 'x');
INSERT INTO segments.enrollment (campaign_id, customer_id, signal_key, signal_at, enrolled_at, holdout, state)
SELECT 'lift', 'L' || i, 's', '2026-05-04 00:00+00', '2026-05-04 00:00+00', NOT treatment, 'completed' FROM lift_case;
INSERT INTO segments.campaign_orders (source, order_id, customer_id, placed_at, amount, state, attributed_at)
SELECT 'test', 'L' || i, 'L' || i, '2026-05-05 00:00+00', 20, 'completed', now() FROM lift_case WHERE buys;
SELECT treatment_conversion_rate, holdout_conversion_rate, conversion_lift,
	   round(conversion_lift_relative::numeric, 4) AS relative,
	   round(conversion_lift_low::numeric, 5) AS low, round(conversion_lift_high::numeric, 5) AS high,
	   round(revenue_lift, 4) AS revenue_lift, round(revenue_lift_low, 4) AS revenue_low, round(revenue_lift_high, 4) AS revenue_high,
	   incremental_revenue, too_small_to_tell, conversion_lift_significant
  FROM segments.report_holdout_lift WHERE campaign_id = 'lift';
-- by hand: p1 = .15, p2 = .10, se = sqrt(.15*.85/1000 + .1*.9/1000) = .0147479;
-- 1.959964 * se = .0289055: [.0210945, .0789055]
SELECT round((0.05 - 1.959964 * sqrt(0.15 * 0.85 / 1000 + 0.1 * 0.9 / 1000))::numeric, 5) AS expected_low,
	   round((0.05 + 1.959964 * sqrt(0.15 * 0.85 / 1000 + 0.1 * 0.9 / 1000))::numeric, 5) AS expected_high;
-- groups under lift_min_group are flagged
SELECT segments.set_setting('lift_min_group', '1001');
SELECT too_small_to_tell, conversion_lift_significant FROM segments.report_holdout_lift WHERE campaign_id = 'lift';
SELECT segments.reset_setting('lift_min_group');
DELETE FROM segments.campaign_orders WHERE source = 'test';
DELETE FROM segments.enrollment WHERE campaign_id = 'lift';
DELETE FROM segments.campaign_step WHERE campaign_id = 'lift';
DELETE FROM segments.campaign WHERE campaign_id = 'lift';

-- skipped and deferred messages with reasons
INSERT INTO segments.decision_log (enrollment_id, campaign_id, step_no, customer_id, channel, decided_at, stage, decision, reason, defer_until)
VALUES (:e_u1, 'a', 2, 'u1', 'email', '2026-05-05 09:00+00', 'tick', 'skip', 'converted', NULL),
	   (:e_u2a, 'a', 2, 'u2', 'email', '2026-05-05 09:00+00', 'tick', 'skip', 'converted', NULL),
	   (:e_u4, 'a', 2, 'u4', 'email', '2026-05-05 03:00+00', 'tick', 'defer', 'quiet_hours', '2026-05-05 08:00+00'),
	   (:e_u4, 'a', 2, 'u4', 'email', '2026-05-05 10:00+00', 'tick', 'send', NULL, NULL);
SELECT * FROM segments.report_decisions_daily ORDER BY day, campaign_id, decision, reason;

-- segments, flow, RFM grid, carts
SELECT segments.track_cart('u1', 'k1', 30, at => '2026-05-04 08:00+00'),
	   segments.track_cart('u2', 'k2', 20, at => '2026-05-04 08:30+00'),
	   segments.track_cart('u3', 'k3', 25, stage => 'checkout', at => '2026-05-05 08:30+00');
SELECT segments.track_cart_closed('k1', 'converted', 'o1-a', '2026-05-04 09:00+00');
SELECT day, carts_started, checkouts_started, carts_converted, carts_abandoned, abandoned_value
  FROM segments.cart_funnel_daily() ORDER BY day;
SELECT status FROM segments.tick('2026-05-16');
SELECT segment_id, members, buyers, revenue, round(aov, 2) AS aov, round(repeat_purchase_rate::numeric, 3) AS repeat_rate,
	   round(opt_out_rate::numeric, 3) AS opt_out_rate, too_small
  FROM segments.report_segments WHERE segment_id IN ('first_time', 'repeat') ORDER BY 1;
SELECT sum(customers) AS buyers, sum(revenue) AS revenue, count(*) AS cells, round(sum(share)::numeric, 6) AS share
  FROM segments.report_rfm_grid;
SELECT sum(f.net_revenue) AS buyers_revenue FROM segments.customer_facts f WHERE f.orders > 0;
-- u7 buys again: first_time -> repeat, one move in the week of the evaluation
SELECT segments.track_order('u7', 'o7-b', '2026-05-16 10:00+00', 10);
SELECT status FROM segments.tick('2026-05-17');
SELECT week, from_segment, to_segment, customers FROM segments.report_segment_flow_weekly
 WHERE from_segment = 'first_time' AND to_segment = 'repeat' AND week = '2026-05-11';
-- a cart campaign: u3's checkout k3 enrolls, the e-mail is clicked, the order recovers it
SELECT segments.create_campaign('carts', 'checkout_abandoned', holdout_percent => 0);
SELECT segments.add_campaign_step('carts', '1 hour', 'email', 'come_back', 'cart');
INSERT INTO segments.enrollment (campaign_id, customer_id, signal_key, signal_at, enrolled_at, holdout, cart_id, state)
VALUES ('carts', 'u3', 'cart:k3', '2026-05-05 09:30+00', '2026-05-05 09:31+00', false, 'k3', 'completed'),
	   ('carts', 'u1', 'cart:k1', '2026-05-05 09:30+00', '2026-05-05 09:31+00', true, 'k1', 'completed');
SELECT pg_temp.sent(e.enrollment_id, 1, 'email', '2026-05-05 10:30+00') AS m_k3
  FROM segments.enrollment e WHERE e.campaign_id = 'carts' AND e.customer_id = 'u3' \gset
SELECT segments.track_engagement('u3', 'email', 'clicked', '2026-05-05 10:40+00', :'m_k3');
SELECT segments.track_order('u3', 'o3-c', '2026-05-05 11:00+00', 33);
SELECT status FROM segments.tick('2026-05-18');
SELECT order_id, campaign_id, touch FROM segments.campaign_orders WHERE order_id = 'o3-c';
SELECT day, carts_started, carts_abandoned, carts_enrolled, carts_holdout, carts_messaged, carts_recovered, recovered_value,
	   recovery_rate FROM segments.report_cart_recovery_daily ORDER BY day;
SELECT * FROM segments.report_cart_recovery_steps ORDER BY campaign_id, step_no;

--------------------------------------------------------------------------------
-- Every report view and column is commented; no personal column
--------------------------------------------------------------------------------
SELECT c.relname, a.attname
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relname LIKE 'report\_%'
   AND col_description(c.oid, a.attnum) IS NULL;
SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'segments'::regnamespace AND c.relname LIKE 'report\_%'
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT c.relname, a.attname
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relname LIKE 'report\_%'
   AND a.attname ~ '^(customer_id|customer|email|phone|address|first_name|last_name|country|region|time_zone|language|link|cart_id|order_id|message_id)$';
SELECT count(*) AS report_views FROM pg_class c
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relkind = 'v' AND c.relname LIKE 'report\_%';

-- clean up for the tests that follow
SELECT segments.detach('public.shop_orders');
DROP TABLE public.shop_orders;
TRUNCATE segments.outbox, segments.decision_log, segments.contact_log, segments.enrollment, segments.campaign_orders,
	segments.attribution_queue, segments.tick_runs, segments.tick_state, segments.campaign_step, segments.campaign CASCADE;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.consent_events;
DELETE FROM segments.engagement_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments('2026-05-19', full_evaluation => true);
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;

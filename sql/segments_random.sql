-- Incremental membership equals a full evaluation after a randomized
-- workload: orders, refunds, cancellations, carts, engagement and consent
-- over 150 customers while the clock moves forward (time-driven segments
-- and moving percentile breakpoints included), evaluated every 100 steps.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';
SELECT segments.define_segment('telegram_regulars', 'orders >= 2 AND days_since_last_order > 20 AND consent_telegram', priority => 95);
SELECT segments.set_setting('score_breaks_max_age', '6 hours');
SELECT setseed(0.5);
DO $$
DECLARE
	i int;
	r float8;
	n int := 0;
	clock timestamptz := '2026-01-01 00:00+00';
	cust text;
BEGIN
	FOR i IN 1..3000 LOOP
		r := random();
		clock := clock + interval '53 minutes';
		cust := 'c' || (1 + floor(random() * 150)::int);
		IF r < 0.45 THEN
			n := n + 1;
			PERFORM segments.track_order(cust, 'r' || n, clock - random() * interval '10 days',
				round((5 + random() * 300)::numeric, 2),
				CASE WHEN random() < 0.9 THEN 'completed' ELSE 'pending' END,
				CASE WHEN random() < 0.3 THEN 'PROMO' END);
			IF random() < 0.5 THEN
				PERFORM segments.track_order_line('r' || n, 1, 'p' || floor(random() * 5)::int,
					(ARRAY['coffee', 'tea', 'skincare', 'furniture', NULL])[1 + floor(random() * 5)::int]);
			END IF;
		ELSIF r < 0.55 AND n > 0 THEN
			PERFORM segments.track_order_status('r' || (1 + floor(random() * n)::int),
				(ARRAY['refunded', 'cancelled', 'completed'])[1 + floor(random() * 3)::int]);
		ELSIF r < 0.70 THEN
			PERFORM segments.track_cart(cust, 'k' || cust, round((random() * 120)::numeric, 2),
				CASE WHEN random() < 0.3 THEN 'checkout' ELSE 'cart' END, NULL, clock);
		ELSIF r < 0.85 THEN
			PERFORM segments.track_engagement(cust, 'email',
				(ARRAY['sent', 'sent', 'opened', 'clicked', 'bounced'])[1 + floor(random() * 5)::int], clock);
		ELSIF r < 0.95 THEN
			PERFORM segments.track_consent(cust, (ARRAY['email', 'telegram'])[1 + floor(random() * 2)::int],
				random() < 0.7, clock);
		ELSE
			PERFORM segments.track_customer(cust, account_type => CASE WHEN random() < 0.2 THEN 'wholesale' ELSE 'retail' END);
		END IF;
		IF i % 100 = 0 THEN
			PERFORM segments.refresh_facts(clock);
			PERFORM segments.evaluate_segments(clock);
		END IF;
	END LOOP;
	-- and some quiet weeks: only time passes
	FOR i IN 1..20 LOOP
		clock := clock + interval '1 day 3 hours';
		PERFORM segments.refresh_facts(clock);
		PERFORM segments.evaluate_segments(clock);
	END LOOP;
	CREATE TEMP TABLE final_clock AS SELECT clock AS as_of;
END
$$;

SELECT count(DISTINCT segment_id) > 10 AS many_segments, count(*) > 300 AS many_memberships,
	   (SELECT count(*) FROM segments.segment_history WHERE change = 'exit') > 50 AS many_exits,
	   (SELECT count(*) FROM segments.evaluations) > 30 AS many_evaluations
  FROM segments.segment_membership;
SELECT count(*) AS facts_differences FROM segments.verify_facts((SELECT as_of FROM final_clock));
SELECT count(*) AS membership_differences FROM segments.verify_segments((SELECT as_of FROM final_clock));
SELECT * FROM segments.verify_segments((SELECT as_of FROM final_clock)) LIMIT 5;

-- verify does catch a wrong membership
DELETE FROM segments.segment_membership
 WHERE (segment_id, customer_id) = (SELECT segment_id, customer_id FROM segments.segment_membership ORDER BY 1, 2 LIMIT 1);
SELECT problem FROM segments.verify_segments((SELECT as_of FROM final_clock));

-- clean up
SELECT segments.drop_segment('telegram_regulars');
SELECT segments.reset_setting('score_breaks_max_age');
DELETE FROM segments.tracked_order_lines;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.engagement_events;
DELETE FROM segments.consent_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments((SELECT as_of FROM final_clock), full_evaluation => true);
SELECT count(*) AS members_left FROM segments.segment_membership;

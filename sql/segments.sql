-- Segments: catalog, boundaries of the built-in segments, owner rules,
-- precedence, history, time-driven changes, explain and as-of.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';

-- The built-in catalog, by precedence.
SELECT segment_id, priority, params, rule
  FROM segments.segment_catalog WHERE kind = 'builtin' AND segment_id NOT LIKE 'rfm\_%'
 ORDER BY priority DESC NULLS LAST, segment_id;
SELECT count(*) AS rfm_segments FROM segments.segment_catalog WHERE segment_id LIKE 'rfm\_%';

-- A small shop through the tracking API. Twenty buyers with rising spend
-- make the percentiles readable: the top 10 % are the two biggest spenders.
SELECT segments.track_order('s' || lpad(g::text, 2, '0'), 'o-s' || g, '2026-03-01 10:00+00', g * 10)
  FROM generate_series(1, 20) g;
SELECT segments.track_order('ann', 'o-ann-1', '2026-03-02 10:00+00', 40);           -- first-time
SELECT segments.track_order('bob', 'o-bob-' || g, '2026-01-01 10:00+00'::timestamptz + g * interval '20 days', 30)
  FROM generate_series(1, 3) g;                                                     -- repeat, 20-day cycle
SELECT segments.track_order('cat', 'o-cat-' || g, '2025-11-01 10:00+00'::timestamptz + g * interval '15 days', 60)
  FROM generate_series(1, 6) g;                                                     -- loyal
SELECT segments.track_order('liz', 'o-liz-1', '2026-01-15 10:00+00', 20);
SELECT segments.track_order_line('o-liz-1', 1, 'beans', 'coffee');                  -- coffee: 60-day cycle
SELECT segments.track_customer('dan', country => 'DE');                            -- a browser
SELECT segments.track_cart('eve', 'cart-eve', 35, at => '2026-03-02 09:00+00');      -- a cart, no order
SELECT segments.track_cart('fay', 'cart-fay', 80, 'checkout', at => '2026-03-02 10:30+00');
SELECT segments.track_consent('bob', 'telegram', true, '2026-01-01');

\set t1 '''2026-03-02 11:00:00+00'''
SELECT customers_checked FROM segments.refresh_facts(:t1);
SELECT customers, entered, exited FROM segments.evaluate_segments(:t1);
SELECT customer_id, string_agg(segment_id, ', ' ORDER BY segment_id) AS segments
  FROM segments.segment_membership
 WHERE customer_id IN ('ann', 'bob', 'cat', 'dan', 'eve', 'fay', 'liz', 's20', 's19', 's18', 's01')
 GROUP BY 1 ORDER BY 1;
-- precedence: one primary segment each
SELECT customer_id, segment_id AS primary_segment, priority
  FROM segments.customer_primary_segment
 WHERE customer_id IN ('ann', 'bob', 'cat', 'dan', 'eve', 'fay', 'liz', 's20', 's19', 's18', 's01')
 ORDER BY 1;
-- a second evaluation with nothing new writes nothing
SELECT customers, entered, exited, evaluation_id IS NULL AS nothing_written FROM segments.evaluate_segments(:t1);

-- The order that makes a first-time buyer a repeat buyer.
SELECT segments.track_order('ann', 'o-ann-2', '2026-03-02 10:45+00', 25);
SELECT customers_checked FROM segments.refresh_facts(:t1);
SELECT customers, entered, exited FROM segments.evaluate_segments(:t1);
SELECT customer_id, segment_id, change FROM segments.segment_history
 WHERE customer_id = 'ann' ORDER BY event_id;

-- The refund that takes a VIP out of VIP (s20 drops from 200 to 20).
-- Breakpoints are recomputed at most every score_breaks_max_age; when they
-- move, only the customers between a breakpoint's old and new place are
-- re-evaluated, not everyone, and only around the breakpoints some rule can
-- notice (vip and high_value compare revenue_percentile with 90 and 80; the
-- RFM groups read every RFM breakpoint; no rule reads orders_percentile).
SELECT segments.track_refund('o-s20', 180);
SELECT customers_checked FROM segments.refresh_facts(:t1);
SELECT segments.refresh_score_breaks(:t1) AS queued_near_moved_breakpoints;
SELECT customers, entered, exited FROM segments.evaluate_segments(:t1);
SELECT customer_id, segment_id, change FROM segments.segment_history
 WHERE segment_id IN ('vip', 'high_value') AND evaluation_id = (SELECT max(evaluation_id) FROM segments.evaluations)
 ORDER BY 1, 2;

-- The day a coffee buyer becomes lapsed: last order 2026-01-15 10:00, coffee
-- cycle 60 days, lapsed when more than 60 whole days have passed.
SELECT next_check_at FROM segments.segment_watch WHERE customer_id = 'liz';
SELECT count(*) AS liz_lapsed FROM segments.segment_membership WHERE customer_id = 'liz' AND segment_id = 'lapsed_category_cycle';
\set day60 '''2026-03-16 11:00:00+00'''
\set day61 '''2026-03-17 11:00:00+00'''
SELECT customers_checked FROM segments.refresh_facts(:day60);
SELECT customers FROM segments.evaluate_segments(:day60);
SELECT count(*) AS liz_lapsed_day60 FROM segments.segment_membership WHERE customer_id = 'liz' AND segment_id = 'lapsed_category_cycle';
SELECT customers_checked FROM segments.refresh_facts(:day61);
SELECT customers > 0 AS evaluated FROM segments.evaluate_segments(:day61);
SELECT count(*) AS liz_lapsed_day61, min(since) AS since FROM segments.segment_membership
 WHERE customer_id = 'liz' AND segment_id = 'lapsed_category_cycle';
SELECT count(*) AS differences FROM segments.verify_segments(:day61);

-- Owner segments: a rule over the facts, checked on its parse tree and
-- stored schema-qualified; a percentile segment; bad rules change nothing.
SELECT segments.define_segment('telegram_regulars',
	'orders >= 2 AND days_since_last_order > 45 AND consent_telegram', priority => 95);
SELECT segments.define_percentile_segment('top_quarter', 'net_revenue', 25);
SELECT segments.define_segment('bad1', 'true; DROP TABLE segments.segment_custom');
SELECT segments.define_segment('bad2', '(SELECT true)');
SELECT segments.define_segment('bad3', 'pg_sleep(1) IS NULL');
SELECT segments.define_segment('bad4', 'no_such_column > 1');
SELECT segments.define_segment('bad5', 'orders + 1');
SELECT segments.define_segment('Bad Name', 'true');
SELECT segments.define_segment('vip', 'true');
SELECT segment_id, rule, priority FROM segments.segment_custom ORDER BY 1;
SELECT customers, entered, exited FROM segments.evaluate_segments(:day61);
SELECT segment_id, members, too_small FROM segments.segment_sizes
 WHERE segment_id IN ('telegram_regulars', 'top_quarter', 'vip', 'browser') ORDER BY 1;

-- Tuning a built-in segment takes effect on the next evaluation.
SELECT segments.alter_segment('vip', params => '{"top_percent": 20}');
SELECT segments.alter_segment('vip', params => '{"top_pct": 20}');
SELECT segments.alter_segment('vip', rule => 'true');
SELECT segments.alter_segment('nope', enabled => false);
SELECT segments.drop_segment('vip');
SELECT customers, entered, exited FROM segments.evaluate_segments(:day61);
SELECT segment_id, members FROM segments.segment_sizes WHERE segment_id = 'vip';
SELECT segments.alter_segment('browser', enabled => false);
SELECT customers, entered, exited FROM segments.evaluate_segments(:day61);
SELECT count(*) AS browser_members FROM segments.segment_membership WHERE segment_id = 'browser';

-- Explain: every segment, in or out, with the facts its rule read.
SELECT segment_id, qualifies, member_since IS NOT NULL AS member, priority, is_primary, facts
  FROM segments.explain_customer('bob', :day61)
 WHERE segment_id IN ('telegram_regulars', 'repeat', 'lapsed_own_cycle', 'at_risk', 'first_time', 'vip');
SELECT * FROM segments.explain_customer('nobody', :day61);

-- As of a past time: at 10:00 on 2026-03-02 ann had placed only her first order.
SELECT segment_id FROM segments.segments_as_of('2026-03-02 10:00+00') WHERE customer_id = 'ann' ORDER BY 1;
SELECT segment_id FROM segments.segments_as_of(:day61) WHERE customer_id = 'ann' ORDER BY 1;
SELECT count(*) AS as_of_matches_stored_differences
  FROM (SELECT customer_id, segment_id FROM segments.segments_as_of(:day61)
		EXCEPT SELECT customer_id, segment_id FROM segments.segment_membership) d;

-- A rule that fails at run time is set aside with its error; every other
-- segment is still evaluated, and the failing one keeps its members.
SELECT segments.define_segment('fragile', 'orders > 0 AND 100 / (orders - 1) > 10');
SELECT customers > 0 AS evaluated, entered, exited FROM segments.evaluate_segments(:day61);
SELECT segment_id, error FROM segments.segment_compiled WHERE error IS NOT NULL;
SELECT segments.track_order('bob', 'o-bob-4', '2026-03-17 10:30+00', 30);
SELECT customers_checked FROM segments.refresh_facts(:day61);
SELECT customers, entered, exited FROM segments.evaluate_segments(:day61);
SELECT segments.alter_segment('fragile', rule => 'orders > 1 AND 100 / (orders - 1) > 10');
SELECT count(*) AS failing_rules FROM segments.segment_compiled WHERE error IS NOT NULL;
SELECT customers > 0 AS evaluated FROM segments.evaluate_segments(:day61);
SELECT customer_id FROM segments.segment_membership WHERE segment_id = 'fragile' ORDER BY 1;
SELECT segments.drop_segment('fragile');

-- A threshold far outside any day count does not break the watch.
SELECT segments.define_segment('never', 'days_since_last_order > 1e400');
SELECT customers > 0 AS evaluated, exited FROM segments.evaluate_segments(:day61);
SELECT segments.drop_segment('never');
-- Editing what rules read (a category cycle) re-evaluates everyone.
INSERT INTO segments.category_cycle VALUES ('coffee', 120);
SELECT customers FROM segments.evaluate_segments(:day61);
SELECT count(*) AS liz_lapsed_with_120_day_coffee FROM segments.segment_membership
 WHERE customer_id = 'liz' AND segment_id = 'lapsed_category_cycle';
DELETE FROM segments.category_cycle;
SELECT customers FROM segments.evaluate_segments(:day61);

-- clean up
SELECT segments.drop_segment('telegram_regulars');
SELECT segments.drop_segment('top_quarter');
DELETE FROM segments.segment_override;
SELECT segments._compile_segments() > 0 AS recompiled;
DELETE FROM segments.tracked_order_lines;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.consent_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments(:day61, full_evaluation => true);
SELECT count(*) AS members_left FROM segments.segment_membership;

-- The tick's write path (0.5.0): the indexes customer_facts keeps, and the
-- breakpoint refresh that finds the customers next to moved breakpoints in
-- one scan of the buyers instead of one index range scan per measure.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';

-- Every index of customer_facts. A new order changes orders, net_revenue,
-- last_order_at and next_change_at: its facts row gets an entry in each
-- index whose columns (or predicate) that touches. net_revenue, orders and
-- margin are no longer indexed.
SELECT c.relname AS index, pg_get_indexdef(i.indexrelid, 1, true) AS key,
	   pg_get_expr(i.indpred, i.indrelid) AS predicate
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = 'segments.customer_facts'::regclass
 ORDER BY 1;

-- A shop of 40 buyers with spread spend, order counts, costs and dates.
\set t0 '''2026-05-01 12:00:00+00'''
\set t1 '''2026-05-02 12:00:00+00'''
\set t2 '2026-05-03 12:00:00+00'
SELECT count(*) AS orders FROM (
	SELECT segments.track_order('b' || lpad(g::text, 2, '0'), 'o-b' || g || '-' || n,
			'2026-01-01 10:00+00'::timestamptz + (g * 3 + n * 11) * interval '1 day',
			g * 7 + n, cost => CASE WHEN g % 3 <> 0 THEN g * 2 END)
	  FROM generate_series(1, 40) g, generate_series(1, 1 + g % 4) n) x;
-- every score read in a way that every breakpoint matters
SELECT segments.define_segment('every_score',
	'revenue_percentile % 2 = 0 OR orders_percentile % 2 = 0 OR margin_percentile % 2 = 0 OR rfm_cell = ''555''');
SELECT customers_checked FROM segments.refresh_facts(:t0);
SELECT customers FROM segments.evaluate_segments(:t0, full_evaluation => true);
SELECT count(*) AS measures_with_breaks FROM segments.score_breaks WHERE breaks IS NOT NULL;

-- New orders move breakpoints of every measure.
SELECT count(*) AS orders FROM (
	SELECT segments.track_order('b' || lpad(g::text, 2, '0'), 'o-b' || g || '-new', '2026-05-02 09:00+00',
			200 - g * 3, cost => 20)
	  FROM generate_series(1, 40, 3) g) x;
SELECT customers_checked FROM segments.refresh_facts(:t1);
DELETE FROM segments.evaluation_queue;
CREATE TEMP TABLE old_breaks AS SELECT measure, breaks FROM segments.score_breaks;

-- What 0.4.0 queued: one statement per measure whose breakpoints moved,
-- over the range between each moved breakpoint's old and new place.
CREATE TEMP TABLE per_measure (customer_id text);
CREATE FUNCTION pg_temp.queue_the_old_way() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	m record;
	conds text;
	computed jsonb := (SELECT x.computed FROM segments._compute_score_breaks('segments.customer_facts') x);
BEGIN
	FOR m IN SELECT o.measure, o.breaks AS old, segments._jsonb_float8_array(computed->o.measure) AS new
			   FROM old_breaks o ORDER BY o.measure LOOP
		SELECT string_agg(segments._score_measure_range(m.measure, LEAST(b.o, b.n), GREATEST(b.o, b.n)), ' OR ')
		  INTO conds
		  FROM ROWS FROM (unnest(m.old), unnest(m.new)) b(o, n)
		 WHERE b.o IS DISTINCT FROM b.n;
		CONTINUE WHEN conds IS NULL;
		EXECUTE format('INSERT INTO per_measure SELECT f.customer_id FROM segments.customer_facts f WHERE f.orders > 0 AND (%s)', conds);
	END LOOP;
END
$$;
-- customers queued by refresh_score_breaks() and not the old way, or the reverse
CREATE FUNCTION pg_temp.queue_differences() RETURNS int8 LANGUAGE sql AS $$
	SELECT count(*) FROM (
		(SELECT customer_id, count(*) FROM per_measure GROUP BY 1
		 EXCEPT ALL SELECT customer_id, count(*) FROM segments.evaluation_queue GROUP BY 1)
		UNION ALL
		(SELECT customer_id, count(*) FROM segments.evaluation_queue GROUP BY 1
		 EXCEPT ALL SELECT customer_id, count(*) FROM per_measure GROUP BY 1)) d
$$;
SELECT pg_temp.queue_the_old_way();
SELECT count(DISTINCT customer_id) AS customers, count(*) AS rows FROM per_measure;

-- The one scan queues the same customers, each once per measure.
SELECT segments.refresh_score_breaks(:t1) = (SELECT count(*) FROM per_measure) AS same_count;
SELECT pg_temp.queue_differences() AS differences;
SELECT count(*) AS measures_moved FROM old_breaks o JOIN segments.score_breaks n USING (measure)
 WHERE o.breaks IS DISTINCT FROM n.breaks;
-- the evaluation that follows agrees with a full recomputation
SELECT customers > 0 AS evaluated FROM segments.evaluate_segments(:t1);
SELECT count(*) AS differences FROM segments.verify_segments(:t1);

-- The same with random amounts (cents) and times (seconds): values on and
-- next to the breakpoints, where the binary search over the widened ranges
-- must let through exactly what the conditions accept.
SELECT setseed(0.77);
SELECT count(*) > 0 AS orders FROM (
	SELECT segments.track_order('r' || g, 'o-r' || g || '-' || n,
			'2026-01-01 00:00+00'::timestamptz + floor(random() * 120 * 86400) * interval '1 second',
			round((5 + random() * 300)::numeric, 2), cost => round((random() * 4)::numeric, 2))
	  FROM generate_series(1, 300) g, generate_series(1, 1 + (g % 5)) n) x;
SELECT customers_checked FROM segments.refresh_facts(:t1);
SELECT count(*) > 0 AS evaluated FROM segments.evaluate_segments(:t1, full_evaluation => true);
SELECT count(*) > 0 AS orders FROM (
	SELECT segments.track_order('r' || g, 'o-r' || g || '-more', '2026-05-02 10:00+00'::timestamptz
			+ floor(random() * 3600) * interval '1 second', round((5 + random() * 600)::numeric, 2))
	  FROM generate_series(1, 300, 2) g) x;
SELECT customers_checked FROM segments.refresh_facts(:t1);
DELETE FROM segments.evaluation_queue;
TRUNCATE old_breaks, per_measure;
INSERT INTO old_breaks SELECT measure, breaks FROM segments.score_breaks;
SELECT pg_temp.queue_the_old_way();
SELECT count(DISTINCT customer_id) > 100 AS many_customers, count(*) > 300 AS many_rows FROM per_measure;
-- whatever the caller's float output setting
SET extra_float_digits = -15;
SELECT segments.refresh_score_breaks(:t1) = (SELECT count(*) FROM per_measure) AS same_count;
RESET extra_float_digits;
SELECT pg_temp.queue_differences() AS differences;
SELECT customers > 0 AS evaluated FROM segments.evaluate_segments(:t1);
SELECT count(*) AS differences FROM segments.verify_segments(:t1);

-- Nothing moved: nothing queued, and no scan of the buyers for it.
DELETE FROM segments.evaluation_queue;
SELECT segments.refresh_score_breaks(:t1) AS queued_when_nothing_moved;

-- The keyed tick's writes. b02 stops being a customer (no source mentions
-- it), b05 orders again (its watch instant moves), b07's orders are
-- refunded (no order left to watch).
SELECT count(*) AS watched_before FROM segments.segment_watch WHERE customer_id IN ('b02', 'b05', 'b07');
SELECT customer_id, next_check_at AS old_check FROM segments.segment_watch WHERE customer_id = 'b05' \gset
DELETE FROM segments.tracked_orders WHERE customer_id = 'b02';
SELECT segments.track_order('b05', 'o-b5-later', '2026-05-03 09:00+00', 10);
UPDATE segments.tracked_orders SET status = 'refunded', refunded_amount = amount WHERE customer_id = 'b07';
SELECT customers_checked, customers_changed, customers_removed FROM segments.refresh_facts(:'t2');
SELECT customer_id FROM segments.customer_facts WHERE customer_id IN ('b02', 'b05', 'b07') ORDER BY 1;
SELECT customers FROM segments.evaluate_segments(:'t2');
SELECT customer_id, next_check_at > :'old_check' AS moved_later FROM segments.segment_watch
 WHERE customer_id IN ('b02', 'b05', 'b07') ORDER BY 1;
-- what the tick wrote is what a full evaluation computes: it changes nothing
CREATE TEMP TABLE watch_after_tick AS SELECT * FROM segments.segment_watch;
SELECT customers FROM segments.evaluate_segments(:'t2', full_evaluation => true);
SELECT count(*) AS watch_differences FROM (
	(TABLE watch_after_tick EXCEPT TABLE segments.segment_watch)
	UNION ALL (TABLE segments.segment_watch EXCEPT TABLE watch_after_tick)) d;
SELECT count(*) AS differences FROM segments.verify_segments(:'t2');

-- clean up
SELECT segments.drop_segment('every_score');
DELETE FROM segments.tracked_orders;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments(:'t2', full_evaluation => true);
SELECT count(*) AS members_left FROM segments.segment_membership;

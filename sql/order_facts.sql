-- _order_facts() returns, bit for bit, what the separate aggregates it
-- replaced in the facts query return: random order rows with NULLs, mixed
-- display scales, negative amounts, values past int64, NaN and infinity,
-- in a hash aggregate small enough to spill.
SET timezone = 'UTC';
SELECT setseed(0.5);
CREATE TEMP TABLE r AS
SELECT (random()*3000)::int::text AS customer_id,
       CASE WHEN random() < 0.05 THEN NULL ELSE timestamptz '2020-01-01' + (random()*1000)::int * interval '1 hour' END AS placed_at,
       CASE (random()*7)::int WHEN 0 THEN NULL WHEN 1 THEN round((random()*1000)::numeric, 2)
            WHEN 2 THEN round((random()*100)::numeric, (random()*6)::int)
            WHEN 3 THEN (random()*1e12)::numeric(30,3) WHEN 4 THEN round((random()*-50)::numeric, 1)
            WHEN 5 THEN (random()*1e17)::bigint::numeric * 10 ELSE (random()*10)::int::numeric END AS amount,
       (ARRAY['completed','completed','completed','refunded','cancelled','other'])[1+(random()*5)::int] AS state,
       COALESCE(CASE WHEN random()<0.5 THEN round((random()*10)::numeric, 2) END, 0) AS refunded_amount,
       CASE WHEN random()<0.1 THEN NULL ELSE random()<0.3 END AS discounted,
       CASE WHEN random()<0.4 THEN NULL ELSE round((random()*300)::numeric, (random()*4)::int) END AS cost
FROM generate_series(1, 60000);
INSERT INTO r SELECT '99999', '2026-01-02 03:04:05.678901+00', 'NaN', 'completed', 0, true, 1;
INSERT INTO r SELECT '99998', '2026-01-02 03:04:05.678901+00', 'Infinity', 'completed', 0, true, 'Infinity';
INSERT INTO r SELECT '99997', '2026-01-02 03:04:05.678901+00', 1e30, 'completed', 0.5, true, 1e-20;
INSERT INTO r SELECT '99997', '2026-01-02 03:04:05.678901+00', -1e30, 'completed', 0.25, true, 3;
INSERT INTO r SELECT '99996', '2026-01-02 03:04:05.678901+00', 9e18, 'completed', 0, true, 0;
INSERT INTO r SELECT '99996', '2026-01-03 03:04:05+00', 9e18, 'completed', 0, true, 0;
INSERT INTO r SELECT '99995', NULL, 0.000, 'completed', 0, true, 0.00;
SET work_mem='64kB';
CREATE TEMP TABLE a AS SELECT customer_id,
		   min(placed_at) FILTER (WHERE state = 'completed') AS first_order_at,
		   max(placed_at) FILTER (WHERE state = 'completed') AS last_order_at,
		   count(*) FILTER (WHERE state = 'completed')::int4 AS orders,
		   count(*) FILTER (WHERE state = 'refunded')::int4 AS refunded_orders,
		   count(*) FILTER (WHERE state = 'cancelled')::int4 AS cancelled_orders,
		   COALESCE(sum(amount) FILTER (WHERE state = 'completed'), 0) AS gross_revenue,
		   COALESCE(sum(refunded_amount) FILTER (WHERE state = 'completed'), 0) AS refunded_amount,
		   count(*) FILTER (WHERE state = 'completed' AND discounted)::int4 AS discounted_orders,
		   sum(amount - refunded_amount - cost) FILTER (WHERE state = 'completed' AND cost IS NOT NULL) AS margin,
		   segments.buying_cycle(placed_at) FILTER (WHERE state = 'completed') AS cycle
	  FROM r GROUP BY customer_id;
CREATE TEMP TABLE b AS SELECT customer_id, (f).first_order_at, (f).last_order_at, (f).orders, (f).refunded_orders,
		   (f).cancelled_orders, COALESCE((f).gross_revenue, 0) AS gross_revenue,
		   COALESCE((f).refunded_amount, 0) AS refunded_amount, (f).discounted_orders, (f).margin,
		   ROW((f).median_gap_days, (f).gap_count)::segments.buying_cycle_stats AS cycle
	  FROM (SELECT customer_id, segments._order_facts(state, placed_at, amount, refunded_amount, discounted, cost) AS f
			  FROM r GROUP BY customer_id) of;
SELECT count(*) > 2900 AS many_customers, (SELECT count(*) FROM r) AS order_rows FROM a;
-- compare text forms (dscale visible) and binary
SELECT count(*) AS diffs FROM a FULL JOIN b USING (customer_id)
 WHERE a IS NULL OR b IS NULL OR row(a.*)::text IS DISTINCT FROM row(b.*)::text
    OR numeric_send(a.gross_revenue) <> numeric_send(b.gross_revenue) OR numeric_send(a.margin) IS DISTINCT FROM numeric_send(b.margin)
    OR numeric_send(a.refunded_amount) <> numeric_send(b.refunded_amount)
    OR float8send((a.cycle).median_gap_days) IS DISTINCT FROM float8send((b.cycle).median_gap_days)
    OR COALESCE((a.cycle).gap_count,0) <> COALESCE((b.cycle).gap_count,0);
SELECT * FROM b WHERE customer_id::int > 99990 ORDER BY 1;
-- a completed order at an infinite time is an error, as in buying_cycle()
SELECT segments._order_facts('completed', 'infinity', 1, 0, false, NULL);
SELECT (segments._order_facts('refunded', 'infinity', 1, 0, false, NULL)).refunded_orders AS ignored_unless_completed;

-- segments — what `make demo` prints.
--
-- Runs in database shop after test/fixtures/sample_shop.sql (2000 customers,
-- seed 0.42) and CREATE EXTENSION segments. Everything is computed as of the
-- fixture's fixed "now", so the output is the same on every run.
--
--   psql -X -d shop -f test/demo.sql

\set ON_ERROR_STOP on
\set QUIET on
\if :{?as_of}
\else
\set as_of '2026-11-01 12:00:00+00'
\endif
SET TIME ZONE 'UTC';
SET client_min_messages = warning;
\pset footer off
\pset null '-'

-- Orders are in the buyer's currency; revenue is reported in EUR at the
-- fixture's fixed rates (units of the currency per EUR).
CREATE TEMP TABLE fx (currency char(3) PRIMARY KEY, per_eur numeric NOT NULL);
INSERT INTO fx VALUES ('EUR', 1), ('USD', 1.08), ('GBP', 0.85), ('CHF', 0.95),
					  ('CAD', 1.47), ('AUD', 1.65), ('NZD', 1.80);

-- (a) Facts per customer, plain SQL: completed orders only (refunded,
-- cancelled and pending orders are not purchases); partial refunds subtract.
CREATE TEMP TABLE facts AS
SELECT o.customer_id,
	   count(*) AS orders,
	   min(o.placed_at) AS first_order,
	   max(o.placed_at) AS last_order,
	   round(sum((o.total - o.refunded_amount) / fx.per_eur), 2) AS revenue,
	   segments.recency_days(max(o.placed_at), :'as_of') AS recency_days
  FROM shop.orders o
  JOIN fx USING (currency)
 WHERE o.status = 'completed'
 GROUP BY o.customer_id;
ANALYZE facts;

\echo '=== The shop on' :as_of '==='
\echo 'Customers who bought (completed orders; refunds subtracted, revenue in EUR):'
SELECT (SELECT count(*) FROM shop.customers) AS customers,
	   count(*) AS buyers,
	   (SELECT count(*) FROM shop.customers) - count(*) AS never_bought,
	   round(100.0 * count(*) FILTER (WHERE orders = 1) / count(*), 1) AS "one order %",
	   sum(orders) AS orders,
	   sum(revenue) AS revenue,
	   round(sum(revenue) / sum(orders), 2) AS avg_order_value
  FROM facts;

\echo 'A few customers: the first retail buyer with 1, 2, 3-9 and 10+ orders, and the biggest spender:'
SELECT f.customer_id AS customer, c.country, c.account_type AS account, f.orders,
	   f.first_order::date AS first_order, f.last_order::date AS last_order,
	   f.recency_days AS days_since, f.revenue
  FROM facts f JOIN shop.customers c ON c.id = f.customer_id
 WHERE f.customer_id IN (SELECT min(f2.customer_id)
						   FROM facts f2 JOIN shop.customers c2 ON c2.id = f2.customer_id
						  WHERE c2.account_type = 'retail'
						  GROUP BY CASE WHEN f2.orders <= 2 THEN f2.orders WHEN f2.orders <= 9 THEN 3 ELSE 10 END)
	OR f.customer_id = (SELECT customer_id FROM facts ORDER BY revenue DESC, customer_id LIMIT 1)
 ORDER BY f.orders, f.customer_id;

-- (b) RFM breakpoints: quintiles of the shop's own buyers in one pass.
-- Equal values always share a score, so the 1-order majority all get F = 1.
CREATE TEMP TABLE breaks AS
SELECT segments.ntile_breaks(recency_days::float8, 5, false) AS r,
	   segments.ntile_breaks(orders::float8, 5) AS f,
	   segments.ntile_breaks(revenue::float8, 5) AS m
  FROM facts;

\echo '=== RFM breakpoints (segments.ntile_breaks: 4 breaks make scores 1..5) ==='
SELECT 'recency (days since last order)' AS measure, r::text AS breaks,
	   'at or below a break scores higher' AS rule FROM breaks
UNION ALL
SELECT 'frequency (completed orders)', f::text, 'at or above a break scores higher' FROM breaks
UNION ALL
SELECT 'monetary (revenue, EUR)', m::text, 'at or above a break scores higher' FROM breaks;

CREATE TEMP TABLE scored AS
SELECT c.id AS customer_id, f.orders, coalesce(f.revenue, 0) AS revenue,
	   segments.ntile_score(f.recency_days, b.r, false) AS r,
	   segments.ntile_score(f.orders, b.f) AS f,
	   segments.ntile_score(f.revenue::float8, b.m) AS m
  FROM shop.customers c
  LEFT JOIN facts f ON f.customer_id = c.id
 CROSS JOIN breaks b;

-- (c) The R x F grid.
\echo '=== RFM grid: buyers per recency (rows) x frequency (columns) score ==='
SELECT 'R' || r AS recency,
	   count(*) FILTER (WHERE f = 1) AS "F1",
	   count(*) FILTER (WHERE f = 2) AS "F2",
	   count(*) FILTER (WHERE f = 3) AS "F3",
	   count(*) FILTER (WHERE f = 4) AS "F4",
	   count(*) FILTER (WHERE f = 5) AS "F5",
	   count(*) AS total
  FROM scored
 WHERE r IS NOT NULL
 GROUP BY r
 ORDER BY r DESC;
\echo 'Customers with the same number of orders always get the same F score, so'
\echo 'every one-order buyer is F1; when they are more than a fifth of the buyers,'
\echo 'the next columns stay empty instead of splitting equal customers at random.'
\echo

-- (d) Named groups.
\echo '=== RFM groups (segments.rfm_group; "prospects" never bought) ==='
WITH grouped AS (
	SELECT segments.rfm_group(r, f, m) AS group_name, count(*) AS customers, sum(revenue) AS revenue
	  FROM scored
	 GROUP BY 1
)
SELECT coalesce(x.group_name, '(not in the map)') AS "group",
	   x.customers,
	   round(100.0 * x.customers / sum(x.customers) OVER (), 1) AS "customers %",
	   x.revenue AS revenue_eur,
	   round(100.0 * x.revenue / sum(x.revenue) OVER (), 1) AS "revenue %",
	   CASE WHEN x.customers < 50 THEN 'too small to measure' ELSE '' END AS note
  FROM grouped x
  LEFT JOIN segments.rfm_groups g USING (group_name)
 ORDER BY coalesce(g.position, CASE WHEN x.group_name = 'prospects' THEN 98 ELSE 99 END), 1;

-- (e) Recency bands.
\echo '=== Days since last order (segments.recency_bucket, default bands) ==='
SELECT l.label AS days_since_last_order,
	   count(f.customer_id) AS buyers,
	   coalesce(sum(f.revenue), 0) AS revenue_eur
  FROM unnest(segments.recency_bucket_labels()) WITH ORDINALITY AS l(label, n)
  LEFT JOIN facts f ON segments.recency_bucket(f.last_order, :'as_of') = l.label
 GROUP BY l.label, l.n
 ORDER BY l.n;

-- (f) Buying cycles: each customer's own median gap between orders.
\echo '=== Buying cycle (segments.buying_cycle): median days between orders ==='
SELECT f.customer_id AS customer, f.orders,
	   round((segments.buying_cycle(o.placed_at)).median_gap_days::numeric, 1) AS cycle_days,
	   (segments.buying_cycle(o.placed_at)).gap_count AS gaps,
	   f.recency_days AS days_since,
	   CASE WHEN f.recency_days > 2 * (segments.buying_cycle(o.placed_at)).median_gap_days
			THEN 'overdue: past twice the cycle' ELSE 'on schedule' END AS status
  FROM facts f
  JOIN shop.orders o ON o.customer_id = f.customer_id AND o.status = 'completed'
 WHERE f.customer_id IN (SELECT customer_id FROM facts WHERE orders BETWEEN 3 AND 40
						  ORDER BY hashint8(customer_id), customer_id LIMIT 6)
 GROUP BY f.customer_id, f.orders, f.recency_days
 ORDER BY cycle_days, f.customer_id;

-- Segment evaluation internals (0.4.0): the instant a time rule next
-- changes, which score breakpoints a rule can notice, and the catalog
-- version that spares each tick the catalog fingerprint.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';

-- _next_crossing() is the per-customer subquery 0.3.0 generated, as one
-- function call: both agree on random anchors, thresholds and units,
-- including thresholds outside 0 .. 1 000 000 and NULLs.
SELECT setseed(0.25);
CREATE TEMP TABLE crossing AS
SELECT CASE WHEN random() < 0.05 THEN NULL
			ELSE '2026-01-01 00:00+00'::timestamptz + random() * interval '400 days' END AS anchor,
	   CASE WHEN g % 10 = 0 THEN (ARRAY[-1, -0.5, 0, 1000000, 1000000.5, 1e400, NULL, 3, 45, 0.25]::numeric[])[1 + g / 10 % 10]
			ELSE round((random() * 200 - 5)::numeric, (g % 3)) END AS x,
	   CASE WHEN g % 4 = 0 THEN interval '1 minute' ELSE interval '1 day' END AS unit,
	   '2026-06-01 12:00+00'::timestamptz + (g % 7) * interval '13 hours' AS after
  FROM generate_series(1, 2000) g;
SELECT count(*) AS cases,
	   count(*) FILTER (WHERE segments._next_crossing(anchor, x, unit, after) IS NOT NULL) AS with_instant,
	   count(*) FILTER (WHERE segments._next_crossing(anchor, x, unit, after) IS DISTINCT FROM
			(SELECT pg_catalog.min(t) FROM (SELECT anchor + c::pg_catalog.float8 * unit AS t
			   FROM (SELECT x) th,
					LATERAL (VALUES (pg_catalog.floor(th.x)), (pg_catalog.floor(th.x) + 1), (pg_catalog.ceil(th.x)), (pg_catalog.ceil(th.x) + 1)) v(c)
			  WHERE th.x BETWEEN 0 AND 1000000) s WHERE s.t > after)) AS disagreements
  FROM crossing;
-- An order placed 2026-03-01 10:00: "days since >= 45" turns true 45 days
-- later, "> 45" a day after that; the watch wakes at the first of these
-- still to come (waking early only costs a look). Beyond 1 000 000 units
-- nothing is watched.
SELECT segments._next_crossing('2026-03-01 10:00+00', 45, '1 day', '2026-04-10 00:00+00') AS at_45,
	   segments._next_crossing('2026-03-01 10:00+00', 45, '1 day', '2026-04-15 10:00+00') AS after_45,
	   segments._next_crossing('2026-03-01 10:00+00', 45.5, '1 day', '2026-04-10 00:00+00') AS at_45_5,
	   segments._next_crossing('2026-03-01 10:00+00', 2000000, '1 day', '2026-04-10 00:00+00') AS too_far;

-- Which uses of a score column a rule makes: a comparison with a value
-- that reads no column gives that value, every other use gives NULL (any
-- breakpoint can change the rule).
SELECT r.rule, u.columns, u.thresholds
  FROM (VALUES ('orders > 0 AND revenue_percentile > 100 - 10'),
			   ('revenue_percentile BETWEEN 40 AND 60.5'),
			   ('rfm_recency IN (4, 5) OR rfm_frequency::numeric >= 4.5'),
			   ('rfm_group = ''champions'''),
			   ('revenue_percentile % 2 = 0'),
			   ('orders_percentile > margin_percentile'),
			   ('revenue_percentile::text = ''9'''),
			   ('orders >= 5 AND days_since_last_order > 30')) r(rule)
 CROSS JOIN LATERAL segments._rule_score_uses((segments.rule_compile(r.rule, 'segments.segment_facts')).expression,
		'segments.segment_facts', ARRAY(SELECT DISTINCT score_column FROM segments._score_columns())) u;

-- The catalog version: every statement on a catalog table bumps it; the
-- fingerprint is computed only then, and the rules are compiled again (and
-- everyone re-evaluated) only when it differs.
\set t '''2026-06-01 12:00:00+00'''
SELECT customers >= 0 AS drained FROM segments.evaluate_segments(:t);
SELECT full_sql IS NOT NULL AS full_kept,
	   catalog_version = (SELECT version FROM segments.segment_catalog_version) AS checked
  FROM segments.segment_compiled_from;
SELECT version AS v0 FROM segments.segment_catalog_version \gset
UPDATE segments.category_cycle SET cycle_days = cycle_days WHERE false;
UPDATE segments.segment_override SET enabled = enabled;
SELECT version - :v0 AS bumps FROM segments.segment_catalog_version;
-- nothing changed: nothing to do, nothing written
SELECT evaluation_id IS NULL AS nothing_written FROM segments.evaluate_segments(:t);
SELECT catalog_version = (SELECT version FROM segments.segment_catalog_version) AS checked
  FROM segments.segment_compiled_from;
-- a direct edit: compiled again, everyone evaluated
INSERT INTO segments.category_cycle VALUES ('tea', 30);
SELECT evaluation_id IS NOT NULL AS evaluated FROM segments.evaluate_segments(:t);
SELECT full_evaluation FROM segments.evaluations ORDER BY evaluation_id DESC LIMIT 1;
-- an edit no trigger saw (a data-only restore with --disable-triggers) is
-- found when the breakpoints are next recomputed
ALTER TABLE segments.category_cycle DISABLE TRIGGER segments_catalog_changed;
DELETE FROM segments.category_cycle;
ALTER TABLE segments.category_cycle ENABLE ALWAYS TRIGGER segments_catalog_changed;
INSERT INTO segments.evaluation_queue (customer_id) VALUES ('nobody');
SELECT evaluation_id IS NOT NULL AS evaluated FROM segments.evaluate_segments(:t);
SELECT full_evaluation FROM segments.evaluations ORDER BY evaluation_id DESC LIMIT 1;
INSERT INTO segments.evaluation_queue (customer_id) VALUES ('nobody');
SELECT evaluation_id IS NOT NULL AS evaluated FROM segments.evaluate_segments(:t::timestamptz + interval '2 hours');
SELECT full_evaluation FROM segments.evaluations ORDER BY evaluation_id DESC LIMIT 1;
SELECT count(*) AS owner_cycles, (SELECT fingerprint = segments._catalog_fingerprint() FROM segments.segment_compiled_from) AS matches
  FROM segments.category_cycle;

-- clean up
SELECT customers FROM segments.evaluate_segments(:t::timestamptz + interval '2 hours', full_evaluation => true);
-- back to a freshly created extension: breakpoints never computed, everyone queued
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;
INSERT INTO segments.evaluation_queue (customer_id) VALUES (NULL);

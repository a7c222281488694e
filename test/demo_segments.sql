-- segments demo, part 2: customer facts -> segment membership.
-- Runs in database `shop` after test/demo_facts.sql.
\set QUIET on
\pset footer off
SET client_min_messages = warning;
\set as_of '''2026-11-01 12:00:00+00'''

\echo
\echo '=== 5. Segments: built-in ones plus one of the owner''s own ==='
SELECT segments.define_segment('coffee_regulars',
         '''coffee'' = ANY (categories) AND orders >= 3 AND days_since_last_order <= 45',
         title => 'Coffee regulars', priority => 70) AS stored_rule;
SELECT customers, entered, exited FROM segments.evaluate_segments(:as_of);
SELECT segment_id, title, priority, members, primary_members,
       CASE WHEN too_small THEN 'too small to measure' ELSE '' END AS note
  FROM segments.segment_sizes WHERE enabled AND segment_id NOT LIKE 'rfm\_%'
 ORDER BY priority DESC NULLS LAST, members DESC;

\echo
\echo '=== 6. Precedence: each customer''s primary segment ==='
SELECT segment_id AS primary_segment, count(*) AS customers
  FROM segments.customer_primary_segment GROUP BY 1 ORDER BY 2 DESC;

\echo
\echo '=== 7. Why is customer 3 where they are? ==='
SELECT segment_id, qualifies, is_primary, facts
  FROM segments.explain_customer('3', :as_of)
 WHERE segment_id IN ('vip', 'loyal', 'lapsed_own_cycle', 'at_risk', 'coffee_regulars', 'first_time');

\echo
\echo '=== 8. Days pass: the tick re-evaluates only who changed or whose time came ==='
SELECT d.day::date AS day, r.customers_checked AS facts_checked, e.customers AS evaluated,
       e.entered, e.exited
  FROM generate_series(:as_of::timestamptz + interval '1 day', :as_of::timestamptz + interval '5 days', interval '1 day') d(day)
 CROSS JOIN LATERAL segments.refresh_facts(d.day) r
 CROSS JOIN LATERAL segments.evaluate_segments(d.day) e;
SELECT h.at::date AS day, h.segment_id, h.change, count(*) AS customers
  FROM segments.segment_history h
 WHERE h.at > :as_of AND h.segment_id NOT LIKE 'rfm\_%'
 GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC LIMIT 15;
SELECT count(*) AS differences_from_full_evaluation
  FROM segments.verify_segments(:as_of::timestamptz + interval '5 days');

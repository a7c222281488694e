-- segments demo, part 4: the report views, read as a BI tool's login would
-- (the segments_reader role).  Runs in database `shop` after
-- test/demo_campaigns.sql.  (A minimal version: one table per report view.)
\set QUIET on
\pset footer off
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
SET ROLE segments_reader;

\echo
\echo '=== 17. Report views for BI tools, read as segments_reader ==='
\echo
\echo '--- report_campaigns'
SELECT campaign_id, enrolled, holdout, recipients, sent, skipped, clicked, credited_orders AS orders, revenue,
       round(conversion_rate::numeric * 100, 1) AS "conv %", round(aov, 2) AS aov, opt_outs
  FROM segments.report_campaigns ORDER BY campaign_id;
\echo '--- report_campaign_steps_daily (the last 7 days, summed per step)'
SELECT campaign_id, step_no, channel, min(day) AS first_day, max(day) AS last_day, sum(sent) AS sent,
       sum(opened) AS opened, sum(clicked) AS clicked, sum(credited_orders) AS orders, sum(revenue) AS revenue
  FROM segments.report_campaign_steps_daily
 WHERE day > (SELECT max(day) - 7 FROM segments.report_campaign_steps_daily)
 GROUP BY 1, 2, 3 ORDER BY 1, 2;
\echo '--- report_holdout_lift'
SELECT campaign_id, treatment_enrollments AS treated, holdout_enrollments AS held_out,
       round(treatment_conversion_rate::numeric * 100, 1) AS "treated conv %",
       round(holdout_conversion_rate::numeric * 100, 1) AS "held-out conv %",
       round(revenue_lift, 2) AS revenue_lift, round(revenue_lift_low, 2) AS low, round(revenue_lift_high, 2) AS high,
       too_small_to_tell
  FROM segments.report_holdout_lift ORDER BY campaign_id;
\echo '--- report_cart_recovery_daily (last 7 days)'
SELECT day, carts_started, carts_abandoned, carts_enrolled, carts_messaged, carts_recovered, recovered_value,
       round(recovery_rate::numeric * 100, 1) AS "recovery %"
  FROM segments.report_cart_recovery_daily
 WHERE day > (SELECT max(day) - 7 FROM segments.report_cart_recovery_daily) ORDER BY day;
\echo '--- report_cart_recovery_steps'
SELECT * FROM segments.report_cart_recovery_steps ORDER BY campaign_id, step_no;
\echo '--- report_decisions_daily (by reason)'
SELECT campaign_id, decision, reason, sum(decisions) AS decisions
  FROM segments.report_decisions_daily GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC;
\echo '--- report_segments'
SELECT segment_id, members, round(share::numeric * 100, 1) AS "share %", revenue, round(aov, 2) AS aov,
       round(repeat_purchase_rate::numeric * 100, 1) AS "repeat %", too_small
  FROM segments.report_segments WHERE members > 0 ORDER BY members DESC, segment_id;
\echo '--- report_segment_flow_weekly (top 10 moves)'
SELECT from_segment, to_segment, sum(customers) AS customers
  FROM segments.report_segment_flow_weekly GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 10;
\echo '--- report_rfm_grid (buyers; frequency down, recency across)'
SELECT frequency_score AS "F \ R",
       sum(customers) FILTER (WHERE recency_score = 1) AS "1", sum(customers) FILTER (WHERE recency_score = 2) AS "2",
       sum(customers) FILTER (WHERE recency_score = 3) AS "3", sum(customers) FILTER (WHERE recency_score = 4) AS "4",
       sum(customers) FILTER (WHERE recency_score = 5) AS "5"
  FROM segments.report_rfm_grid GROUP BY 1 ORDER BY 1 DESC;
RESET ROLE;

-- segments demo, part 4: what the campaigns earned, read from the report
-- views the way a BI tool reads them (as the segments_reader role).
\set QUIET on
\pset footer off
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
-- the reports are read as a BI tool's login would read them
CREATE ROLE demo_bi LOGIN IN ROLE segments_reader;
SET ROLE demo_bi;

\echo
\echo '=== 17. Campaigns: sends, engagement, credited orders and revenue (report_campaigns) ==='
SELECT campaign_id, enrolled, holdout, recipients, sent, skipped, delivered, opened, clicked,
       credited_orders AS orders, revenue, refunded, round(revenue_per_recipient, 2) AS per_recipient,
       round(conversion_rate::numeric * 100, 1) AS "conv %", round(aov, 2) AS aov,
       round(discount_cost, 2) AS discounts, opt_outs, complaints
  FROM segments.report_campaigns ORDER BY campaign_id;

\echo
\echo '=== 18. Per step and week (report_campaign_steps_daily, summed by week) ==='
SELECT campaign_id, step_no, channel, date_trunc('week', day)::date AS week, sum(sent) AS sent,
       sum(clicked) AS clicked, sum(credited_orders) AS orders, sum(revenue) AS revenue
  FROM segments.report_campaign_steps_daily GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4;

\echo
\echo '=== 19. Did the campaigns cause the orders? Treatment vs holdout (report_holdout_lift) ==='
SELECT campaign_id, conversion_window AS "window", treatment_enrollments AS treated, holdout_enrollments AS held_out,
       round(treatment_conversion_rate::numeric * 100, 1) AS "treated conv %",
       round(holdout_conversion_rate::numeric * 100, 1) AS "holdout conv %",
       round(conversion_lift::numeric * 100, 1) AS "lift pts",
       '[' || round(conversion_lift_low::numeric * 100, 1) || ', ' || round(conversion_lift_high::numeric * 100, 1) || ']' AS "95 % interval",
       round(revenue_lift, 2) AS "revenue lift per enrollment", round(incremental_revenue, 2) AS incremental_revenue,
       too_small_to_tell, conversion_lift_significant AS significant
  FROM segments.report_holdout_lift ORDER BY campaign_id;

\echo
\echo '=== 20. Cart recovery per week (report_cart_recovery_daily) and per step (report_cart_recovery_steps) ==='
SELECT date_trunc('week', day)::date AS week, sum(carts_started) AS started, sum(carts_converted) AS converted,
       sum(carts_abandoned) AS abandoned, sum(carts_enrolled) AS enrolled, sum(carts_messaged) AS messaged,
       sum(carts_recovered) AS recovered, sum(recovered_value) AS recovered_value,
       round(sum(carts_recovered)::numeric / nullif(sum(carts_messaged), 0) * 100, 1) AS "recovery %"
  FROM segments.report_cart_recovery_daily WHERE day >= '2026-11-02' GROUP BY 1 ORDER BY 1;
SELECT campaign_id, step_no, channel, carts_messaged, carts_recovered, recovered_value,
       round(recovery_rate::numeric * 100, 1) AS "recovery %"
  FROM segments.report_cart_recovery_steps ORDER BY 1, 2;

\echo
\echo '=== 21. Skipped and deferred messages by reason (report_decisions_daily) ==='
SELECT campaign_id, decision, reason, sum(decisions) AS decisions
  FROM segments.report_decisions_daily GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC;

\echo
\echo '=== 22. Segments: size, revenue, AOV, repeat and opt-out rates (report_segments) ==='
SELECT segment_id, members, round(share::numeric * 100, 1) AS "share %", revenue, round(aov, 2) AS aov,
       round(repeat_purchase_rate::numeric * 100, 1) AS "repeat %", round(opt_out_rate::numeric * 100, 1) AS "opt-out %",
       too_small
  FROM segments.report_segments WHERE members > 0 ORDER BY members DESC LIMIT 15;

\echo
\echo '=== 23. Segment flow: who moved where, per week (report_segment_flow_weekly, top moves) ==='
SELECT week, from_segment, to_segment, customers
  FROM (SELECT f.*, row_number() OVER (PARTITION BY week ORDER BY customers DESC, from_segment, to_segment) AS n
		  FROM segments.report_segment_flow_weekly f WHERE week >= '2026-11-02') x
 WHERE n <= 4 ORDER BY week, customers DESC, from_segment, to_segment;

\echo
\echo '=== 24. RFM grid: buyers per recency x frequency cell (report_rfm_grid) ==='
SELECT recency_score AS r,
       sum(customers) FILTER (WHERE frequency_score = 1) AS "f=1", sum(customers) FILTER (WHERE frequency_score = 2) AS "f=2",
       sum(customers) FILTER (WHERE frequency_score = 3) AS "f=3", sum(customers) FILTER (WHERE frequency_score = 4) AS "f=4",
       sum(customers) FILTER (WHERE frequency_score = 5) AS "f=5", sum(revenue) AS revenue
  FROM segments.report_rfm_grid GROUP BY 1 ORDER BY 1 DESC;

-- and the reader role sees nothing personal
\echo
\echo '=== 25. The reader role cannot read personal data ==='
\set ON_ERROR_STOP off
SELECT customer_id FROM segments.customer_facts LIMIT 1;
\set ON_ERROR_STOP on
RESET ROLE;
DROP ROLE demo_bi;

-- Roles: each can do its job and nothing else.
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'segments\_%' ORDER BY 1;
CREATE ROLE regress_bi LOGIN IN ROLE segments_reader;
CREATE ROLE regress_shop_app LOGIN IN ROLE segments_app;
CREATE ROLE regress_staff LOGIN IN ROLE segments_admin;
CREATE ROLE regress_nobody LOGIN;

-- what the extension's functions grant: the app and admin APIs run with the
-- owner's rights and only their role may call them
SELECT r.rolname, count(*) AS functions
  FROM pg_proc p CROSS JOIN pg_roles r
 WHERE p.pronamespace = 'segments'::regnamespace AND r.rolname LIKE 'segments\_%'
   AND has_function_privilege(r.oid, p.oid, 'EXECUTE') AND p.prosecdef
 GROUP BY 1 ORDER BY 1;
-- no definer function is left executable by PUBLIC
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'segments'::regnamespace AND p.prosecdef
   AND has_function_privilege('regress_nobody', p.oid, 'EXECUTE');
-- every definer function pins its search_path
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'segments'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig::text[] @> '{"search_path=pg_catalog, pg_temp"}', false);
-- what each role may read (PUBLIC reads the catalog version and the lists of templates, settings and RFM groups)
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relkind IN ('r', 'v')
   AND has_table_privilege('regress_nobody', c.oid, 'SELECT') ORDER BY 1;
SELECT r.rolname, count(*) FILTER (WHERE c.relname LIKE 'report\_%') AS report_views,
	   count(*) FILTER (WHERE c.relname NOT LIKE 'report\_%') AS other_relations
  FROM pg_class c CROSS JOIN pg_roles r
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relkind IN ('r', 'v')
   AND r.rolname IN ('segments_reader', 'segments_app', 'segments_admin', 'regress_nobody')
   AND has_table_privilege(r.oid, c.oid, 'SELECT')
 GROUP BY 1 ORDER BY 1;
SELECT r.rolname, c.relname, p.priv
  FROM pg_class c CROSS JOIN pg_roles r CROSS JOIN unnest('{INSERT,UPDATE,DELETE,TRUNCATE}'::text[]) p (priv)
 WHERE c.relnamespace = 'segments'::regnamespace AND c.relkind = 'r'
   AND r.rolname IN ('segments_reader', 'segments_app', 'segments_admin')
   AND has_table_privilege(r.oid, c.oid, p.priv)
   AND c.relname NOT IN ('customer_changes', 'segment_catalog_version')   -- PUBLIC: the capture trigger and catalog counter
 ORDER BY 1, 2, 3;

--------------------------------------------------------------------------------
-- admin: campaigns, segments, settings, the tick; reads everything but the key
--------------------------------------------------------------------------------
SET ROLE regress_staff;
SELECT segments.define_segment('big_spenders', 'net_revenue > 100', title => 'Big spenders');
SELECT segments.create_campaign('welcome', 'order_completed', holdout_percent => 0);
SELECT segments.add_campaign_step('welcome', '0', 'email', 'welcome');
SELECT segments.set_campaign_status('welcome', 'active');
SELECT segments.set_setting('frequency_cap_email', '20 hours');
SELECT status FROM segments.tick('2026-07-01 10:00+00');
SELECT count(*) >= 0 AS reads_facts FROM segments.customer_facts;
SELECT count(*) >= 0 AS reads_reports FROM segments.report_campaigns;
SELECT count(*) FROM segments.erasure_key;
SELECT segments.track_order('x', 'x', now(), 1);
SELECT * FROM segments.claim_messages('email');
INSERT INTO segments.outbox (idempotency_key, enrollment_id, campaign_id, step_no, customer_id, channel, message_key, not_before, not_after, created_at)
VALUES ('k', 1, 'welcome', 1, 'x', 'email', 'm', now(), now(), now());
SELECT segments.attach_orders('pg_catalog.pg_class', 'relname', 'oid', 'relname', 'relpages');
RESET ROLE;
-- switched on before the orders below (activation is stamped with the real clock)
UPDATE segments.campaign SET activated_at = '2026-06-01' WHERE campaign_id = 'welcome';

--------------------------------------------------------------------------------
-- app: tracking calls and the outbox; nothing else
--------------------------------------------------------------------------------
SET ROLE regress_shop_app;
SELECT segments.track_customer('r1', time_zone => 'UTC'),
	   segments.track_consent('r1', 'email', true, '2026-07-01 09:00+00'),
	   segments.track_order('r1', 'r1-o1', '2026-07-01 10:30+00', 150);
SELECT segments.track_engagement('r1', 'email', 'delivered', '2026-07-01 10:31+00');
SELECT count(*) FROM segments.customer_facts;
SELECT count(*) FROM segments.report_campaigns;
SELECT segments.create_campaign('sneaky', 'order_completed');
SELECT segments.set_setting('frequency_cap_email', '1 hour');
SELECT status FROM segments.tick('2026-07-01 11:00+00');
SELECT * FROM segments.erase_customer('r1');
UPDATE segments.outbox SET state = 'sent';
RESET ROLE;
SELECT status, enrolled, queued FROM segments.tick('2026-07-01 11:00+00');
SET ROLE regress_shop_app;
SELECT customer_id, message_key, attempt FROM segments.claim_messages('email', 10, 'app', '2026-07-01 11:01+00');
SELECT segments.ack_message(m.message_id, 1, 'p-1', '2026-07-01 11:02+00') FROM segments.outbox m;
RESET ROLE;
SELECT m.message_id AS r1_msg FROM segments.outbox m WHERE m.customer_id = 'r1' \gset
SET ROLE regress_shop_app;
SELECT segments.ack_message(:r1_msg, 1, 'p-1', '2026-07-01 11:02+00') AS acked;
RESET ROLE;

--------------------------------------------------------------------------------
-- reader: the report views, nothing else
--------------------------------------------------------------------------------
SET ROLE regress_bi;
SELECT campaign_id, sent, recipients FROM segments.report_campaigns;
SELECT count(*) >= 0 AS reads FROM segments.report_segments;
SELECT count(*) AS cells FROM segments.report_rfm_grid;
SELECT count(*) >= 0 AS reads FROM segments.report_cart_recovery_daily;
SELECT count(*) FROM segments.customer_facts;
SELECT count(*) FROM segments.outbox;
SELECT count(*) FROM segments.tracked_customers;
SELECT count(*) FROM segments.segment_membership;
SELECT count(*) FROM segments._message_outcomes;
SELECT segments.track_order('r2', 'r2-o1', now(), 1);
SELECT * FROM segments.claim_messages('email');
SELECT segments.create_campaign('sneaky', 'order_completed');
SELECT * FROM segments.explain_customer('r1');
SELECT segments.setting_value('shop_time_zone');
RESET ROLE;

-- a role with no grant cannot even see the schema's objects
SET ROLE regress_nobody;
SELECT count(*) FROM segments.report_campaigns;
SELECT segments.track_order('r3', 'r3-o1', now(), 1);
RESET ROLE;

--------------------------------------------------------------------------------
-- Definer rights cannot be borrowed
--------------------------------------------------------------------------------
-- admins run tick(), which holds the tick lock; run_tick() and the tick's
-- internals stay with the owner and pg_cron
SELECT has_function_privilege('segments_admin', 'segments.run_tick(timestamptz)', 'EXECUTE') AS admin_run_tick,
	   has_function_privilege('segments_admin', 'segments._tick_work(int8, timestamptz)', 'EXECUTE')
	   AND (SELECT prosecdef FROM pg_proc WHERE oid = 'segments._tick_work(int8, timestamptz)'::regprocedure) AS admin_tick_work_as_owner;
-- the schedule calls touch only segments tick jobs
SET ROLE regress_staff;
SELECT segments.schedule_tick(job_name => 'nightly-backup');
SELECT segments.unschedule_tick('nightly-backup');
SELECT segments.schedule_tick(job_name => 'segments-tick-x');   -- then: pg_cron is not here
RESET ROLE;

-- a shop table's owner cannot make us run their code: generated SQL casts
-- mapped columns, so a user-defined cast from (or to) a mapped column's type,
-- a domain with a CHECK, or a user-defined base type are refused, when
-- attaching and when the DDL comes later
CREATE ROLE regress_shop_owner;
CREATE SCHEMA regress_shop AUTHORIZATION regress_shop_owner;
SET ROLE regress_shop_owner;
CREATE TYPE regress_shop.order_state AS ENUM ('paid', 'refunded');
CREATE TABLE regress_shop.orders (id int PRIMARY KEY, buyer int, placed timestamptz, total numeric,
	state regress_shop.order_state);
CREATE FUNCTION regress_shop.sneaky(regress_shop.order_state) RETURNS text LANGUAGE sql
	AS $$ SELECT 'paid' $$;
RESET ROLE;
SELECT segments.attach_orders('regress_shop.orders', customer => 'buyer', order_id => 'id', placed_at => 'placed',
	amount => 'total', status => 'state', completed => '{paid}', backfill => false) AS enum_status_attached;
SET ROLE regress_shop_owner;
CREATE CAST (regress_shop.order_state AS text) WITH FUNCTION regress_shop.sneaky(regress_shop.order_state);
CREATE DOMAIN regress_shop.checked_int AS int CHECK (VALUE > 0);
ALTER TABLE regress_shop.orders ALTER COLUMN buyer TYPE regress_shop.checked_int;
-- DDL that does not touch a mapped column still works
ALTER TABLE regress_shop.orders ADD COLUMN note text;
RESET ROLE;
SELECT count(*) AS casts_from_order_state FROM pg_cast WHERE castsource = 'regress_shop.order_state'::regtype;
SELECT segments.detach('regress_shop.orders');
CREATE DOMAIN regress_shop.checked_amount AS numeric CHECK (VALUE >= 0);
CREATE TABLE regress_shop.orders2 (id int PRIMARY KEY, buyer int, placed timestamptz, total regress_shop.checked_amount);
SELECT segments.attach_orders('regress_shop.orders2', customer => 'buyer', order_id => 'id', placed_at => 'placed',
	amount => 'total', backfill => false);
SELECT count(*) AS attached_after_errors FROM segments.sources WHERE NOT builtin;
DROP SCHEMA regress_shop CASCADE;
DROP ROLE regress_shop_owner;

-- clean up for the tests that follow
DROP ROLE regress_bi, regress_shop_app, regress_staff, regress_nobody;
SELECT segments.drop_segment('big_spenders');
SELECT segments.reset_setting('frequency_cap_email');
TRUNCATE segments.outbox, segments.decision_log, segments.contact_log, segments.enrollment,
	segments.campaign_orders, segments.attribution_queue, segments.tick_runs, segments.tick_state,
	segments.campaign_step, segments.campaign CASCADE;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.consent_events;
DELETE FROM segments.engagement_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments('2026-07-02', full_evaluation => true);
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;

-- Campaigns: enrollment, stop rules, the outbox and the tick, on a stepped clock.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

--------------------------------------------------------------------------------
-- Stop rules on their own (the C function), hand-computed cases
--------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.decide(as_of timestamptz, time_zone text DEFAULT 'Europe/Berlin',
	campaign_status text DEFAULT 'active', expires_at timestamptz DEFAULT NULL, holdout bool DEFAULT false,
	signal_at timestamptz DEFAULT '2026-03-01 00:00+00', last_order_at timestamptz DEFAULT NULL,
	cart_state text DEFAULT NULL, consent bool DEFAULT true, bounced timestamptz DEFAULT NULL,
	complained timestamptz DEFAULT NULL, ignored int DEFAULT 0, already_sent bool DEFAULT false,
	not_after timestamptz DEFAULT NULL, offer float8 DEFAULT NULL, max_offer float8 DEFAULT NULL,
	in_stock bool DEFAULT NULL, pending bool DEFAULT false, last_sent timestamptz DEFAULT NULL,
	cap interval DEFAULT '16 hours', quiet_start int DEFAULT 21 * 60, quiet_end int DEFAULT 8 * 60)
RETURNS text LANGUAGE sql AS $$
	SELECT d.decision || coalesce(' ' || d.reason, '') || coalesce(' until ' || d.defer_until::text, '')
		   || CASE WHEN d.stops_enrollment THEN ' (stops)' ELSE '' END
	  FROM segments.decide_step(as_of, campaign_status, expires_at, holdout, signal_at, last_order_at, cart_state,
		   consent, bounced, complained, ignored, 6, already_sent, not_after, offer, max_offer, in_stock, pending,
		   last_sent, cap, time_zone, 'UTC', quiet_start, quiet_end, 120) d
$$;

SELECT pg_temp.decide('2026-03-02 10:00+00') AS plain_send;
SELECT pg_temp.decide('2026-03-02 10:00+00', campaign_status => 'paused') AS paused;
SELECT pg_temp.decide('2026-03-02 10:00+00', campaign_status => 'archived') AS archived;
SELECT pg_temp.decide('2026-03-02 10:00+00', expires_at => '2026-03-02 10:00+00') AS expired;
SELECT pg_temp.decide('2026-03-02 10:00+00', holdout => true) AS holdout;
SELECT pg_temp.decide('2026-03-02 10:00+00', last_order_at => '2026-03-01 12:00+00') AS ordered_after_signal;
SELECT pg_temp.decide('2026-03-02 10:00+00', last_order_at => '2026-02-01 12:00+00') AS ordered_before_signal;
SELECT pg_temp.decide('2026-03-02 10:00+00', last_order_at => '2026-03-01 12:00+00', cart_state => 'open') AS cart_bought;
SELECT pg_temp.decide('2026-03-02 10:00+00', cart_state => s) AS cart FROM unnest('{open,converted,emptied,changed,gone}'::text[]) s;
SELECT pg_temp.decide('2026-03-02 10:00+00', cart_state => 'lost');
SELECT pg_temp.decide('2026-03-02 10:00+00', complained => '2026-01-01') AS complained;
SELECT pg_temp.decide('2026-03-02 10:00+00', bounced => '2026-01-01') AS bounced;
SELECT pg_temp.decide('2026-03-02 10:00+00', ignored => 5) AS five_ignored, pg_temp.decide('2026-03-02 10:00+00', ignored => 6) AS six_ignored;
SELECT pg_temp.decide('2026-03-02 10:00+00', already_sent => true) AS already_sent;
SELECT pg_temp.decide('2026-03-02 10:00+00', not_after => '2026-03-02 09:59+00') AS past_not_after;
SELECT pg_temp.decide('2026-03-02 10:00+00', consent => false) AS no_consent, pg_temp.decide('2026-03-02 10:00+00', consent => NULL) AS unknown_consent;
SELECT pg_temp.decide('2026-03-02 10:00+00', offer => 10, max_offer => 10) AS offer_at_guardrail,
	   pg_temp.decide('2026-03-02 10:00+00', offer => 15, max_offer => 10) AS offer_beyond,
	   pg_temp.decide('2026-03-02 10:00+00', offer => 5) AS offer_without_guardrail;
SELECT pg_temp.decide('2026-03-02 10:00+00', in_stock => false) AS out_of_stock;
SELECT pg_temp.decide('2026-03-02 10:00+00', pending => true) AS facts_pending;
-- frequency cap: 16 h after the last message, then quiet hours if that is at night
SELECT pg_temp.decide('2026-03-02 10:00+00', last_sent => '2026-03-02 01:00+00') AS capped_until_17_utc;
SELECT pg_temp.decide('2026-03-02 10:00+00', last_sent => '2026-03-02 05:00+00') AS capped_into_the_night;
SELECT pg_temp.decide('2026-03-02 10:00+00', last_sent => '2026-03-01 18:00+00') AS cap_over;
-- quiet hours in the buyer's own zone: 21:00-08:00 local
SELECT z, pg_temp.decide('2026-03-02 06:30+00', time_zone => z) AS at_0630_utc
  FROM unnest('{Europe/Berlin,Europe/London,America/New_York,Asia/Tokyo,Australia/Sydney,Asia/Kolkata}'::text[]) z;
-- unknown or missing zone: the shop's zone (UTC here) with two more quiet hours on each side
SELECT pg_temp.decide('2026-03-02 09:30+00', time_zone => z) AS at_0930_utc,
	   pg_temp.decide('2026-03-02 10:00+00', time_zone => z) AS at_1000_utc,
	   pg_temp.decide('2026-03-02 18:59+00', time_zone => z) AS at_1859_utc,
	   pg_temp.decide('2026-03-02 19:00+00', time_zone => z) AS at_1900_utc
  FROM unnest(ARRAY['Mars/Olympus', NULL, '']) z;
-- no quiet hours when start = end; quiet hours within one day
SELECT pg_temp.decide('2026-03-02 23:00+00', quiet_start => 0, quiet_end => 0) AS no_quiet_hours,
	   pg_temp.decide('2026-03-02 12:00+00', quiet_start => 12 * 60, quiet_end => 14 * 60) AS lunch_break;
-- a POSIX string is not an IANA zone: "UTC+3" would mean three hours behind
SELECT pg_temp.decide('2026-03-02 06:30+00', time_zone => z) AS posix_is_unknown
  FROM unnest('{UTC+3,<+03>-3,Etc/GMT-3}'::text[]) z;
-- quiet hours of 23 h for an unknown zone: the margin never narrows them
SELECT pg_temp.decide('2026-03-02 12:00+00', time_zone => NULL, quiet_start => 12 * 60 + 30, quiet_end => 11 * 60 + 30) AS long_quiet;
SELECT pg_temp.decide('2026-03-02 10:00+00', quiet_start => 1440);
SELECT segments.decide_step(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- daylight saving: New York springs forward on 2026-03-08 at 02:00 (no 02:30
-- that night) and falls back on 2026-11-01 at 02:00 (01:30 happens twice)
SELECT segments.quiet_hours_end('2026-03-08 04:00+00', 'America/New_York', 22 * 60, 8 * 60) AS spring_0800_edt_is_1200_utc,
	   segments.quiet_hours_end('2026-03-08 04:00+00', 'America/New_York', 22 * 60, 150) AS end_in_the_gap,
	   segments.quiet_hours_end('2026-11-01 04:00+00', 'America/New_York', 22 * 60, 8 * 60) AS fall_0800_est_is_1300_utc,
	   segments.quiet_hours_end('2026-11-01 04:00+00', 'America/New_York', 22 * 60, 90) AS end_in_the_overlap;
SELECT segments.quiet_hours_end('2026-03-29 00:30+00', 'Europe/Berlin', 21 * 60, 8 * 60) AS berlin_spring,
	   segments.quiet_hours_end('2026-03-02 12:00+00', 'Europe/Berlin', 21 * 60, 8 * 60) AS daytime_is_now,
	   segments.quiet_hours_end('2026-03-02 12:00+00', 'Nowhere/City', 21 * 60, 8 * 60) AS unknown_zone;
-- the result is never inside the window, and it is the first minute out of
-- it: every 20 minutes of a year in four zones
SELECT z, count(*) AS instants,
	   count(*) FILTER (WHERE e < t) AS went_backwards,
	   count(*) FILTER (WHERE extract(hour FROM e AT TIME ZONE z) * 60 + extract(minute FROM e AT TIME ZONE z) >= 21 * 60
					   OR extract(hour FROM e AT TIME ZONE z) < 8) AS ended_inside,
	   count(*) FILTER (WHERE e > t AND NOT (extract(hour FROM (e - interval '1 minute') AT TIME ZONE z) >= 21
											 OR extract(hour FROM (e - interval '1 minute') AT TIME ZONE z) < 8)) AS later_than_needed
  FROM unnest('{America/New_York,Europe/Berlin,Australia/Lord_Howe,Asia/Kathmandu}'::text[]) z,
	   generate_series('2026-01-01 00:00+00'::timestamptz, '2026-12-31 23:40+00', '20 minutes') t,
	   LATERAL segments.quiet_hours_end(t, z, 21 * 60, 8 * 60) e
 GROUP BY z ORDER BY z;

-- holdout: deterministic, and close to the asked share
SELECT segments.in_holdout('cart_recovery', 'c1', 10) = segments.in_holdout('cart_recovery', 'c1', 10) AS stable,
	   segments.in_holdout('x', 'c1', 0) AS never_at_0, segments.in_holdout('x', 'c1', 100) AS always_at_100;
SELECT round(avg(segments.in_holdout('cart_recovery', i::text, 10)::int) * 100, 1) AS pct_of_10k_at_10
  FROM generate_series(1, 10000) i;

--------------------------------------------------------------------------------
-- Managing campaigns: clear errors, nothing half-written
--------------------------------------------------------------------------------
SELECT template_id, signal, steps FROM segments.campaign_templates ORDER BY template_id;
-- every template makes a valid campaign (its segments exist, its steps are in order)
SELECT t.template_id, segments.campaign_from_template(t.template_id, 't_' || t.template_id, 'telegram',
		broadcast_at => CASE WHEN t.signal = 'broadcast' THEN '2026-12-01'::timestamptz END) AS copied
  FROM segments.campaign_templates t ORDER BY 1;
SELECT c.campaign_id, c.status, string_agg(s.delay || ' ' || s.message_key, ', ' ORDER BY s.step_no) AS steps
  FROM segments.campaign c JOIN segments.campaign_step s USING (campaign_id) GROUP BY 1, 2 ORDER BY 1;
SELECT count(segments.set_campaign_status(c.campaign_id, 'active')) AS activated FROM segments.campaign c;
DELETE FROM segments.campaign WHERE campaign_id LIKE 't\_%';
SELECT segments.campaign_from_template('no_such_template');
SELECT segments.campaign_from_template('cart_recovery', channel => 'fax');
SELECT segments.campaign_from_template('vip_early_access');
SELECT segments.create_campaign('Bad Name', 'order_completed');
SELECT segments.create_campaign('x', 'order_completed', audience_segments => '{vip,no_such_segment}');
SELECT segments.create_campaign('x', 'teleport');
SELECT segments.create_campaign('x', 'segment_entered');
SELECT segments.create_campaign('x', 'order_completed', holdout_percent => 101);
SELECT segments.create_campaign('x', 'broadcast');
SELECT segments.create_campaign('x', 'order_completed', reentry_days => -1);
SELECT count(*) AS campaigns_after_errors FROM segments.campaign;
SELECT segments.create_campaign('thanks', 'order_completed', audience_segments => '{first_time}', holdout_percent => 0);
SELECT segments.set_campaign_status('thanks', 'active');
SELECT segments.add_campaign_step('thanks', '2 days', 'email', 'thank_you');
SELECT segments.add_campaign_step('thanks', '1 day', 'email', 'too_early');
SELECT segments.add_campaign_step('thanks', '3 days', 'pigeon', 'x');
SELECT segments.add_campaign_step('nope', '3 days', 'email', 'x');
SELECT segments.add_campaign_step('thanks', '3 days', 'email', 'x', link => 'moon');
SELECT segments.add_campaign_step('thanks', NULL, 'email', 'x');
SELECT segments.add_campaign_step('thanks', '3 days', 'email', NULL);
SELECT segments.create_campaign('x', 'order_completed', audience_mode => 'most');
SELECT segments.create_campaign('x', 'order_completed', starts_at => '2026-03-02', expires_at => '2026-03-01');
SELECT segments.set_campaign_status('thanks', 'running');
SELECT segments.set_campaign_status('nope', 'active');

--------------------------------------------------------------------------------
-- The shop: five buyers leave carts at 08:30 UTC on Monday 2026-03-02
--------------------------------------------------------------------------------
SELECT segments.track_customer('c1', time_zone => 'Europe/Berlin'),
	   segments.track_customer('c2', time_zone => 'America/New_York'),
	   segments.track_customer('c3', time_zone => 'Europe/Berlin'),
	   segments.track_customer('c4'),
	   segments.track_customer('c5', time_zone => 'Asia/Tokyo');
SELECT count(*) FROM (SELECT segments.track_consent(c, 'email', true, '2026-01-01') FROM unnest('{c1,c2,c4,c5}'::text[]) c) x;
SELECT count(segments.track_cart('c' || i, 'cart' || i, 40 + i, link => 'https://shop.test/cart/' || i,
									at => '2026-03-02 08:30+00'))
  FROM generate_series(1, 5) i;

SELECT segments.campaign_from_template('cart_recovery', activate => true);
-- switched on before the carts (activation is stamped with the real clock)
UPDATE segments.campaign SET holdout_percent = 0, activated_at = '2026-03-01' WHERE campaign_id = 'cart_recovery';
SELECT step_no, delay, channel, message_key, link, offer_percent, valid_for FROM segments.campaign_step
 WHERE campaign_id = 'cart_recovery' ORDER BY step_no;

-- 09:00: no cart has been idle for the first step's hour yet
SELECT status, enrolled, steps_due, queued FROM segments.tick('2026-03-02 09:00+00');
-- 09:31: all five enroll; the rules decide
SELECT status, enrolled, steps_due, queued, deferred, skipped FROM segments.tick('2026-03-02 09:31+00');
SELECT customer_id, step_no, decision, reason, defer_until FROM segments.decision_log ORDER BY decision_id;
SELECT customer_id, message_key, variables, state, not_before, not_after FROM segments.outbox ORDER BY message_id;
-- the same instant again writes nothing
SELECT status, enrolled, steps_due, queued FROM segments.tick('2026-03-02 09:31+00');
SELECT count(*) AS decisions, (SELECT count(*) FROM segments.outbox) AS messages FROM segments.decision_log;

-- c2 buys at 12:00 UTC (07:00 in New York, still quiet hours there)
SELECT segments.track_order('c2', 'o-c2', '2026-03-02 12:00+00', 42);
SELECT segments.track_cart_closed('cart2', 'converted', 'o-c2', '2026-03-02 12:00+00');
-- a second campaign wants c4 the moment it is allowed to: the cap keeps one
SELECT segments.create_campaign('hello', 'wallet_credit', holdout_percent => 0, priority => 200);
SELECT segments.add_campaign_step('hello', '0', 'email', 'wallet_hello', 'wallet');
SELECT segments.set_campaign_status('hello', 'active');
UPDATE segments.campaign SET activated_at = '2026-03-01' WHERE campaign_id = 'hello';
SELECT segments.track_wallet('c4', 10, 'gift', '2026-03-02 09:45+00');
SELECT status, enrolled, steps_due, queued, deferred, skipped FROM segments.tick('2026-03-02 13:00+00');
SELECT customer_id, campaign_id, step_no, decision, reason, defer_until FROM segments.decision_log
 WHERE decided_at = '2026-03-02 13:00+00' ORDER BY decision_id;
SELECT customer_id, campaign_id, state, stop_reason, next_step_no, next_due_at FROM segments.enrollment ORDER BY enrollment_id;

--------------------------------------------------------------------------------
-- The outbox: claim, re-check, ack, fail, lease expiry, fencing
--------------------------------------------------------------------------------
-- c1 buys before the sender claims: the claim holds c1 back until the tick
-- has folded the order in, then cancels the reminder
SELECT segments.track_order('c1', 'o-c1', '2026-03-02 13:05+00', 41);
SELECT customer_id, message_key, attempt FROM segments.claim_messages('email', 10, 'sender-a', '2026-03-02 13:10+00');
SELECT customer_id, state, attempt, not_before FROM segments.outbox ORDER BY message_id;
SELECT status FROM segments.tick('2026-03-02 13:11+00');
SELECT customer_id, message_key, attempt FROM segments.claim_messages('email', 10, 'sender-a', '2026-03-02 13:12+00');
SELECT customer_id, message_key, state, attempt, last_error FROM segments.outbox ORDER BY message_id;

-- c4's reminder was leased (attempt 1); c5 waits for the morning in Tokyo
SELECT m.message_id AS c4_msg FROM segments.outbox m WHERE m.customer_id = 'c4' AND m.state = 'leased' \gset
SELECT m.message_id AS c5_msg FROM segments.outbox m WHERE m.customer_id = 'c5' \gset
SELECT segments.ack_message(:c4_msg, 1, 'provider-1', '2026-03-02 13:12:30+00') AS acked,
	   segments.ack_message(:c4_msg, 1, 'provider-1') AS acked_again,
	   segments.ack_message(:c4_msg, 0) AS stale_attempt;
SELECT state, provider_message_id, sent_at FROM segments.outbox WHERE message_id = :c4_msg;
SELECT event, channel, message_id = :'c4_msg' AS right_message, occurred_at FROM segments.engagement_events WHERE customer_id = 'c4';
SELECT segments.ack_message(-1, 1);
-- c5's reminder, held back at 13:10 by quiet hours in Tokyo, goes out at 08:00
-- there (23:00 UTC): the deferral moved its window (not-after 21:30) along,
-- defer never drops
SELECT count(*) FROM segments.claim_messages('email', 10, 'sender-a', '2026-03-02 22:59+00');
SELECT customer_id, attempt FROM segments.claim_messages('email', 10, 'sender-a', '2026-03-02 23:00+00');
SELECT state, not_before, not_after FROM segments.outbox WHERE message_id = :c5_msg;

-- a Telegram campaign for the rest (cap shortened so one buyer can get several)
SELECT segments.set_setting('frequency_cap_telegram', '1 minute');
SELECT segments.create_campaign('ping', 'wallet_credit', holdout_percent => 0, reentry_days => 0);
SELECT segments.add_campaign_step('ping', '0', 'telegram', 'ping');
SELECT segments.set_campaign_status('ping', 'active');
UPDATE segments.campaign SET activated_at = '2026-03-01' WHERE campaign_id = 'ping';
SELECT segments.track_consent('c3', 'telegram', true, '2026-03-02 12:00+00');
SELECT segments.track_wallet('c3', 5, 'gift', '2026-03-02 13:30+00');
SELECT queued FROM segments.tick('2026-03-02 13:31+00');
SELECT m.message_id AS ping_msg FROM segments.outbox m WHERE m.campaign_id = 'ping' \gset
-- a lease that expires comes back with a raised attempt; the old ack is fenced off
SELECT attempt, lease_until FROM segments.claim_messages('telegram', 10, 'sender-a', '2026-03-02 13:32+00');
SELECT attempt, lease_until FROM segments.claim_messages('telegram', 10, 'sender-b', '2026-03-02 13:36+00');
SELECT attempt, lease_until FROM segments.claim_messages('telegram', 10, 'sender-b', '2026-03-02 13:37+00');
SELECT segments.ack_message(:ping_msg, 1) AS late_ack_from_a,
	   segments.fail_message(:ping_msg, 1, 'late') AS late_failure_from_a,
	   segments.ack_message(:ping_msg, 2) AS ack_from_b;
SELECT state, attempt, leased_by FROM segments.outbox WHERE message_id = :ping_msg;
-- failures back off, then the message is parked as dead with its last error
SELECT segments.set_setting('outbox_max_attempts', '2');
SELECT segments.track_wallet('c3', 5, 'gift', '2026-03-02 13:40+00');
SELECT queued FROM segments.tick('2026-03-02 13:41+00');
SELECT m.message_id AS ping_msg FROM segments.outbox m WHERE m.campaign_id = 'ping' AND m.state = 'ready' \gset
SELECT attempt FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 13:42+00');
SELECT segments.fail_message(:ping_msg, 1, 'timeout', at => '2026-03-02 13:42+00');
SELECT not_before FROM segments.outbox WHERE message_id = :ping_msg;
SELECT count(*) FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 13:42:59+00');
SELECT attempt FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 13:43+00');
SELECT segments.fail_message(:ping_msg, 2, 'timeout again', at => '2026-03-02 13:43+00');
SELECT state, attempt, last_error FROM segments.outbox WHERE message_id = :ping_msg;
SELECT segments.fail_message(:ping_msg, 2, 'after death') AS stale;
-- a lease that keeps expiring ends dead too
SELECT segments.track_wallet('c3', 5, 'gift', '2026-03-02 13:50+00');
SELECT queued FROM segments.tick('2026-03-02 13:51+00');
SELECT attempt FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 13:52+00');
SELECT attempt FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 13:57+00');
SELECT count(*) FROM segments.claim_messages('telegram', 10, NULL, '2026-03-02 14:02+00');
SELECT state, attempt, last_error FROM segments.outbox WHERE campaign_id = 'ping' ORDER BY message_id;
SELECT segments.reset_setting('frequency_cap_telegram');
-- settings the stop rules could not use are refused up front
SELECT segments.set_setting('quiet_hours_start', '24:00');
SELECT segments.set_setting('quiet_hours_end', '07:59:30');
SELECT segments.set_setting('unknown_zone_margin', '13 hours');
SELECT segments.set_setting('outbox_max_attempts', '0');
-- the margin guardrail: no max_offer_percent means no discount, even when the
-- buyer's margin would allow one
SELECT segments.create_campaign('margin', 'wallet_credit', holdout_percent => 0, min_margin_percent => 20);
SELECT segments.add_campaign_step('margin', '0', 'telegram', 'margin_offer', offer_percent => 10);
SELECT segments.set_campaign_status('margin', 'active');
UPDATE segments.campaign SET activated_at = '2026-03-01' WHERE campaign_id = 'margin';
SELECT segments.track_wallet('c3', 5, 'gift', '2026-03-02 14:10+00');
SELECT queued, skipped FROM segments.tick('2026-03-02 14:11+00');
SELECT decision, reason, facts->>'offer_percent' AS offer, facts->>'max_offer_percent' AS max_offer
  FROM segments.decision_log WHERE campaign_id = 'margin';
SELECT segments.set_campaign_status('margin', 'archived');
SELECT segments.reset_setting('outbox_max_attempts');
SELECT count(*) AS settings_markers FROM segments.customer_changes WHERE key_kind = 'settings';
SELECT * FROM segments.claim_messages('email', 0);
SELECT * FROM segments.claim_messages('carrier pigeon');

--------------------------------------------------------------------------------
-- Catching up after downtime: steps that became due are decided once; a step
-- past its not-after is dropped with a reason
--------------------------------------------------------------------------------
SELECT customer_id, state, next_step_no, next_due_at FROM segments.enrollment
 WHERE campaign_id = 'cart_recovery' AND state = 'active' ORDER BY customer_id;
-- the server was down from Monday 13:51 until Wednesday 09:00: step 2's
-- window has passed, step 3's has not
SELECT status, steps_due, queued, deferred, skipped FROM segments.tick('2026-03-04 09:00+00');
SELECT customer_id, step_no, decision, reason FROM segments.decision_log
 WHERE decided_at = '2026-03-04 09:00+00' ORDER BY decision_id;
SELECT customer_id, state, stop_reason FROM segments.enrollment WHERE campaign_id = 'cart_recovery' ORDER BY customer_id;

--------------------------------------------------------------------------------
-- Pause and archive; explain
--------------------------------------------------------------------------------
-- c5 leaves another cart: re-entry is blocked for 7 days, then allowed
SELECT segments.track_cart('c5', 'cart5b', 99, at => '2026-03-05 10:00+00');
SELECT enrolled, queued FROM segments.tick('2026-03-05 11:01+00');
UPDATE segments.campaign SET reentry_days = 0 WHERE campaign_id = 'cart_recovery';
SELECT segments.track_cart('c5', 'cart5b', 99, at => '2026-03-05 11:05+00');
SELECT enrolled, queued FROM segments.tick('2026-03-05 12:06+00');
SELECT customer_id, message_key, state FROM segments.outbox WHERE state = 'ready' ORDER BY message_id;
SELECT segments.set_campaign_status('cart_recovery', 'paused');
SELECT customer_id, message_key, state, last_error FROM segments.outbox WHERE last_error = 'campaign_paused' ORDER BY message_id;
SELECT steps_due FROM segments.tick('2026-03-06 11:00+00');
SELECT segments.set_campaign_status('cart_recovery', 'active');
SELECT steps_due, queued FROM segments.tick('2026-03-06 11:01+00');
SELECT segments.set_campaign_status('cart_recovery', 'archived');
SELECT segments.set_campaign_status('cart_recovery', 'active');
SELECT count(*) FILTER (WHERE state = 'active') AS active_left FROM segments.enrollment WHERE campaign_id = 'cart_recovery';

-- the owner deletes a step buyers are waiting for: they go on with the next
SELECT segments.create_campaign('edited', 'wallet_credit', holdout_percent => 0);
SELECT segments.add_campaign_step('edited', '1 hour', 'email', 'first'),
	   segments.add_campaign_step('edited', '2 hours', 'email', 'second');
SELECT segments.set_campaign_status('edited', 'active');
UPDATE segments.campaign SET activated_at = '2026-03-01' WHERE campaign_id = 'edited';
SELECT segments.track_wallet('c5', 5, 'gift', '2026-03-06 12:10+00');
SELECT enrolled FROM segments.tick('2026-03-06 12:11+00');
DELETE FROM segments.campaign_step WHERE campaign_id = 'edited' AND step_no = 1;
SELECT steps_due FROM segments.tick('2026-03-06 13:30+00');
SELECT state, next_step_no, next_due_at FROM segments.enrollment WHERE campaign_id = 'edited';
SELECT segments.set_campaign_status('edited', 'archived');

SELECT step_no, stage, decision, reason, enrollment_state, message_state FROM segments.explain_campaign('c2', 'cart_recovery');
SELECT step_no, stage, decision, reason, enrollment_state, facts->>'consent' AS consent
  FROM segments.explain_campaign('c3', 'cart_recovery') ORDER BY decided_at, step_no LIMIT 2;
SELECT enrollment_state, decision, reason FROM segments.explain_campaign('c5', 'thanks');
SELECT * FROM segments.explain_campaign('c5', 'nope');

--------------------------------------------------------------------------------
-- The tick log, and a failing tick leaves everything as it was
--------------------------------------------------------------------------------
SELECT status, count(*) FROM segments.tick_runs GROUP BY status ORDER BY status;
CREATE FUNCTION pg_temp.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$;
CREATE TRIGGER boom BEFORE INSERT ON segments.enrollment FOR EACH ROW EXECUTE FUNCTION pg_temp.boom();
SELECT segments.track_cart('c4', 'cart4b', 10, at => '2026-03-07 08:00+00');
SELECT segments.create_campaign('carts2', 'cart_abandoned', holdout_percent => 0);
SELECT segments.add_campaign_step('carts2', '1 hour', 'email', 'cart_reminder', 'cart');
SELECT segments.set_campaign_status('carts2', 'active');
UPDATE segments.campaign SET activated_at = '2026-03-01' WHERE campaign_id = 'carts2';
SELECT (SELECT watermark FROM segments.tick_state) AS watermark_before,
	   (SELECT count(*) FROM segments.enrollment) || '/' || (SELECT count(*) FROM segments.outbox) || '/'
	   || (SELECT count(*) FROM segments.decision_log) || '/' || (SELECT count(*) FROM segments.customer_changes) AS rows_before \gset
SELECT status, error FROM segments.tick('2026-03-07 10:00+00');
SELECT watermark = :'watermark_before' AS watermark_unmoved,
	   (SELECT count(*) FROM segments.enrollment) || '/' || (SELECT count(*) FROM segments.outbox) || '/'
	   || (SELECT count(*) FROM segments.decision_log) || '/' || (SELECT count(*) FROM segments.customer_changes)
	   = :'rows_before' AS nothing_else_changed
  FROM segments.tick_state;
DROP TRIGGER boom ON segments.enrollment;
SELECT status, enrolled FROM segments.tick('2026-03-07 10:01+00');
SELECT status, error IS NOT NULL AS has_error FROM segments.tick_runs ORDER BY run_id DESC LIMIT 2;
SELECT segments.tick(NULL);
-- run_tick() is what pg_cron calls: it commits the run row first
CALL segments.run_tick('2026-03-07 10:02+00');
SELECT status, as_of FROM segments.tick_runs ORDER BY run_id DESC LIMIT 1;
-- a run left "running" by a killed backend is recorded as failed by the next one
UPDATE segments.tick_runs SET status = 'running', finished_at = NULL WHERE run_id = (SELECT max(run_id) FROM segments.tick_runs);
SELECT status FROM segments.tick('2026-03-07 10:03+00');
SELECT status, left(error, 40) AS error FROM segments.tick_runs ORDER BY run_id DESC LIMIT 2;
-- scheduling needs pg_cron in this database (the hint names the database)
\set VERBOSITY terse
SELECT segments.schedule_tick();
\set VERBOSITY default

-- clean up for the tests that follow
TRUNCATE segments.outbox, segments.decision_log, segments.contact_log, segments.enrollment,
	segments.campaign_orders, segments.attribution_queue, segments.tick_runs, segments.tick_state, segments.campaign_step, segments.campaign CASCADE;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.consent_events;
DELETE FROM segments.engagement_events;
DELETE FROM segments.wallet_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments('2026-03-08', full_evaluation => true);
SELECT count(*) AS members_left FROM segments.segment_membership;
-- breakpoints stamped with our (later) clock would look fresh to later tests
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;

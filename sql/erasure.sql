-- Right to erasure: personal data leaves every table of ours, reports stay
-- the same, and the same id imported again stays suppressed.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- a buyer with a profile, consent, a cart with a private link, wallet and
-- referral history, a campaign message that was clicked and earned an order
SELECT segments.track_customer('erase-me-7781', country => 'DE', region => 'Secretshire', language => 'de',
	time_zone => 'Europe/Berlin', tags => '{tag-secret-42}', referred_by => 'friend-1'),
	   segments.track_customer('friend-1', country => 'FR'),
	   segments.track_customer('bystander-2', country => 'FR');
SELECT segments.track_consent('erase-me-7781', 'email', true, '2026-06-01', 'signup form secret-form-9'),
	   segments.track_consent('bystander-2', 'email', true, '2026-06-01', 'signup form');
SELECT segments.track_referral('friend-1', 'erase-me-7781', 5, '2026-06-01 10:00+00');
SELECT segments.track_wallet('erase-me-7781', 5, 'gift note secret-wallet-3', '2026-06-01 10:00+00');
SELECT segments.track_cart('erase-me-7781', 'cart-e1', 30, link => 'https://shop.test/cart/secret-token-9', at => '2026-06-01 09:00+00');
SELECT segments.track_order('erase-me-7781', 'order-e1', '2026-06-01 10:00+00', 40),
	   segments.track_order('bystander-2', 'order-b1', '2026-06-01 10:00+00', 25),
	   segments.track_order('friend-1', 'order-f1', '2026-06-01 10:00+00', 15);
SELECT segments.create_campaign('thanks', 'order_completed', holdout_percent => 0);
SELECT segments.add_campaign_step('thanks', '0', 'email', 'thank_you');
SELECT segments.set_campaign_status('thanks', 'active');
UPDATE segments.campaign SET activated_at = '2026-06-01' WHERE campaign_id = 'thanks';
SELECT status, enrolled, queued FROM segments.tick('2026-06-01 11:00+00');
SELECT customer_id, attempt FROM segments.claim_messages('email', 10, 'sender', '2026-06-01 11:01+00') ORDER BY 1;
SELECT count(*) FILTER (WHERE a) AS acked
  FROM (SELECT segments.ack_message(o.message_id, o.attempt, 'esp-' || o.customer_id, '2026-06-01 11:02+00') AS a
		  FROM segments.outbox o WHERE o.state = 'leased') x;
SELECT segments.track_engagement(o.customer_id, 'email', 'clicked', '2026-06-01 11:30+00', o.message_id::text)
  FROM segments.outbox o WHERE o.customer_id = 'erase-me-7781';
SELECT segments.track_order('erase-me-7781', 'order-e2', '2026-06-02 10:00+00', 60);
SELECT status FROM segments.tick('2026-06-02 11:00+00');
SELECT customer_id, order_id, campaign_id, touch FROM segments.campaign_orders ORDER BY 1, 2;

-- what the reports say before
CREATE TEMP TABLE before_campaigns AS SELECT * FROM segments.report_campaigns;
CREATE TEMP TABLE before_lift AS SELECT * FROM segments.report_holdout_lift;
CREATE TEMP TABLE before_rfm AS SELECT * FROM segments.report_rfm_grid;
CREATE TEMP TABLE before_steps AS SELECT * FROM segments.report_campaign_steps_daily;
SELECT campaign_id, sent, clicked, credited_orders, revenue FROM before_campaigns;

-- Every text, text[] and jsonb column of every table of ours, searched for a string.
CREATE FUNCTION pg_temp.occurrences(needle text)
RETURNS TABLE (table_name text, column_name text, hits int8) LANGUAGE plpgsql AS $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT cl.relname, a.attname, a.atttypid::regtype AS typ
			   FROM pg_class cl JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0 AND NOT a.attisdropped
			  WHERE cl.relnamespace = 'segments'::regnamespace AND cl.relkind = 'r'
				AND a.atttypid IN ('text'::regtype, 'text[]'::regtype, 'jsonb'::regtype, 'segments.channel'::regtype)
			  ORDER BY 1, 2 LOOP
		EXECUTE format('SELECT count(*) FROM segments.%I WHERE %I::text LIKE %L', c.relname, c.attname, '%' || needle || '%')
		INTO hits;
		IF hits > 0 THEN
			table_name := c.relname; column_name := c.attname; RETURN NEXT;
		END IF;
	END LOOP;
END
$$;
SELECT * FROM pg_temp.occurrences('erase-me-7781');
SELECT count(*) AS columns_searched
  FROM pg_class cl JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE cl.relnamespace = 'segments'::regnamespace AND cl.relkind = 'r'
   AND a.atttypid IN ('text'::regtype, 'text[]'::regtype, 'jsonb'::regtype, 'segments.channel'::regtype);

--------------------------------------------------------------------------------
-- Erase
--------------------------------------------------------------------------------
SELECT * FROM segments.erase_customer('erase-me-7781', '2026-06-03 09:00+00') ORDER BY 1, 2;
-- nothing of the person is left in any text or JSON column of ours
SELECT * FROM pg_temp.occurrences('erase-me-7781');
SELECT * FROM pg_temp.occurrences('secret');
SELECT * FROM pg_temp.occurrences('Secretshire');
SELECT * FROM pg_temp.occurrences('esp-erase');
-- the bystander and the friend are untouched (the friend's referral now names a pseudonym)
SELECT customer_id, orders, country FROM segments.customer_facts WHERE customer_id IN ('bystander-2', 'friend-1') ORDER BY 1;
SELECT count(*) AS friend_referrals, bool_and(referred_id LIKE 'erased:%') AS pseudonymized
  FROM segments.referral_events WHERE referrer_id = 'friend-1';
-- the pseudonym keeps the anonymous purchase history, without a profile or consent
SELECT f.orders, f.net_revenue, f.country, f.time_zone, f.consent_email, f.cart_link
  FROM segments.customer_facts f WHERE f.customer_id LIKE 'erased:%';
-- one pseudonym everywhere (not linkable to the id: it is random)
SELECT count(DISTINCT customer_id) AS pseudonyms FROM (
	SELECT customer_id FROM segments.campaign_orders UNION ALL SELECT customer_id FROM segments.outbox
	UNION ALL SELECT customer_id FROM segments.enrollment UNION ALL SELECT customer_id FROM segments.segment_history
	UNION ALL SELECT customer_id FROM segments.tracked_orders UNION ALL SELECT customer_id FROM segments.engagement_events) x
 WHERE customer_id LIKE 'erased:%';
-- reports add up as before, and still after the next tick
SELECT (SELECT count(*) FROM (SELECT * FROM before_campaigns EXCEPT SELECT * FROM segments.report_campaigns) d) AS campaigns_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_lift EXCEPT SELECT * FROM segments.report_holdout_lift) d) AS lift_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_rfm EXCEPT SELECT * FROM segments.report_rfm_grid) d) AS rfm_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_steps EXCEPT SELECT * FROM segments.report_campaign_steps_daily) d) AS steps_changed;
SELECT status FROM segments.tick('2026-06-03 10:00+00');
SELECT (SELECT count(*) FROM (SELECT * FROM before_campaigns EXCEPT SELECT * FROM segments.report_campaigns) d) AS campaigns_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_lift EXCEPT SELECT * FROM segments.report_holdout_lift) d) AS lift_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_rfm EXCEPT SELECT * FROM segments.report_rfm_grid) d) AS rfm_changed,
	   (SELECT count(*) FROM (SELECT * FROM before_steps EXCEPT SELECT * FROM segments.report_campaign_steps_daily) d) AS steps_changed;
SELECT * FROM segments.verify_facts('2026-06-03 10:00+00');
SELECT * FROM pg_temp.occurrences('erase-me-7781');

--------------------------------------------------------------------------------
-- Imported again: suppressed
--------------------------------------------------------------------------------
SELECT segments.is_erased('erase-me-7781') AS erased, segments.is_erased('bystander-2') AS bystander_erased;
SELECT segments.track_customer('erase-me-7781', country => 'DE'),
	   segments.track_consent('erase-me-7781', 'email', true, '2026-06-04 08:00+00', 'import'),
	   segments.track_order('erase-me-7781', 'order-e3', '2026-06-04 09:00+00', 70);
SELECT status, enrolled FROM segments.tick('2026-06-04 10:00+00');
SELECT channel, granted, source FROM segments.consent_events WHERE customer_id = 'erase-me-7781' ORDER BY event_id;
SELECT consent_email FROM segments.customer_facts WHERE customer_id = 'erase-me-7781';
-- enrolled by its order, but nothing is ever queued for it
SELECT status FROM segments.tick('2026-06-04 10:05+00');
SELECT count(*) AS messages FROM segments.outbox WHERE customer_id = 'erase-me-7781' AND state IN ('ready', 'leased', 'sent');
SELECT decision, reason FROM segments.decision_log WHERE customer_id = 'erase-me-7781';
-- a later tick does not withdraw twice
SELECT status FROM segments.tick('2026-06-04 11:00+00');
SELECT count(*) AS withdrawals FROM segments.consent_events WHERE customer_id = 'erase-me-7781' AND NOT granted;

-- errors; an unknown id is fine (nothing to erase, still suppressed later)
SELECT * FROM segments.erase_customer(NULL);
SELECT * FROM segments.erase_customer('erased:0000');
SELECT sum(rows_affected) AS rows_changed FROM segments.erase_customer('never-seen-5');
SELECT segments.is_erased('never-seen-5');
-- the key is created once, hashes are stable
SELECT count(*) AS keys FROM segments.erasure_key;
SELECT count(*) AS erased FROM segments.erased_customers;

-- clean up for the tests that follow
TRUNCATE segments.outbox, segments.decision_log, segments.contact_log, segments.enrollment,
	segments.campaign_orders, segments.attribution_queue, segments.tick_runs, segments.tick_state,
	segments.campaign_step, segments.campaign, segments.erased_customers, segments.erasure_key CASCADE;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.consent_events;
DELETE FROM segments.engagement_events;
DELETE FROM segments.wallet_events;
DELETE FROM segments.referral_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments('2026-06-05', full_evaluation => true);
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;

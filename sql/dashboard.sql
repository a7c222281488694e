-- The dashboard: one self-contained HTML page with four SVG charts drawn
-- from the report views.  The page is never printed whole (it carries a
-- timestamp and pixel positions); it is parsed as XML and its parts counted.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TIME ZONE 'UTC';

-- What a page holds: per chart, its data marks (<rect class="mark ...">) and
-- whether it says "no data yet".
CREATE FUNCTION pg_temp.charts(html text)
RETURNS TABLE (chart text, title text, marks int, no_data_yet bool)
LANGUAGE sql AS $$
	SELECT i::text,
		   (xpath(format('//svg[@id="%s"]/title/text()', i), d))[1]::text,
		   (xpath(format('count(//svg[@id="%s"]//rect[contains(concat(" ", @class, " "), " mark ")])', i), d))[1]::text::int,
		   (xpath(format('count(//svg[@id="%s"]/text[@class="empty"][. = "no data yet"])', i), d))[1]::text::int = 1
	  FROM (SELECT xmlparse(DOCUMENT html) AS d) x
	 CROSS JOIN LATERAL unnest(xpath('//svg/@id', x.d)) WITH ORDINALITY AS u (i, n)
	 ORDER BY u.n
$$;
-- Whatever the page holds: no script, nothing fetched, one document.
CREATE FUNCTION pg_temp.page(html text)
RETURNS TABLE (well_formed bool, doctype bool, scripts int, fetches int, svgs int, tables int, campaign_rows int)
LANGUAGE sql AS $$
	SELECT xml_is_well_formed_document(html), html LIKE '<!DOCTYPE html>%',
		   (SELECT count(*) FROM regexp_matches(html, '<script|javascript:|\son[a-z]+=', 'gi'))::int,
		   (SELECT count(*) FROM regexp_matches(html, '(src|href)=|url\(|@import|https?:', 'gi'))::int,
		   (SELECT count(*) FROM regexp_matches(html, '<svg\M', 'g'))::int,
		   (SELECT count(*) FROM regexp_matches(html, '<table\M', 'g'))::int,
		   (xpath('count(//table[@id="campaigns"]/tbody/tr/td[not(@class="empty")][1])', xmlparse(DOCUMENT html)))[1]::text::int
$$;

-- The function: STABLE, invoker's rights, pinned search_path, readers only.
SELECT p.oid::regprocedure AS function, p.provolatile, p.prosecdef, p.proconfig,
	   has_function_privilege('segments_reader', p.oid, 'EXECUTE') AS reader,
	   has_function_privilege('segments_admin', p.oid, 'EXECUTE') AS admin,
	   has_function_privilege('segments_app', p.oid, 'EXECUTE') AS app,
	   obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p
 WHERE p.pronamespace = 'segments'::regnamespace AND (p.proname LIKE '%dashboard%' OR p.proname = '_html_escape')
 ORDER BY 1::text;

-- Escaping
SELECT segments._html_escape('<script>&"''') AS escaped, segments._html_escape(NULL) IS NULL AS null_stays_null,
	   segments._html_escape('plain text, 5 % off') AS plain;
SELECT segments._dashboard_label('<b>' || repeat('x', 30), 10) AS cut, segments._dashboard_label(NULL, 10) AS null_label;

--------------------------------------------------------------------------------
-- An empty database: every chart says so
--------------------------------------------------------------------------------
SELECT (SELECT count(*) FROM segments.customer_facts) AS customers, (SELECT count(*) FROM segments.campaign) AS campaigns;
SELECT * FROM pg_temp.charts(segments.dashboard_html());
SELECT * FROM pg_temp.page(segments.dashboard_html());
SELECT position('no data yet: no campaigns' IN segments.dashboard_html()) > 0 AS empty_table_says_so;

--------------------------------------------------------------------------------
-- A small shop: twelve buyers over five months, carts, a segment whose title
-- is markup, and two campaigns with holdouts
--------------------------------------------------------------------------------
-- buyer b<i> places i orders (i = 1..12, capped at 6), the last one i weeks
-- before 2025-06-01
SELECT count(*) AS orders FROM (
	SELECT segments.track_order('b' || i, 'o' || i || '-' || k, '2025-06-01'::timestamptz - i * interval '7 days' - k * interval '3 days',
								10 * i + k)
	  FROM generate_series(1, 12) i, generate_series(1, least(i, 6)) k) x;
-- carts: six started, two of them converted, the rest idle for months
SELECT count(*) AS carts FROM (
	SELECT segments.track_cart('b' || i, 'k' || i, 20 + i, at => '2025-05-20 10:00+00'::timestamptz + i * interval '1 hour')
	  FROM generate_series(1, 6) i) x;
SELECT segments.track_cart_closed('k1', 'converted', 'o1-1', '2025-05-20 12:00+00'),
	   segments.track_cart_closed('k2', 'converted', 'o2-1', '2025-05-20 13:00+00');
SELECT segments.define_segment('markup', 'orders >= 3', title => '<script>alert(1)</script>&"''', min_size => 5);
INSERT INTO segments.tick_state (watermark) VALUES ('2025-06-01');
SELECT status FROM segments.tick('2025-06-01 12:00+00');

-- campaign welcome: b1..b4 treated (messaged), b5..b7 held out; carts: the
-- abandoned carts k3..k6, k6 held out, k3 recovered by its message
SELECT segments.create_campaign('welcome', 'order_completed', title => 'Welcome <b>&amp; thanks</b>', holdout_percent => 40);
SELECT segments.add_campaign_step('welcome', '0', 'email', 'hello');
SELECT segments.create_campaign('carts', 'cart_abandoned', title => 'Cart reminder', holdout_percent => 20);
SELECT segments.add_campaign_step('carts', '1 hour', 'email', 'come_back', 'cart');
INSERT INTO segments.enrollment (campaign_id, customer_id, signal_key, signal_at, enrolled_at, holdout, cart_id, state)
SELECT 'welcome', 'b' || i, 'o:' || i, '2025-05-01 10:00+00'::timestamptz, '2025-05-01 10:00+00'::timestamptz, i > 4, NULL, 'completed'
  FROM generate_series(1, 7) i
UNION ALL
SELECT 'carts', 'b' || i, 'cart:k' || i, '2025-05-20 12:00+00', '2025-05-20 12:00+00', i = 6, 'k' || i, 'completed'
  FROM generate_series(3, 6) i;
INSERT INTO segments.outbox (idempotency_key, enrollment_id, campaign_id, step_no, customer_id, channel, message_key,
	state, not_before, not_after, attempt, created_at, sent_at)
SELECT e.campaign_id || ':1:' || e.customer_id, e.enrollment_id, e.campaign_id, 1, e.customer_id, 'email', 'm',
	   'sent', e.signal_at, e.signal_at + interval '1 day', 1, e.signal_at, e.signal_at + interval '1 hour'
  FROM segments.enrollment e WHERE NOT e.holdout;
-- orders in the conversion windows: two treated buyers and one held-out
-- buyer of welcome, and the recovered cart k3 (credited to its message)
INSERT INTO segments.campaign_orders (source, order_id, customer_id, placed_at, amount, state, message_id, campaign_id,
	step_no, channel, touch, touch_at, attributed_at)
SELECT 'test', 'w-' || o.customer_id, o.customer_id, '2025-05-01 12:00+00'::timestamptz, o.amount::numeric, 'completed',
	   m.message_id, m.campaign_id, m.step_no, m.channel, CASE WHEN m.message_id IS NOT NULL THEN 'click' END,
	   m.sent_at, now()
  FROM (VALUES ('b1', 40), ('b2', 60), ('b5', 30)) o (customer_id, amount)
  LEFT JOIN segments.outbox m ON m.customer_id = o.customer_id AND m.campaign_id = 'welcome'
UNION ALL
SELECT 'test', 'k-b3', 'b3', '2025-05-20 14:00+00', 23, 'completed', m.message_id, m.campaign_id, m.step_no, m.channel,
	   'click', m.sent_at, now()
  FROM segments.outbox m WHERE m.campaign_id = 'carts' AND m.customer_id = 'b3';
SELECT segments.set_setting('lift_min_group', '3');

-- what the charts are drawn from
SELECT sum(customers) AS rfm_buyers, count(*) FILTER (WHERE customers > 0) AS rfm_cells FROM segments.report_rfm_grid;
SELECT segment_id, members, too_small FROM segments.report_segments WHERE members > 0 ORDER BY members DESC, segment_id;
SELECT sum(carts_started) AS started, sum(carts_abandoned) AS abandoned, sum(carts_enrolled) AS enrolled,
	   sum(carts_messaged) AS messaged, sum(carts_recovered) AS recovered
  FROM segments.report_cart_recovery_daily;
SELECT campaign_id, treatment_enrollments, holdout_enrollments, treatment_revenue_per_enrollment AS treatment,
	   holdout_revenue_per_enrollment AS holdout, round(revenue_lift_low, 2) AS low, round(revenue_lift_high, 2) AS high,
	   too_small_to_tell
  FROM segments.report_holdout_lift ORDER BY 1;

-- the page: every chart drawn, as many marks as data
SELECT * FROM pg_temp.charts(segments.dashboard_html('Shop <"dashboard"> & co'));
SELECT * FROM pg_temp.page(segments.dashboard_html());
SELECT d.chart, d.n FROM (SELECT xmlparse(DOCUMENT segments.dashboard_html()) AS x) p,
	LATERAL (VALUES
		('rfm-grid cells', (xpath('count(//svg[@id="rfm-grid"]//rect[contains(@class, "cell")])', p.x))[1]::text),
		('rfm-grid cell numbers', (xpath('sum(//svg[@id="rfm-grid"]/text[contains(@class, "value")])', p.x))[1]::text),
		('segment-sizes too-small bars', (xpath('count(//svg[@id="segment-sizes"]//rect[contains(@class, "mark bar too-small")])', p.x))[1]::text),
		('cart-funnel carts per stage', array_to_string(xpath('//svg[@id="cart-funnel"]//rect/@data-carts', p.x)::text[], ' > ')),
		('campaign-lift treatment bars', (xpath('count(//svg[@id="campaign-lift"]//rect[@class="mark treatment"])', p.x))[1]::text),
		('campaign-lift holdout bars', (xpath('count(//svg[@id="campaign-lift"]//rect[@class="mark holdout"])', p.x))[1]::text),
		('campaign-lift intervals', (xpath('count(//svg[@id="campaign-lift"]/g/path[@class="interval"])', p.x))[1]::text),
		('campaign-lift verdicts', array_to_string(xpath('//svg[@id="campaign-lift"]//text[contains(@class, "verdict")]/text()', p.x)::text[], ' | '))
	) d (chart, n);

-- data is escaped wherever it lands: segment and campaign titles, the page title
SELECT position('<script>' IN h) AS raw_script, position('<b>&amp;' IN h) AS raw_markup,
	   (SELECT count(*) FROM regexp_matches(h, '&lt;script&gt;alert\(1\)&lt;/script&gt;&amp;&quot;&#39;', 'g')) AS escaped_segment_title,
	   (SELECT count(*) FROM regexp_matches(h, 'Welcome &lt;b&gt;&amp;amp; thanks&lt;/b&gt;', 'g')) AS escaped_campaign_title,
	   (SELECT count(*) FROM regexp_matches(h, 'Shop &lt;&quot;dashboard&quot;&gt; &amp; co', 'g')) AS escaped_page_title
  FROM (SELECT segments.dashboard_html('Shop <"dashboard"> & co') AS h) x;

-- a reader draws it with their own rights; a role without the grant cannot
CREATE ROLE regress_dashboard_reader IN ROLE segments_reader;
CREATE ROLE regress_dashboard_nobody;
SET ROLE regress_dashboard_reader;
SELECT (SELECT count(*) FROM pg_temp.charts(segments.dashboard_html()) WHERE marks > 0) AS charts_with_marks;
SET ROLE regress_dashboard_nobody;
SELECT segments.dashboard_html() IS NOT NULL;
RESET ROLE;
DROP ROLE regress_dashboard_reader;
DROP ROLE regress_dashboard_nobody;

-- clean up for the tests that follow
SELECT segments.reset_setting('lift_min_group');
SELECT segments.drop_segment('markup');
TRUNCATE segments.outbox, segments.decision_log, segments.contact_log, segments.enrollment, segments.campaign_orders,
	segments.attribution_queue, segments.tick_runs, segments.tick_state, segments.campaign_step, segments.campaign CASCADE;
DELETE FROM segments.tracked_orders;
DELETE FROM segments.tracked_carts;
DELETE FROM segments.tracked_customers;
DELETE FROM segments.consent_events;
SELECT segments.rebuild_facts() AS customers_left;
SELECT customers FROM segments.evaluate_segments('2025-06-02', full_evaluation => true);
SELECT count(*) AS members_left FROM segments.segment_membership;
UPDATE segments.score_breaks SET breaks = NULL, buyers = 0, computed_at = NULL;
SELECT * FROM pg_temp.charts(segments.dashboard_html()) WHERE NOT no_data_yet;

/* segments 0.2.0 -> 0.3.0: segment membership */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.3.0'" to load this file. \quit

/*
 * Data flow: shop tables -> customer facts -> SCORES -> SEGMENT MEMBERSHIP
 *
 *   score_breaks        percentile and RFM breakpoints over all buyers
 *   segment_facts       customer_facts plus what rules need as of a time
 *   segment catalog     built-in segments (tunable) and the owner's rules
 *   evaluate_segments() re-evaluates only queued customers, writes changes
 *   segment_membership  who is in which segment since when; segment_history
 */

--------------------------------------------------------------------------------
-- Scores over all buyers: percentile and RFM breakpoints, refreshed on a
-- slower clock than the tick (a full scan), and only customers near a moved
-- breakpoint are re-evaluated.
--------------------------------------------------------------------------------

INSERT INTO @extschema@.setting_default (name, value, value_type, description) VALUES
	('score_breaks_max_age', '1 hour', 'pg_catalog.interval',
	 'How old percentile and RFM breakpoints may get before evaluate_segments() recomputes them');

CREATE TABLE @extschema@.score_breaks (
	measure pg_catalog.text PRIMARY KEY,
	buckets pg_catalog.int4 NOT NULL,
	higher_is_better pg_catalog.bool NOT NULL,
	breaks pg_catalog.float8[],
	buyers pg_catalog.int8 NOT NULL DEFAULT 0,
	computed_at pg_catalog.timestamptz
);

COMMENT ON TABLE @extschema@.score_breaks IS
'Breakpoints of the percentile and RFM scores over all buyers (customers with a completed order)';

INSERT INTO @extschema@.score_breaks (measure, buckets, higher_is_better) VALUES
	('revenue_percentile', 100, true),
	('orders_percentile', 100, true),
	('margin_percentile', 100, true),
	('rfm_recency', 5, true),      -- over last_order_at: later is better, and stable as time passes
	('rfm_frequency', 5, true),
	('rfm_monetary', 5, true);

-- The value each measure is scored on, as an expression over customer_facts f.
CREATE FUNCTION @extschema@._score_measure_expr(measure pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE measure
	WHEN 'revenue_percentile' THEN 'f.net_revenue::pg_catalog.float8'
	WHEN 'orders_percentile' THEN 'f.orders::pg_catalog.float8'
	WHEN 'margin_percentile' THEN 'f.margin::pg_catalog.float8'
	WHEN 'rfm_recency' THEN 'EXTRACT(epoch FROM f.last_order_at)::pg_catalog.float8'
	WHEN 'rfm_frequency' THEN 'f.orders::pg_catalog.float8'
	WHEN 'rfm_monetary' THEN 'f.net_revenue::pg_catalog.float8'
	END;

CREATE INDEX customer_facts_net_revenue ON @extschema@.customer_facts (net_revenue) WHERE orders > 0;
CREATE INDEX customer_facts_orders ON @extschema@.customer_facts (orders) WHERE orders > 0;
CREATE INDEX customer_facts_last_order_at ON @extschema@.customer_facts (last_order_at) WHERE orders > 0;
CREATE INDEX customer_facts_margin ON @extschema@.customer_facts (margin) WHERE orders > 0;

--------------------------------------------------------------------------------
-- Category buying cycles: how long a buyer of a category usually takes to
-- come back. Ours are defaults; the owner's rows replace them per category.
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.category_cycle_default (
	category pg_catalog.text PRIMARY KEY,
	cycle_days pg_catalog.int4 NOT NULL CHECK (cycle_days > 0)
);

INSERT INTO @extschema@.category_cycle_default VALUES
	('coffee', 60), ('tea', 60), ('skincare', 90), ('beauty', 90), ('supplements', 45),
	('pet food', 45), ('accessories', 180), ('apparel', 120), ('furniture', 365);

CREATE TABLE @extschema@.category_cycle (
	category pg_catalog.text PRIMARY KEY,
	cycle_days pg_catalog.int4 NOT NULL CHECK (cycle_days > 0)
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.category_cycle', '');

CREATE VIEW @extschema@.category_cycles AS
	SELECT c.category, c.cycle_days, 'owner'::pg_catalog.text AS source FROM @extschema@.category_cycle c
	UNION ALL
	SELECT d.category, d.cycle_days, 'default' FROM @extschema@.category_cycle_default d
	 WHERE NOT EXISTS (SELECT FROM @extschema@.category_cycle c WHERE c.category = d.category);

COMMENT ON TABLE @extschema@.category_cycle IS 'The owner''s buying cycle per category (days); overrides category_cycle_default';
COMMENT ON VIEW @extschema@.category_cycles IS 'Buying cycle per category in force';

--------------------------------------------------------------------------------
-- segment_facts: customer_facts plus the derived columns rules use, computed
-- as of a time. The view uses now(); evaluation uses its own as-of time
-- through the same generator, so both always agree.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._segment_facts_sql(as_of pg_catalog.text,
	facts_from pg_catalog.text DEFAULT '@extschema@.customer_facts',
	breaks_from pg_catalog.text DEFAULT '@extschema@.score_breaks')
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.format($sql$
SELECT f.*,
	   @extschema@.recency_days(f.last_order_at, %1$s) AS days_since_last_order,
	   @extschema@.recency_days(f.first_order_at, %1$s) AS days_since_first_order,
	   @extschema@.recency_days(f.last_engaged_at, %1$s) AS days_since_last_engaged,
	   @extschema@.recency_days(f.last_message_at, %1$s) AS days_since_last_message,
	   @extschema@.recency_days(f.wallet_last_activity_at, %1$s) AS days_since_wallet_activity,
	   pg_catalog.floor(EXTRACT(epoch FROM (%1$s - f.cart_updated_at)) / 60)::pg_catalog.int4 AS cart_idle_minutes,
	   CASE WHEN f.orders > 0 THEN f.discounted_orders::pg_catalog.float8 / f.orders END AS discount_share,
	   (SELECT pg_catalog.max(c.cycle_days) FROM @extschema@.category_cycles c
		 WHERE c.category OPERATOR(pg_catalog.=) ANY (f.categories)) AS category_cycle_days,
	   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.net_revenue::pg_catalog.float8, b.revenue) END AS revenue_percentile,
	   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.orders::pg_catalog.float8, b.orders) END AS orders_percentile,
	   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.margin::pg_catalog.float8, b.margin) END AS margin_percentile,
	   r.rfm_recency, r.rfm_frequency, r.rfm_monetary,
	   @extschema@.rfm_cell(r.rfm_recency, r.rfm_frequency, r.rfm_monetary) AS rfm_cell,
	   @extschema@.rfm_group(r.rfm_recency, r.rfm_frequency, r.rfm_monetary) AS rfm_group
  FROM %2$s f
 CROSS JOIN (SELECT pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'revenue_percentile') AS revenue,
					pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'orders_percentile') AS orders,
					pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'margin_percentile') AS margin,
					pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'rfm_recency') AS r,
					pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'rfm_frequency') AS fq,
					pg_catalog.max(sb.breaks) FILTER (WHERE sb.measure = 'rfm_monetary') AS m
			   FROM %3$s sb) b
 CROSS JOIN LATERAL (
	SELECT CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(EXTRACT(epoch FROM f.last_order_at)::pg_catalog.float8, b.r) END AS rfm_recency,
		   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.orders::pg_catalog.float8, b.fq) END AS rfm_frequency,
		   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.net_revenue::pg_catalog.float8, b.m) END AS rfm_monetary) r
$sql$, as_of, facts_from, breaks_from);

DO $$
BEGIN
	EXECUTE 'CREATE VIEW @extschema@.segment_facts AS ' || @extschema@._segment_facts_sql('pg_catalog.now()');
END
$$;

COMMENT ON VIEW @extschema@.segment_facts IS
'customer_facts plus the derived columns segment rules use (days since, percentiles, RFM scores), as of now()';
COMMENT ON COLUMN @extschema@.segment_facts.days_since_last_order IS 'Whole days since the last completed order';
COMMENT ON COLUMN @extschema@.segment_facts.cart_idle_minutes IS 'Minutes since the open cart was last touched';
COMMENT ON COLUMN @extschema@.segment_facts.discount_share IS 'Share of completed orders that used a discount';
COMMENT ON COLUMN @extschema@.segment_facts.category_cycle_days IS 'Longest buying cycle among the categories bought (category_cycles)';
COMMENT ON COLUMN @extschema@.segment_facts.revenue_percentile IS 'Score 1..100 of net revenue among buyers; > 90 is the top 10 %';
COMMENT ON COLUMN @extschema@.segment_facts.rfm_group IS 'Named RFM group (rfm_groups); prospects for customers without orders';

--------------------------------------------------------------------------------
-- The segment catalog. Built-in segments are ours (templates with params the
-- owner tunes through segment_override); the owner's own segments live in
-- segment_custom. Rules are boolean expressions over segment_facts f, checked
-- by rule_compile() against the parsed tree.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.rule_compile(expression pg_catalog.text, target pg_catalog.regclass,
	time_columns pg_catalog.text[] DEFAULT '{}',
	OUT expression pg_catalog.text, OUT columns pg_catalog.text[], OUT time_windows pg_catalog.int4[],
	OUT threshold_columns pg_catalog.text[], OUT threshold_exprs pg_catalog.text[])
RETURNS record
AS 'MODULE_PATHNAME', 'segments_rule_compile'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.rule_compile(pg_catalog.text, pg_catalog.regclass, pg_catalog.text[]) IS
'Checks a boolean rule over the columns of target with the server''s parser (no subqueries, other tables, volatile or foreign functions) and returns its schema-qualified form, the columns it reads, the constants time columns are compared with, and every (time column, threshold expression) comparison';

CREATE TABLE @extschema@.segment_builtin (
	segment_id pg_catalog.text PRIMARY KEY,
	title pg_catalog.text NOT NULL,
	rule_template pg_catalog.text NOT NULL,
	params pg_catalog.jsonb NOT NULL DEFAULT '{}',
	priority pg_catalog.int4,
	min_size pg_catalog.int4 NOT NULL DEFAULT 50,
	description pg_catalog.text NOT NULL
);

COMMENT ON TABLE @extschema@.segment_builtin IS
'Built-in segments: rule templates over segment_facts with {param} placeholders; tune them with alter_segment()';

INSERT INTO @extschema@.segment_builtin (segment_id, title, rule_template, params, priority, description) VALUES
	('vip', 'VIP', 'f.orders > 0 AND f.revenue_percentile > 100 - {top_percent}', '{"top_percent": 10}', 100,
	 'Top share of buyers by net revenue'),
	('loyal', 'Loyal buyers', 'f.orders >= {min_orders}', '{"min_orders": 5}', 90,
	 'Many completed orders'),
	('high_value', 'High value', 'f.orders > 0 AND f.revenue_percentile > 100 - {top_percent}', '{"top_percent": 20}', 85,
	 'Top share of buyers by net revenue (wider than VIP)'),
	('at_risk', 'At risk', 'f.orders >= 2 AND f.median_gap_days > 0 AND f.days_since_last_order > f.median_gap_days * {risk_factor} AND f.days_since_last_order <= f.median_gap_days * {lapse_factor}',
	 '{"risk_factor": 1.5, "lapse_factor": 2.0}', 80,
	 'Repeat buyer whose time since the last order is growing past their own cycle'),
	('lapsed_own_cycle', 'Lapsed (own cycle)', 'f.gap_count >= {min_gaps} AND f.median_gap_days > 0 AND f.days_since_last_order > f.median_gap_days * {lapse_factor}',
	 '{"min_gaps": 2, "lapse_factor": 2.0}', 75,
	 'No order within twice the customer''s own median gap between orders'),
	('lapsed_category_cycle', 'Lapsed (category cycle)', 'f.orders > 0 AND f.days_since_last_order > COALESCE(f.category_cycle_days, {default_cycle_days})',
	 '{"default_cycle_days": 90}', 70,
	 'No order within the buying cycle of the categories bought'),
	('repeat', 'Repeat buyers', 'f.orders >= 2 AND f.orders < {loyal_min_orders}', '{"loyal_min_orders": 5}', 60,
	 '2 to 4 completed orders (VIP wins by precedence)'),
	('first_time', 'First-time buyers', 'f.orders = 1 AND f.days_since_first_order <= {within_days}', '{"within_days": 36500}', 50,
	 'Exactly one completed order (optionally within a number of days)'),
	('checkout_abandoner', 'Checkout abandoners', 'f.cart_stage = ''checkout'' AND f.cart_idle_minutes >= {idle_minutes}', '{"idle_minutes": 60}', 45,
	 'Started checkout, did not convert, idle past the threshold'),
	('cart_abandoner', 'Cart abandoners', 'f.cart_stage = ''cart'' AND f.cart_idle_minutes >= {idle_minutes}', '{"idle_minutes": 60}', 40,
	 'Open cart, not converted, idle past the threshold'),
	('browser', 'Browsers', 'f.orders = 0', '{}', 10,
	 'Known contact without an order yet'),
	('wholesale', 'Wholesale / B2B', 'f.account_type = ''wholesale''', '{}', NULL,
	 'Wholesale accounts'),
	('wallet_user', 'Wallet users', 'f.wallet_balance > 0 OR f.days_since_wallet_activity <= {recent_days}', '{"recent_days": 30}', NULL,
	 'Positive wallet balance or recent wallet use'),
	('referral_buyer', 'Referral buyers', 'f.referred_by IS NOT NULL OR f.referrals_made > 0', '{}', NULL,
	 'Came in through a referral, or refers others'),
	('discount_seeker', 'Discount seekers', 'f.orders >= {min_orders} AND f.discount_share > {share}', '{"min_orders": 2, "share": 0.5}', NULL,
	 'Most orders used a coupon'),
	('engagement_at_risk', 'Engagement at risk', 'f.messages_sent > 0 AND COALESCE(f.days_since_last_engaged > {quiet_days}, f.days_since_last_message > {quiet_days})',
	 '{"quiet_days": 90}', NULL,
	 'No open or click for a long time although messages were sent'),
	('suppressed', 'Suppressed', 'f.last_bounced_at IS NOT NULL OR f.last_complained_at IS NOT NULL OR f.consecutive_ignored >= {sunset_after}',
	 '{"sunset_after": 6}', NULL,
	 'Bounced, complained, or ignored many messages in a row: send nothing');

INSERT INTO @extschema@.segment_builtin (segment_id, title, rule_template, params, priority, description)
SELECT 'rfm_' || d.group_name, 'RFM: ' || pg_catalog.replace(d.group_name, '_', ' '),
	   pg_catalog.format('f.rfm_group = %L', d.group_name), '{}', NULL, d.description
  FROM @extschema@.rfm_group_default d;
INSERT INTO @extschema@.segment_builtin (segment_id, title, rule_template, params, priority, description) VALUES
	('rfm_prospects', 'RFM: prospects', 'f.rfm_group = ''prospects''', '{}', NULL, 'No orders yet');

CREATE TABLE @extschema@.segment_override (
	segment_id pg_catalog.text PRIMARY KEY REFERENCES @extschema@.segment_builtin,
	params pg_catalog.jsonb NOT NULL DEFAULT '{}',
	priority pg_catalog.int4,
	clear_priority pg_catalog.bool NOT NULL DEFAULT false,
	enabled pg_catalog.bool NOT NULL DEFAULT true,
	min_size pg_catalog.int4 CHECK (min_size >= 0),
	changed_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE @extschema@.segment_custom (
	segment_id pg_catalog.text PRIMARY KEY CHECK (segment_id OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
	title pg_catalog.text NOT NULL,
	rule pg_catalog.text NOT NULL,
	priority pg_catalog.int4,
	min_size pg_catalog.int4 NOT NULL DEFAULT 50 CHECK (min_size >= 0),
	enabled pg_catalog.bool NOT NULL DEFAULT true,
	description pg_catalog.text,
	created_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE @extschema@.segment_override IS 'The owner''s changes to built-in segments (kept by pg_dump)';
COMMENT ON TABLE @extschema@.segment_custom IS 'The owner''s own segments (kept by pg_dump); rule is stored in its checked, schema-qualified form';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.segment_override', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.segment_custom', '');

-- A template with its {params} replaced by numeric literals.
CREATE FUNCTION @extschema@._expand_rule(template pg_catalog.text, params pg_catalog.jsonb)
RETURNS pg_catalog.text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k pg_catalog.text;
	v pg_catalog.jsonb;
	result pg_catalog.text := template;
BEGIN
	FOR k, v IN SELECT * FROM pg_catalog.jsonb_each(params) LOOP
		IF pg_catalog.jsonb_typeof(v) <> 'number' THEN
			RAISE EXCEPTION 'segment parameter "%" must be a number, got %', k, v
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		result := pg_catalog.replace(result, '{' || k || '}', '(' || (v #>> '{}')::pg_catalog.numeric::pg_catalog.text || ')');
	END LOOP;
	IF result OPERATOR(pg_catalog.~) '\{[a-z_]+\}' THEN
		RAISE EXCEPTION 'segment rule has a parameter without a value: %', result
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN result;
END
$$;

CREATE VIEW @extschema@.segment_catalog AS
	SELECT b.segment_id, b.title, 'builtin'::pg_catalog.text AS kind,
		   @extschema@._expand_rule(b.rule_template, b.params || COALESCE(o.params, '{}')) AS rule,
		   b.params || COALESCE(o.params, '{}') AS params,
		   CASE WHEN o.clear_priority THEN NULL ELSE COALESCE(o.priority, b.priority) END AS priority,
		   COALESCE(o.min_size, b.min_size) AS min_size,
		   COALESCE(o.enabled, true) AS enabled, b.description
	  FROM @extschema@.segment_builtin b
	  LEFT JOIN @extschema@.segment_override o ON o.segment_id = b.segment_id
	UNION ALL
	SELECT c.segment_id, c.title, 'custom', c.rule, '{}', c.priority, c.min_size, c.enabled, c.description
	  FROM @extschema@.segment_custom c;

COMMENT ON VIEW @extschema@.segment_catalog IS
'Every segment in force: built-in ones with the owner''s parameters, and the owner''s own; higher priority wins the primary segment';

-- The compiled rules the evaluator runs; derived from the catalog, never dumped.
CREATE TABLE @extschema@.segment_compiled (
	segment_id pg_catalog.text PRIMARY KEY,
	expression pg_catalog.text NOT NULL,
	columns pg_catalog.text[] NOT NULL,
	threshold_columns pg_catalog.text[] NOT NULL,
	threshold_exprs pg_catalog.text[] NOT NULL,
	compiled_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
	error pg_catalog.text,
	failed_at pg_catalog.timestamptz
);

COMMENT ON TABLE @extschema@.segment_compiled IS 'The checked rules of enabled segments, as the evaluator runs them; a rule that failed at run time has its error here and is set aside (its members kept) until it is changed';

-- What the compiled rules were made from: compiling again is needed when the
-- catalog no longer matches (tuned, defined, or restored by pg_restore after
-- CREATE EXTENSION compiled the defaults).
CREATE TABLE @extschema@.segment_compiled_from (
	fingerprint pg_catalog.text NOT NULL
);

CREATE FUNCTION @extschema@._catalog_fingerprint()
RETURNS pg_catalog.text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.md5(
	(SELECT COALESCE(pg_catalog.string_agg(c.segment_id || '|' || c.rule || '|' || c.enabled::pg_catalog.text,
			E'\n' ORDER BY c.segment_id), '') FROM @extschema@.segment_catalog c)
	-- rules read category cycles and RFM groups: edits to those count too
	|| (SELECT COALESCE(pg_catalog.string_agg(y.category || '=' || y.cycle_days, ',' ORDER BY y.category), '')
		  FROM @extschema@.category_cycles y)
	|| (SELECT COALESCE(pg_catalog.string_agg(g::pg_catalog.text, ',' ORDER BY g.position, g.group_name), '')
		  FROM @extschema@.rfm_groups g));

-- The VALUES list (segment_id, member[, columns]) of every usable rule, for
-- the generated statements that evaluate them all in one pass.
CREATE FUNCTION @extschema@._rules_values(with_columns pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT COALESCE(pg_catalog.string_agg(
			CASE WHEN with_columns THEN pg_catalog.format('(%L, (%s), %L::pg_catalog.text[])', c.segment_id, c.expression, c.columns)
				 ELSE pg_catalog.format('(%L, (%s))', c.segment_id, c.expression) END, ', ' ORDER BY c.segment_id),
			CASE WHEN with_columns THEN '(NULL::pg_catalog.text, false, NULL::pg_catalog.text[])'
				 ELSE '(NULL::pg_catalog.text, false)' END)
		  FROM @extschema@.segment_compiled c WHERE c.error IS NULL);

-- The time columns of segment_facts, with the fact each counts from and its unit.
CREATE FUNCTION @extschema@._time_columns()
RETURNS TABLE (time_column pg_catalog.text, anchor pg_catalog.text, unit pg_catalog.interval)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	VALUES ('days_since_last_order', 'last_order_at', '1 day'::pg_catalog.interval),
		('days_since_first_order', 'first_order_at', '1 day'), ('days_since_last_engaged', 'last_engaged_at', '1 day'),
		('days_since_last_message', 'last_message_at', '1 day'), ('days_since_wallet_activity', 'wallet_last_activity_at', '1 day'),
		('cart_idle_minutes', 'cart_updated_at', '1 minute')
$$;

CREATE FUNCTION @extschema@._compile_segments()
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n pg_catalog.int4;
BEGIN
	DELETE FROM @extschema@.segment_compiled;
	INSERT INTO @extschema@.segment_compiled (segment_id, expression, columns, threshold_columns, threshold_exprs)
	SELECT c.segment_id, d.expression, d.columns, d.threshold_columns, d.threshold_exprs
	  FROM @extschema@.segment_catalog c
	 CROSS JOIN LATERAL @extschema@.rule_compile(c.rule, '@extschema@.segment_facts',
			ARRAY(SELECT t.time_column FROM @extschema@._time_columns() t)) d
	 WHERE c.enabled;
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM @extschema@.segment_compiled_from;
	INSERT INTO @extschema@.segment_compiled_from VALUES (@extschema@._catalog_fingerprint());
	-- every customer must be looked at again under the new rules
	INSERT INTO @extschema@.evaluation_queue (customer_id) VALUES (NULL);
	RETURN n;
END
$$;

--------------------------------------------------------------------------------
-- Membership: who is in which segment since when, and every enter and exit.
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.segment_membership (
	segment_id pg_catalog.text NOT NULL,
	customer_id pg_catalog.text NOT NULL,
	since pg_catalog.timestamptz NOT NULL,
	PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX segment_membership_customer ON @extschema@.segment_membership (customer_id);

CREATE TABLE @extschema@.segment_history (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	segment_id pg_catalog.text NOT NULL,
	change pg_catalog.text NOT NULL CHECK (change IN ('enter', 'exit')),
	at pg_catalog.timestamptz NOT NULL,
	evaluation_id pg_catalog.int8 NOT NULL
);
CREATE INDEX segment_history_segment_at ON @extschema@.segment_history (segment_id, at);
CREATE INDEX segment_history_customer ON @extschema@.segment_history (customer_id, at);

-- Customers to re-evaluate; NULL means everyone. Fed by refresh_facts(),
-- moved breakpoints and catalog changes; drained by evaluate_segments().
CREATE TABLE @extschema@.evaluation_queue (
	customer_id pg_catalog.text,
	queued_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE @extschema@.evaluations (
	evaluation_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	as_of pg_catalog.timestamptz NOT NULL,
	started_at pg_catalog.timestamptz NOT NULL,
	finished_at pg_catalog.timestamptz,
	full_evaluation pg_catalog.bool NOT NULL,
	customers pg_catalog.int8 NOT NULL DEFAULT 0,
	entered pg_catalog.int8 NOT NULL DEFAULT 0,
	exited pg_catalog.int8 NOT NULL DEFAULT 0
);

-- When each customer's membership can next change with time alone: the
-- earliest instant a time column (days since the last order, cart idle
-- minutes, ...) crosses a threshold some rule compares it with. Written only
-- when it moves, so a tick where nothing happens writes nothing.
CREATE TABLE @extschema@.segment_watch (
	customer_id pg_catalog.text PRIMARY KEY,
	next_check_at pg_catalog.timestamptz NOT NULL
);
CREATE INDEX segment_watch_next_check_at ON @extschema@.segment_watch (next_check_at);

COMMENT ON TABLE @extschema@.segment_watch IS
'The earliest time each customer''s membership can change by time passing alone (a time column crossing a rule''s threshold)';

COMMENT ON TABLE @extschema@.segment_membership IS 'Current membership: one row per customer and segment, with the evaluation time they entered';
COMMENT ON TABLE @extschema@.segment_history IS 'Every enter and exit, with the as-of time of the evaluation that saw it';
COMMENT ON TABLE @extschema@.evaluation_queue IS 'Customers waiting for re-evaluation (a NULL row asks for everyone)';
COMMENT ON TABLE @extschema@.evaluations IS 'One row per evaluation that had work to do: as-of time, customers looked at, enters and exits';

CREATE OR REPLACE FUNCTION @extschema@._facts_refreshed(keys pg_catalog.text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.evaluation_queue (customer_id)
	SELECT k FROM pg_catalog.unnest(COALESCE(keys, ARRAY[NULL::pg_catalog.text])) k;
END
$$;

CREATE VIEW @extschema@.customer_primary_segment AS
	SELECT DISTINCT ON (m.customer_id) m.customer_id, m.segment_id, m.since, c.priority
	  FROM @extschema@.segment_membership m
	  JOIN @extschema@.segment_catalog c ON c.segment_id = m.segment_id AND c.priority IS NOT NULL
	 ORDER BY m.customer_id, c.priority DESC, m.segment_id;

COMMENT ON VIEW @extschema@.customer_primary_segment IS
'Each customer''s primary segment: the member segment with the highest priority (segments without a priority never are primary)';

CREATE VIEW @extschema@.segment_sizes AS
	SELECT c.segment_id, c.title, c.kind, c.priority, c.enabled,
		   COALESCE(n.members, 0) AS members, COALESCE(p.primary_members, 0) AS primary_members,
		   COALESCE(n.members, 0) < c.min_size AS too_small, c.min_size
	  FROM @extschema@.segment_catalog c
	  LEFT JOIN (SELECT segment_id, pg_catalog.count(*) AS members FROM @extschema@.segment_membership GROUP BY 1) n
		ON n.segment_id = c.segment_id
	  LEFT JOIN (SELECT segment_id, pg_catalog.count(*) AS primary_members FROM @extschema@.customer_primary_segment GROUP BY 1) p
		ON p.segment_id = c.segment_id;

COMMENT ON VIEW @extschema@.segment_sizes IS
'Members per segment, primary members, and whether the segment is too small to measure (fewer than min_size)';

--------------------------------------------------------------------------------
-- Owner API: define, tune and drop segments.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.define_segment(segment_id pg_catalog.text, rule pg_catalog.text,
	title pg_catalog.text DEFAULT NULL, priority pg_catalog.int4 DEFAULT NULL,
	min_size pg_catalog.int4 DEFAULT 50, description pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	compiled pg_catalog.text;
BEGIN
	IF segment_id IS NULL OR segment_id OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]{0,62}$' THEN
		RAISE EXCEPTION 'invalid segment id "%"', segment_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Segment ids are 1 to 63 lower-case letters, digits and underscores, starting with a letter.';
	END IF;
	IF EXISTS (SELECT FROM @extschema@.segment_builtin b WHERE b.segment_id = define_segment.segment_id)
	   OR EXISTS (SELECT FROM @extschema@.segment_custom c WHERE c.segment_id = define_segment.segment_id) THEN
		RAISE EXCEPTION 'segment "%" already exists', segment_id
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Use segments.alter_segment() to change it, or segments.drop_segment() first.';
	END IF;
	IF min_size IS NULL OR min_size < 0 THEN
		RAISE EXCEPTION 'min_size must be zero or more' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- the rule is checked on its parse tree and stored in its checked form
	SELECT c.expression INTO compiled
	  FROM @extschema@.rule_compile(@extschema@._require(rule, 'rule'), '@extschema@.segment_facts') c;
	INSERT INTO @extschema@.segment_custom (segment_id, title, rule, priority, min_size, description)
	VALUES (segment_id, COALESCE(title, segment_id), compiled, priority, min_size, description);
	PERFORM @extschema@._compile_segments();
	RETURN compiled;
END
$$;

COMMENT ON FUNCTION @extschema@.define_segment IS
'Defines an owner segment by a boolean rule over segment_facts columns; returns the rule as stored';

CREATE FUNCTION @extschema@.define_percentile_segment(segment_id pg_catalog.text, measure pg_catalog.text,
	top_percent pg_catalog.numeric, title pg_catalog.text DEFAULT NULL, priority pg_catalog.int4 DEFAULT NULL,
	min_size pg_catalog.int4 DEFAULT 50)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF measure IS NULL OR measure NOT IN ('net_revenue', 'orders', 'margin') THEN
		RAISE EXCEPTION 'unknown percentile measure "%"', measure
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Measures are net_revenue, orders and margin.';
	END IF;
	IF top_percent IS NULL OR top_percent <= 0 OR top_percent > 100 THEN
		RAISE EXCEPTION 'top_percent must be more than 0 and at most 100, got %', top_percent
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN @extschema@.define_segment(segment_id,
		pg_catalog.format('orders > 0 AND %s_percentile > %s', CASE measure WHEN 'net_revenue' THEN 'revenue' ELSE measure END,
						  100 - top_percent),
		COALESCE(title, pg_catalog.format('Top %s %% by %s', top_percent, measure)), priority, min_size,
		pg_catalog.format('Top %s %% of buyers by %s (tie-exact percentiles)', top_percent, measure));
END
$$;

COMMENT ON FUNCTION @extschema@.define_percentile_segment IS
'Defines an owner segment of the top N % of buyers by net_revenue, orders or margin';

CREATE FUNCTION @extschema@.alter_segment(segment_id pg_catalog.text, params pg_catalog.jsonb DEFAULT NULL,
	priority pg_catalog.int4 DEFAULT NULL, enabled pg_catalog.bool DEFAULT NULL, min_size pg_catalog.int4 DEFAULT NULL,
	rule pg_catalog.text DEFAULT NULL, no_priority pg_catalog.bool DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b record;
	unknown pg_catalog.text;
BEGIN
	SELECT * INTO b FROM @extschema@.segment_builtin sb WHERE sb.segment_id = alter_segment.segment_id;
	IF FOUND THEN
		IF rule IS NOT NULL THEN
			RAISE EXCEPTION 'the rule of built-in segment "%" cannot be replaced', segment_id
				USING ERRCODE = 'feature_not_supported',
					  HINT = 'Tune its parameters, or disable it and define your own segment.';
		END IF;
		SELECT pg_catalog.string_agg(k, ', ') INTO unknown
		  FROM pg_catalog.jsonb_object_keys(COALESCE(params, '{}')) k WHERE NOT b.params ? k;
		IF unknown IS NOT NULL THEN
			RAISE EXCEPTION 'segment "%" has no parameter %', segment_id, unknown
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = pg_catalog.format('Its parameters are: %s.', (SELECT pg_catalog.string_agg(k, ', ') FROM pg_catalog.jsonb_object_keys(b.params) k));
		END IF;
		-- check the expanded rule before storing anything
		PERFORM @extschema@.rule_compile(@extschema@._expand_rule(b.rule_template,
			b.params || COALESCE((SELECT o.params FROM @extschema@.segment_override o WHERE o.segment_id = b.segment_id), '{}')
			|| COALESCE(params, '{}')), '@extschema@.segment_facts');
		INSERT INTO @extschema@.segment_override AS o (segment_id, params, priority, clear_priority, enabled, min_size)
		VALUES (segment_id, COALESCE(params, '{}'), priority, no_priority, COALESCE(enabled, true), min_size)
		ON CONFLICT ON CONSTRAINT segment_override_pkey DO UPDATE
			SET params = o.params || excluded.params,
				priority = COALESCE(alter_segment.priority, o.priority),
				clear_priority = CASE WHEN alter_segment.priority IS NOT NULL THEN false ELSE no_priority OR o.clear_priority END,
				enabled = COALESCE(alter_segment.enabled, o.enabled),
				min_size = COALESCE(alter_segment.min_size, o.min_size),
				changed_at = pg_catalog.now();
	ELSIF EXISTS (SELECT FROM @extschema@.segment_custom c WHERE c.segment_id = alter_segment.segment_id) THEN
		IF params IS NOT NULL THEN
			RAISE EXCEPTION 'owner segment "%" has no parameters', segment_id
				USING ERRCODE = 'invalid_parameter_value', HINT = 'Change its rule instead.';
		END IF;
		UPDATE @extschema@.segment_custom c
		   SET rule = COALESCE((SELECT r.expression FROM @extschema@.rule_compile(alter_segment.rule, '@extschema@.segment_facts') r), c.rule),
			   priority = CASE WHEN no_priority THEN NULL ELSE COALESCE(alter_segment.priority, c.priority) END,
			   enabled = COALESCE(alter_segment.enabled, c.enabled),
			   min_size = COALESCE(alter_segment.min_size, c.min_size)
		 WHERE c.segment_id = alter_segment.segment_id;
	ELSE
		RAISE EXCEPTION 'segment "%" does not exist', segment_id
			USING ERRCODE = 'undefined_object', HINT = 'SELECT segment_id FROM segments.segment_catalog lists them.';
	END IF;
	PERFORM @extschema@._compile_segments();
END
$$;

COMMENT ON FUNCTION @extschema@.alter_segment IS
'Tunes a segment: parameters of a built-in one, the rule of an owner one, priority, enabled, min_size';

CREATE FUNCTION @extschema@.drop_segment(segment_id pg_catalog.text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF EXISTS (SELECT FROM @extschema@.segment_builtin b WHERE b.segment_id = drop_segment.segment_id) THEN
		RAISE EXCEPTION 'built-in segment "%" cannot be dropped', segment_id
			USING ERRCODE = 'feature_not_supported',
				  HINT = pg_catalog.format('Disable it: SELECT segments.alter_segment(%L, enabled => false).', segment_id);
	END IF;
	DELETE FROM @extschema@.segment_custom c WHERE c.segment_id = drop_segment.segment_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'segment "%" does not exist', segment_id USING ERRCODE = 'undefined_object';
	END IF;
	PERFORM @extschema@._compile_segments();
END
$$;

COMMENT ON FUNCTION @extschema@.drop_segment(pg_catalog.text) IS
'Drops an owner segment; its members exit at the next evaluation (history is kept)';

--------------------------------------------------------------------------------
-- Evaluation.
--------------------------------------------------------------------------------

-- A condition on customer_facts f selecting values between two breakpoints,
-- written so the measure's index serves it.
CREATE FUNCTION @extschema@._score_measure_range(measure pg_catalog.text, lo pg_catalog.float8, hi pg_catalog.float8)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN measure IN ('revenue_percentile', 'rfm_monetary') THEN
		pg_catalog.format('f.net_revenue BETWEEN %s AND %s', lo::pg_catalog.numeric - 0.000001, hi::pg_catalog.numeric + 0.000001)
	WHEN measure = 'margin_percentile' THEN
		pg_catalog.format('f.margin BETWEEN %s AND %s', lo::pg_catalog.numeric - 0.000001, hi::pg_catalog.numeric + 0.000001)
	WHEN measure IN ('orders_percentile', 'rfm_frequency') THEN
		pg_catalog.format('f.orders BETWEEN %s AND %s', pg_catalog.floor(lo), pg_catalog.ceil(hi))
	WHEN measure = 'rfm_recency' THEN
		pg_catalog.format('f.last_order_at BETWEEN %L::pg_catalog.timestamptz AND %L::pg_catalog.timestamptz',
			pg_catalog.to_timestamp(lo) - '1 millisecond'::pg_catalog.interval,
			pg_catalog.to_timestamp(hi) + '1 millisecond'::pg_catalog.interval)
	END;

-- A JSON array of numbers as float8[]; NULL for JSON null (no values) or an empty array.
CREATE FUNCTION @extschema@._jsonb_float8_array(j pg_catalog.jsonb)
RETURNS pg_catalog.float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN pg_catalog.jsonb_typeof(j) = 'array' AND pg_catalog.jsonb_array_length(j) > 0 THEN
	ARRAY(SELECT e::pg_catalog.float8 FROM pg_catalog.jsonb_array_elements_text(j) e) END;

-- Every breakpoint of score_breaks' measures, in one scan over the buyers of
-- a facts relation (customer_facts, or an as-of copy of it).
CREATE FUNCTION @extschema@._compute_score_breaks(facts_from pg_catalog.text,
	OUT computed pg_catalog.jsonb, OUT buyers pg_catalog.int8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	aggs pg_catalog.text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.format('%L, @extschema@.ntile_breaks(%s, %s, %L)',
			sb.measure, @extschema@._score_measure_expr(sb.measure), sb.buckets, sb.higher_is_better), ', ' ORDER BY sb.measure)
	  INTO aggs FROM @extschema@.score_breaks sb;
	EXECUTE pg_catalog.format('SELECT pg_catalog.jsonb_build_object(%s), pg_catalog.count(*) FROM %s f WHERE f.orders > 0',
							  aggs, facts_from)
	INTO computed, buyers;
END
$$;

-- Recomputes every breakpoint. Where one moved, only the customers whose
-- value lies between its old and new place can change score: they are
-- queued for evaluation.
CREATE FUNCTION @extschema@.refresh_score_breaks(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
	computed pg_catalog.jsonb;
	new_breaks pg_catalog.float8[];
	buyer_count pg_catalog.int8;
	conds pg_catalog.text;
	queued pg_catalog.int8 := 0;
	n pg_catalog.int8;
BEGIN
	SELECT c.computed, c.buyers INTO computed, buyer_count
	  FROM @extschema@._compute_score_breaks('@extschema@.customer_facts') c;

	FOR m IN SELECT * FROM @extschema@.score_breaks ORDER BY measure LOOP
		new_breaks := @extschema@._jsonb_float8_array(computed->m.measure);
		IF new_breaks IS DISTINCT FROM m.breaks THEN
			IF m.breaks IS NULL OR new_breaks IS NULL THEN
				INSERT INTO @extschema@.evaluation_queue (customer_id) VALUES (NULL);
			ELSE
				SELECT pg_catalog.string_agg(@extschema@._score_measure_range(m.measure, LEAST(o, nw), GREATEST(o, nw)), ' OR ')
				  INTO conds
				  FROM ROWS FROM (pg_catalog.unnest(m.breaks), pg_catalog.unnest(new_breaks)) AS b(o, nw)
				 WHERE o IS DISTINCT FROM nw;
				EXECUTE pg_catalog.format('INSERT INTO @extschema@.evaluation_queue (customer_id)
					SELECT f.customer_id FROM @extschema@.customer_facts f WHERE f.orders > 0 AND (%s)', conds);
				GET DIAGNOSTICS n = ROW_COUNT;
				queued := queued + n;
			END IF;
		END IF;
	END LOOP;
	UPDATE @extschema@.score_breaks sb
	   SET breaks = @extschema@._jsonb_float8_array(computed->sb.measure),
		   buyers = buyer_count, computed_at = as_of;
	RETURN queued;
END
$$;

COMMENT ON FUNCTION @extschema@.refresh_score_breaks(pg_catalog.timestamptz) IS
'Recomputes percentile and RFM breakpoints over all buyers; queues the customers near a breakpoint that moved; returns how many';

-- The statement that evaluates every enabled segment for the customers in
-- $1 (all when NULL) as of $2, and writes only the differences.
CREATE FUNCTION @extschema@._evaluation_sql(keyed pg_catalog.bool)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
	watches pg_catalog.text;
BEGIN
	rules := @extschema@._rules_values();
	-- every threshold a time column is compared with gives candidate instants:
	-- the time column is a whole number, so it crosses x at floor(x)+1 (for >,
	-- <=) or ceil(x) (for >=, <); = also changes one unit later
	SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format(
			'(SELECT pg_catalog.min(t) FROM (SELECT f.%1$I + c::pg_catalog.float8 * %2$L::pg_catalog.interval AS t
			   FROM (SELECT (%3$s)::pg_catalog.numeric AS x) th,
					LATERAL (VALUES (pg_catalog.floor(th.x)), (pg_catalog.floor(th.x) + 1), (pg_catalog.ceil(th.x)), (pg_catalog.ceil(th.x) + 1)) v(c)
			  WHERE th.x BETWEEN 0 AND 1000000) s WHERE s.t > $2)',
			tc.anchor, tc.unit, tx.expr), ', ')
	  INTO watches
	  FROM @extschema@.segment_compiled c
	 CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(c.threshold_columns), pg_catalog.unnest(c.threshold_exprs)) AS tx(col, expr)
	  JOIN @extschema@._time_columns() tc ON tc.time_column = tx.col
	 WHERE tx.expr IS NOT NULL AND c.error IS NULL;
	RETURN pg_catalog.format($sql$
WITH f AS MATERIALIZED (SELECT * FROM (%1$s) sf%2$s),
watch AS (SELECT f.customer_id, LEAST(%5$s) AS next_check_at FROM f),
watch_set AS (
	INSERT INTO @extschema@.segment_watch AS w (customer_id, next_check_at)
	SELECT customer_id, next_check_at FROM watch WHERE next_check_at IS NOT NULL
	ON CONFLICT (customer_id) DO UPDATE SET next_check_at = excluded.next_check_at
	 WHERE w.next_check_at IS DISTINCT FROM excluded.next_check_at
	RETURNING 1),
watch_cleared AS (
	DELETE FROM @extschema@.segment_watch w
	 WHERE %6$s NOT EXISTS (SELECT FROM watch x WHERE x.customer_id = w.customer_id AND x.next_check_at IS NOT NULL)
	RETURNING 1),
fresh AS (
	SELECT f.customer_id, v.segment_id
	  FROM f CROSS JOIN LATERAL (VALUES %3$s) v(segment_id, member)
	 WHERE v.member),
cur AS (SELECT m.segment_id, m.customer_id FROM @extschema@.segment_membership m
		 WHERE m.segment_id NOT IN (SELECT x.segment_id FROM @extschema@.segment_compiled x WHERE x.error IS NOT NULL)%4$s),
entered AS (
	INSERT INTO @extschema@.segment_membership (segment_id, customer_id, since)
	SELECT n.segment_id, n.customer_id, $2 FROM fresh n
	 WHERE NOT EXISTS (SELECT FROM cur c WHERE c.segment_id = n.segment_id AND c.customer_id = n.customer_id)
	RETURNING segment_id, customer_id),
exited AS (
	DELETE FROM @extschema@.segment_membership m USING cur c
	 WHERE m.segment_id = c.segment_id AND m.customer_id = c.customer_id
	   AND NOT EXISTS (SELECT FROM fresh n WHERE n.segment_id = c.segment_id AND n.customer_id = c.customer_id)
	RETURNING m.segment_id, m.customer_id),
logged AS (
	INSERT INTO @extschema@.segment_history (customer_id, segment_id, change, at, evaluation_id)
	SELECT customer_id, segment_id, 'enter', $2, $3 FROM entered
	UNION ALL
	SELECT customer_id, segment_id, 'exit', $2, $3 FROM exited
	RETURNING change)
SELECT (SELECT pg_catalog.count(*) FROM f),
	   (SELECT pg_catalog.count(*) FROM logged WHERE change = 'enter'),
	   (SELECT pg_catalog.count(*) FROM logged WHERE change = 'exit'),
	   (SELECT pg_catalog.count(*) FROM watch_set) + (SELECT pg_catalog.count(*) FROM watch_cleared)
$sql$,
		@extschema@._segment_facts_sql('$2'),
		CASE WHEN keyed THEN ' WHERE sf.customer_id = ANY($1)' ELSE '' END,
		rules,
		CASE WHEN keyed THEN ' AND m.customer_id = ANY($1)' ELSE '' END,
		COALESCE(watches, 'NULL::pg_catalog.timestamptz'),
		CASE WHEN keyed THEN 'w.customer_id = ANY($1) AND' ELSE '' END);
END
$$;

-- Runs each usable rule alone over the customers being evaluated and sets
-- aside those that fail, with their error. Returns how many failed.
CREATE FUNCTION @extschema@._set_aside_failing_rules(keyed pg_catalog.bool, keys pg_catalog.text[],
	as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	c record;
	failed pg_catalog.int4 := 0;
	message pg_catalog.text;
BEGIN
	FOR c IN SELECT * FROM @extschema@.segment_compiled x WHERE x.error IS NULL ORDER BY x.segment_id LOOP
		BEGIN
			EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM (%s) f WHERE %s (%s)',
				@extschema@._segment_facts_sql('$2'),
				CASE WHEN keyed THEN 'f.customer_id = ANY($1) AND' ELSE '' END, c.expression)
			USING keys, as_of;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
			UPDATE @extschema@.segment_compiled x SET error = message, failed_at = pg_catalog.now()
			 WHERE x.segment_id = c.segment_id;
			RAISE WARNING 'segments: the rule of segment "%" failed and is set aside: %', c.segment_id, message
				USING HINT = 'Its members stay as they were. Fix the rule with segments.alter_segment().';
			failed := failed + 1;
		END;
	END LOOP;
	RETURN failed;
END
$$;

CREATE FUNCTION @extschema@.evaluate_segments(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now(),
	full_evaluation pg_catalog.bool DEFAULT false,
	OUT customers pg_catalog.int8, OUT entered pg_catalog.int8, OUT exited pg_catalog.int8,
	OUT evaluation_id pg_catalog.int8, OUT skipped pg_catalog.bool)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	everyone pg_catalog.bool;
	keys pg_catalog.text[];
	watch_changes pg_catalog.int8;
	failure pg_catalog.text;
	started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	full_evaluation := COALESCE(full_evaluation, false);
	customers := 0; entered := 0; exited := 0;
	-- one evaluation at a time: membership diffs must not interleave; one
	-- already running does this work, so return at once instead of waiting
	skipped := NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('segments.membership'));
	IF skipped THEN
		RAISE NOTICE 'segments: another evaluation is running; skipped';
		RETURN;
	END IF;

	-- the catalog changed behind our back (direct edits, a restore): recompile
	IF NOT EXISTS (SELECT FROM @extschema@.segment_compiled_from f
					WHERE f.fingerprint = @extschema@._catalog_fingerprint()) THEN
		PERFORM @extschema@._compile_segments();
	END IF;

	-- customers whose membership time alone may have changed
	INSERT INTO @extschema@.evaluation_queue (customer_id)
	SELECT w.customer_id FROM @extschema@.segment_watch w WHERE w.next_check_at <= as_of;

	-- nothing queued and no full evaluation asked for: nothing to do, nothing written
	IF NOT full_evaluation AND NOT EXISTS (SELECT FROM @extschema@.evaluation_queue) THEN
		RETURN;
	END IF;

	-- facts changed, so breakpoints may have: recompute them when they are old
	IF full_evaluation OR NOT EXISTS (
		SELECT FROM @extschema@.score_breaks sb
		 WHERE sb.computed_at > as_of - @extschema@.setting_value('score_breaks_max_age')::pg_catalog.interval) THEN
		PERFORM @extschema@.refresh_score_breaks(as_of);
	END IF;

	WITH drained AS (DELETE FROM @extschema@.evaluation_queue RETURNING customer_id)
	SELECT COALESCE(pg_catalog.bool_or(d.customer_id IS NULL), false),
		   pg_catalog.array_agg(DISTINCT d.customer_id) FILTER (WHERE d.customer_id IS NOT NULL)
	  INTO everyone, keys FROM drained d;
	everyone := everyone OR full_evaluation;
	IF NOT everyone AND keys IS NULL THEN
		RETURN;
	END IF;

	INSERT INTO @extschema@.evaluations (as_of, started_at, full_evaluation)
	VALUES (as_of, started, everyone) RETURNING evaluations.evaluation_id INTO evaluation_id;
	BEGIN
		EXECUTE @extschema@._evaluation_sql(NOT everyone)
		   INTO customers, entered, exited, watch_changes
		  USING keys, as_of, evaluation_id;
	EXCEPTION WHEN OTHERS THEN
		-- One rule failing at run time (a division by zero on some customer's
		-- facts) must not stop every other segment: find it, set it aside
		-- with its error (its members stay as they were), evaluate the rest.
		GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
		IF @extschema@._set_aside_failing_rules(NOT everyone, keys, as_of) = 0 THEN
			RAISE;
		END IF;
		EXECUTE @extschema@._evaluation_sql(NOT everyone)
		   INTO customers, entered, exited, watch_changes
		  USING keys, as_of, evaluation_id;
	END;
	UPDATE @extschema@.evaluations e
	   SET finished_at = pg_catalog.clock_timestamp(), customers = evaluate_segments.customers,
		   entered = evaluate_segments.entered, exited = evaluate_segments.exited
	 WHERE e.evaluation_id = evaluate_segments.evaluation_id;
END
$$;

COMMENT ON FUNCTION @extschema@.evaluate_segments(pg_catalog.timestamptz, pg_catalog.bool) IS
'Re-evaluates queued customers (all with full_evaluation) as of a time; writes only enters and exits';

CREATE FUNCTION @extschema@.verify_segments(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (customer_id pg_catalog.text, segment_id pg_catalog.text, problem pg_catalog.text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	rules := @extschema@._rules_values();
	RETURN QUERY EXECUTE pg_catalog.format($sql$
		WITH f AS MATERIALIZED (%s),
		fresh AS (
			SELECT f.customer_id, v.segment_id
			  FROM f CROSS JOIN LATERAL (VALUES %s) v(segment_id, member) WHERE v.member)
		SELECT COALESCE(n.customer_id, m.customer_id), COALESCE(n.segment_id, m.segment_id),
			   CASE WHEN m.customer_id IS NULL THEN 'missing' ELSE 'extra' END
		  FROM fresh n FULL JOIN (SELECT * FROM @extschema@.segment_membership mm
			 WHERE mm.segment_id NOT IN (SELECT x.segment_id FROM @extschema@.segment_compiled x WHERE x.error IS NOT NULL)) m
			ON m.customer_id = n.customer_id AND m.segment_id = n.segment_id
		 WHERE n.customer_id IS NULL OR m.customer_id IS NULL
		 ORDER BY 1, 2$sql$,
		@extschema@._segment_facts_sql('$1'), rules)
	USING as_of;
END
$$;

COMMENT ON FUNCTION @extschema@.verify_segments(pg_catalog.timestamptz) IS
'Compares stored membership with a full evaluation as of a time; returns the differences (none when all is well)';

--------------------------------------------------------------------------------
-- As of a past time: facts rebuilt from what had happened by then, scores
-- over those facts, and the current rules. For backtests and reproducible
-- reports; stored membership is not touched.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.segments_as_of(as_of pg_catalog.timestamptz)
RETURNS TABLE (customer_id pg_catalog.text, segment_id pg_catalog.text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
	computed pg_catalog.jsonb;
	buyer_count pg_catalog.int8;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	-- called twice in one transaction: start afresh
	IF pg_catalog.to_regclass('pg_temp.segments_as_of_facts') IS NOT NULL THEN
		DROP TABLE pg_temp.segments_as_of_facts;
	END IF;
	IF pg_catalog.to_regclass('pg_temp.segments_as_of_breaks') IS NOT NULL THEN
		DROP TABLE pg_temp.segments_as_of_breaks;
	END IF;
	CREATE TEMP TABLE segments_as_of_facts (LIKE @extschema@.customer_facts INCLUDING DEFAULTS) ON COMMIT DROP;
	EXECUTE pg_catalog.format('INSERT INTO pg_temp.segments_as_of_facts (%s) %s',
		@extschema@._facts_columns(), @extschema@._facts_sql(false, true))
	USING NULL::pg_catalog.text[], as_of;
	CREATE TEMP TABLE segments_as_of_breaks ON COMMIT DROP AS
		SELECT sb.measure, sb.breaks FROM @extschema@.score_breaks sb WITH NO DATA;
	SELECT c.computed, c.buyers INTO computed, buyer_count
	  FROM @extschema@._compute_score_breaks('pg_temp.segments_as_of_facts') c;
	INSERT INTO pg_temp.segments_as_of_breaks
		SELECT sb.measure, @extschema@._jsonb_float8_array(computed->sb.measure) FROM @extschema@.score_breaks sb;
	rules := @extschema@._rules_values();
	RETURN QUERY EXECUTE pg_catalog.format(
		'WITH f AS MATERIALIZED (%s)
		 SELECT f.customer_id, v.segment_id FROM f CROSS JOIN LATERAL (VALUES %s) v(segment_id, member)
		  WHERE v.member ORDER BY 1, 2',
		@extschema@._segment_facts_sql('$1', 'pg_temp.segments_as_of_facts', 'pg_temp.segments_as_of_breaks'),
		rules)
	USING as_of;
END
$$;

COMMENT ON FUNCTION @extschema@.segments_as_of(pg_catalog.timestamptz) IS
'Segment membership as it would have been at a past time: facts from what had happened by then, today''s rules; stored membership is untouched';

--------------------------------------------------------------------------------
-- Explain: for one customer, every segment, in or out, and the facts that decided.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.explain_customer(customer_id pg_catalog.text, as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (segment_id pg_catalog.text, title pg_catalog.text, qualifies pg_catalog.bool,
			   member_since pg_catalog.timestamptz, priority pg_catalog.int4, is_primary pg_catalog.bool,
			   rule pg_catalog.text, facts pg_catalog.jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	IF NOT EXISTS (SELECT FROM @extschema@.customer_facts f WHERE f.customer_id = explain_customer.customer_id) THEN
		RAISE EXCEPTION 'customer "%" has no facts', customer_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'Customers appear once an attached table or the tracking API mentions them and refresh_facts() ran.';
	END IF;
	rules := @extschema@._rules_values(true);
	RETURN QUERY EXECUTE pg_catalog.format($sql$
		WITH f AS MATERIALIZED (SELECT * FROM (%s) sf WHERE sf.customer_id = $2),
		v AS (SELECT v.segment_id, COALESCE(v.member, false) AS member,
					 (SELECT pg_catalog.jsonb_object_agg(k, pg_catalog.to_jsonb(f) -> k) FROM pg_catalog.unnest(v.cols) k) AS facts
				FROM f CROSS JOIN LATERAL (VALUES %s) v(segment_id, member, cols)),
		p AS (SELECT v.segment_id FROM v JOIN @extschema@.segment_catalog c ON c.segment_id = v.segment_id
			   WHERE v.member AND c.priority IS NOT NULL ORDER BY c.priority DESC, v.segment_id LIMIT 1)
		SELECT v.segment_id, c.title, v.member, m.since, c.priority,
			   v.segment_id = (SELECT p.segment_id FROM p), c.rule, v.facts
		  FROM v JOIN @extschema@.segment_catalog c ON c.segment_id = v.segment_id
		  LEFT JOIN @extschema@.segment_membership m ON m.segment_id = v.segment_id AND m.customer_id = $2
		 ORDER BY v.member DESC, c.priority DESC NULLS LAST, v.segment_id$sql$,
		@extschema@._segment_facts_sql('$1'), rules)
	USING as_of, customer_id;
END
$$;

COMMENT ON FUNCTION @extschema@.explain_customer(pg_catalog.text, pg_catalog.timestamptz) IS
'For one customer: every enabled segment, whether they qualify as of a time, since when they are a member, and the fact values the rule read';

SELECT @extschema@._compile_segments();

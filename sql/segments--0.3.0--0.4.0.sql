/* segments 0.3.0 -> 0.4.0: faster facts and ticks; campaigns and the outbox */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.4.0'" to load this file. \quit

/*
 * Data flow: shop tables -> customer facts -> scores -> segment membership
 *            -> CAMPAIGN STEPS AND STOP RULES -> OUTBOX -> sender
 *            -> engagement and orders back
 *
 * This release has three parts, kept in this order:
 *   1. customer facts: cheaper change capture and rebuild
 *   2. segment evaluation: cheaper ticks
 *   3. campaigns: catalog, enrollment, stop rules, outbox, tick, schedule
 */

--------------------------------------------------------------------------------
-- 1. Customer facts
--
-- (changes to the facts layer go here)
--------------------------------------------------------------------------------

-- Every per-customer order fact in one aggregate with one compact state
-- (src/order_facts.c): the eleven aggregates it replaces kept four
-- separately allocated states per customer, a cache miss each per order row,
-- and spilled. Same values, bit for bit: exact numeric sums with sum()'s
-- display scale, buying_cycle()'s median gap.
CREATE TYPE @extschema@._order_facts_result AS (
	first_order_at pg_catalog.timestamptz,
	last_order_at pg_catalog.timestamptz,
	orders pg_catalog.int4,
	refunded_orders pg_catalog.int4,
	cancelled_orders pg_catalog.int4,
	gross_revenue pg_catalog.numeric,
	refunded_amount pg_catalog.numeric,
	discounted_orders pg_catalog.int4,
	margin pg_catalog.numeric,
	median_gap_days pg_catalog.float8,
	gap_count pg_catalog.int4
);

COMMENT ON TYPE @extschema@._order_facts_result IS
'Internal: result of _order_facts()';

CREATE FUNCTION @extschema@._order_facts_accum(pg_catalog.internal, pg_catalog.text, pg_catalog.timestamptz,
	pg_catalog.numeric, pg_catalog.numeric, pg_catalog.bool, pg_catalog.numeric)
RETURNS pg_catalog.internal
AS 'MODULE_PATHNAME', 'segments_order_facts_accum'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@._order_facts_accum(pg_catalog.internal, pg_catalog.text, pg_catalog.timestamptz,
	pg_catalog.numeric, pg_catalog.numeric, pg_catalog.bool, pg_catalog.numeric) IS
'Internal: transition function of _order_facts()';

CREATE FUNCTION @extschema@._order_facts_final(pg_catalog.internal)
RETURNS @extschema@._order_facts_result
AS 'MODULE_PATHNAME', 'segments_order_facts_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@._order_facts_final(pg_catalog.internal) IS
'Internal: final function of _order_facts()';

-- no combine function: an internal state, and the builds that use it are
-- serial; SSPACE is a typical state (128-byte chunk, plus the hash entry's
-- share) so the planner sizes the hash table about right
CREATE AGGREGATE @extschema@._order_facts(order_state pg_catalog.text, placed_at pg_catalog.timestamptz,
	amount pg_catalog.numeric, refunded_amount pg_catalog.numeric, discounted pg_catalog.bool,
	cost pg_catalog.numeric) (
	SFUNC = @extschema@._order_facts_accum,
	STYPE = pg_catalog.internal,
	SSPACE = 144,
	FINALFUNC = @extschema@._order_facts_final,
	FINALFUNC_MODIFY = READ_WRITE,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE @extschema@._order_facts(pg_catalog.text, pg_catalog.timestamptz, pg_catalog.numeric,
	pg_catalog.numeric, pg_catalog.bool, pg_catalog.numeric) IS
'Internal: a customer''s order facts (counts by state, first and last completed order, exact sums, buying cycle) in one pass';

-- The facts query, 0.4.0: order lines read their paired orders table
-- directly, so order_rows has one reference and is inlined instead of
-- materialized (every order row went through a tuplestore for the always
-- present tracked_order_lines, even when empty); a full build joins the
-- per-source aggregates with one FULL JOIN chain instead of a union of keys,
-- a sort and twelve merge joins. A keyed refresh keeps the keys + LEFT JOIN
-- shape, which the index on each source's customer column drives. order_rows
-- no longer carries the source and order id, which only the lines used.
CREATE OR REPLACE FUNCTION @extschema@._facts_sql(keyed pg_catalog.bool, as_of_mode pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	os record;
	oc pg_catalog.jsonb;
	oo pg_catalog.jsonb;
	ofilter pg_catalog.text;
	c pg_catalog.jsonb;
	o pg_catalog.jsonb;
	part pg_catalog.text;
	order_parts pg_catalog.text[] := '{}';
	line_parts pg_catalog.text[] := '{}';
	cart_parts pg_catalog.text[] := '{}';
	profile_parts pg_catalog.text[] := '{}';
	keyfilter pg_catalog.text;
	watch pg_catalog.text := pg_catalog.quote_literal(@extschema@._watch_days());
	cart_minutes pg_catalog.text := pg_catalog.quote_literal(@extschema@._watch_cart_minutes());
	ours pg_catalog.text;
	q pg_catalog.text;
	native_rel pg_catalog.regclass;
	native_type pg_catalog.regtype;
	native_parts pg_catalog.text[] := '{}';
	tkey pg_catalog.text;
	canon pg_catalog.text;
	ord_facts pg_catalog.text := '@extschema@._order_facts(state, placed_at, amount, refunded_amount, discounted, cost) AS f';
BEGIN
	-- The shop's one orders table with an integer customer key: its order
	-- facts are grouped by the key itself and cast to text once per
	-- customer, not once per order (the cast is injective for integers).
	-- Grouping by text cost ~11 % of the order aggregate.
	SELECT x.relation, x.key_type INTO native_rel, native_type
	  FROM @extschema@.sources x
	 WHERE x.kind = 'orders' AND NOT x.builtin
	   AND x.key_type IN ('smallint'::pg_catalog.regtype, 'integer'::pg_catalog.regtype, 'bigint'::pg_catalog.regtype)
	   AND (SELECT pg_catalog.count(*) FROM @extschema@.sources y WHERE y.kind = 'orders' AND NOT y.builtin) = 1;
	FOR s IN SELECT * FROM @extschema@.sources ORDER BY builtin, relation::pg_catalog.oid LOOP
		c := s.columns;
		o := s.options;
		keyfilter := CASE WHEN keyed AND s.kind <> 'order_lines' THEN
			pg_catalog.format(' AND t.%I = ANY(%s)', c->>'customer', @extschema@._keys_as(s.key_type, '$1'))
			ELSE '' END
			|| CASE WHEN NOT as_of_mode THEN ''
				WHEN s.kind = 'orders' THEN ' AND ' || @extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o) || ' <= $2'
				WHEN s.kind = 'carts' THEN ' AND ' || @extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o) || ' <= $2'
				WHEN s.kind = 'customers' AND c ? 'created_at' THEN
					' AND COALESCE(' || @extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o) || ' <= $2, true)'
				ELSE '' END;
		IF s.kind = 'orders' THEN
			part := pg_catalog.format(
				' AS customer_id, %s AS placed_at, %s AS amount, %s AS state, '
				'COALESCE(%s, 0) AS refunded_amount, %s AS discounted, %s AS cost FROM %s t WHERE t.%I IS NOT NULL%s',
				@extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'amount', 'amount', o),
				CASE WHEN c ? 'status' THEN pg_catalog.format(
					'CASE WHEN %1$s = ANY(%2$L::pg_catalog.text[]) THEN ''completed'' WHEN %1$s = ANY(%3$L::pg_catalog.text[]) THEN ''refunded'' '
					'WHEN %1$s = ANY(%4$L::pg_catalog.text[]) THEN ''cancelled'' ELSE ''other'' END',
					@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o),
					@extschema@._text_array(o->'completed'), @extschema@._text_array(o->'refunded'), @extschema@._text_array(o->'cancelled'))
					ELSE '''completed''' END,
				@extschema@._column_expr(s.relation, 't', c->>'refunded_amount', 'amount', o),
				CASE WHEN c ? 'discount' THEN @extschema@._column_expr(s.relation, 't', c->>'discount', 'flag', o) ELSE 'false' END,
				@extschema@._column_expr(s.relation, 't', c->>'cost', 'amount', o),
				s.relation, c->>'customer', keyfilter);
			tkey := @extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o);
			IF native_rel IS NULL THEN
				order_parts := order_parts || ('SELECT ' || tkey || part);
			ELSIF s.relation = native_rel THEN
				native_parts := native_parts || (pg_catalog.format('SELECT t.%I', c->>'customer') || part);
			ELSE
				-- keys in the canonical text form of an integer join the
				-- native groups, every other key stays text: the two sets of
				-- groups cannot share a customer
				canon := pg_catalog.format('CASE WHEN %1$s OPERATOR(pg_catalog.~) %2$L THEN %1$s::pg_catalog.numeric '
					'BETWEEN %3$s AND %4$s ELSE false END', tkey, '^(0|-?[1-9][0-9]{0,18})$',
					CASE native_type WHEN 'smallint'::pg_catalog.regtype THEN '-32768'
						WHEN 'integer'::pg_catalog.regtype THEN '-2147483648' ELSE '-9223372036854775808' END,
					CASE native_type WHEN 'smallint'::pg_catalog.regtype THEN '32767'
						WHEN 'integer'::pg_catalog.regtype THEN '2147483647' ELSE '9223372036854775807' END);
				native_parts := native_parts || ('SELECT (' || tkey || ')::' || native_type::pg_catalog.text || part || ' AND ' || canon);
				order_parts := order_parts || ('SELECT ' || tkey || part || ' AND NOT ' || canon);
			END IF;
		ELSIF s.kind = 'order_lines' THEN
			-- each line joined to its completed order, read straight from the
			-- paired orders table (not from order_rows: a second reference
			-- would materialize every order row), through the lines' own key
			-- type, so an index on the lines' order column serves a keyed
			-- refresh
			SELECT * INTO os FROM @extschema@.sources x
			 WHERE x.relation = (s.options->>'orders')::pg_catalog.regclass AND x.kind = 'orders';
			IF FOUND THEN
				oc := os.columns;
				oo := os.options;
				ofilter := CASE WHEN keyed THEN
					pg_catalog.format(' AND r.%I = ANY(%s)', oc->>'customer', @extschema@._keys_as(os.key_type, '$1'))
					ELSE '' END
					|| CASE WHEN as_of_mode THEN
						' AND ' || @extschema@._column_expr(os.relation, 'r', oc->>'placed_at', 'time', oo) || ' <= $2'
					ELSE '' END
					|| CASE WHEN oc ? 'status' THEN pg_catalog.format(' AND %s = ANY(%L::pg_catalog.text[])',
						@extschema@._column_expr(os.relation, 'r', oc->>'status', 'text', oo), @extschema@._text_array(oo->'completed'))
					ELSE '' END;
				line_parts := line_parts || pg_catalog.format(
					'SELECT %s AS customer_id, %s AS category FROM %s r JOIN %s t ON t.%I = (%s)::%s%s '
					'WHERE r.%I IS NOT NULL%s',
					@extschema@._column_expr(os.relation, 'r', oc->>'customer', 'text', oo),
					CASE WHEN c ? 'category' THEN @extschema@._column_expr(s.relation, 't', c->>'category', 'text', o)
						 ELSE pg_catalog.format('p.%I::pg_catalog.text', o->>'product_category') END,
					os.relation, s.relation, c->>'order_id',
					@extschema@._column_expr(os.relation, 'r', oc->>'order_id', 'text', oo),
					(SELECT a.atttypid::pg_catalog.regtype FROM pg_catalog.pg_attribute a
					  WHERE a.attrelid = s.relation AND a.attname = c->>'order_id'),
					CASE WHEN c ? 'category' THEN '' ELSE pg_catalog.format(' LEFT JOIN %s p ON p.%I = t.%I',
						(o->>'products')::pg_catalog.regclass, o->>'product_key', c->>'product') END,
					oc->>'customer', ofilter);
			END IF;
		ELSIF s.kind = 'carts' THEN
			cart_parts := cart_parts || pg_catalog.format(
				'SELECT %s AS customer_id, %s AS cart_id, %s AS created_at, %s AS updated_at, %s AS value, %s AS stage, '
				'CASE WHEN %s IS NOT NULL THEN ''converted'' WHEN %s = ANY(%L::pg_catalog.text[]) THEN ''converted'' '
				'WHEN %s = ANY(%L::pg_catalog.text[]) OR COALESCE(%s, 0) <= 0 THEN ''emptied'' ELSE ''open'' END AS state, '
				'%s AS link FROM %s t WHERE t.%I IS NOT NULL%s',
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'cart_id', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'updated_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
				CASE WHEN c ? 'stage' THEN pg_catalog.format('CASE WHEN %s = ANY(%L::pg_catalog.text[]) THEN ''checkout'' ELSE ''cart'' END',
					@extschema@._column_expr(s.relation, 't', c->>'stage', 'text', o), COALESCE(@extschema@._text_array(o->'checkout_stages'), '{checkout}'))
					ELSE '''cart''' END,
				@extschema@._column_expr(s.relation, 't', c->>'converted_order', 'raw', o),
				@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'converted'),
				@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'emptied'),
				@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
				@extschema@._column_expr(s.relation, 't', c->>'link', 'text', o),
				s.relation, c->>'customer', keyfilter);
		ELSIF s.kind = 'customers' THEN
			profile_parts := profile_parts || pg_catalog.format(
				'SELECT %s AS priority, %s AS customer_id, %s AS country, %s AS region, %s AS language, %s AS currency, '
				'%s AS time_zone, %s AS account_type, %s AS tags, %s AS wallet_balance, %s AS referred_by, %s AS created_at '
				'FROM %s t WHERE t.%I IS NOT NULL%s',
				CASE WHEN s.builtin THEN 2 ELSE 1 END,
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'country', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'region', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'language', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'currency', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'time_zone', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'account_type', 'text', o),
				CASE WHEN c ? 'tags' THEN @extschema@._column_expr(s.relation, 't', c->>'tags', 'textarray', o) ELSE 'NULL::pg_catalog.text[]' END,
				@extschema@._column_expr(s.relation, 't', c->>'wallet_balance', 'amount', o),
				@extschema@._column_expr(s.relation, 't', c->>'referred_by', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o),
				s.relation, c->>'customer', keyfilter);
		END IF;
	END LOOP;

	-- filters of our own event tables: %1$s is the customer column
	ours := CASE WHEN keyed AND as_of_mode THEN ' WHERE %1$s = ANY($1) AND occurred_at <= $2'
				 WHEN keyed THEN ' WHERE %1$s = ANY($1)'
				 WHEN as_of_mode THEN ' WHERE occurred_at <= $2'
				 ELSE '' END;

	q := 'WITH order_rows AS (' || COALESCE(NULLIF(pg_catalog.array_to_string(order_parts, ' UNION ALL '), ''),
		'SELECT NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.timestamptz AS placed_at, NULL::pg_catalog.numeric AS amount, NULL::pg_catalog.text AS state, '
		'NULL::pg_catalog.numeric AS refunded_amount, false AS discounted, NULL::pg_catalog.numeric AS cost WHERE false') || '),
ord AS (
	SELECT customer_id, (f).first_order_at, (f).last_order_at, (f).orders, (f).refunded_orders,
		   (f).cancelled_orders, COALESCE((f).gross_revenue, 0) AS gross_revenue,
		   COALESCE((f).refunded_amount, 0) AS refunded_amount, (f).discounted_orders, (f).margin,
		   ROW((f).median_gap_days, (f).gap_count)::@extschema@.buying_cycle_stats AS cycle
	  FROM (' || CASE WHEN native_rel IS NOT NULL THEN
			'SELECT customer_id::pg_catalog.text AS customer_id, ' || ord_facts || '
			  FROM (' || pg_catalog.array_to_string(native_parts, ' UNION ALL ') || ') n GROUP BY customer_id
			 UNION ALL
			' ELSE '' END ||
			'SELECT customer_id, ' || ord_facts || ' FROM order_rows GROUP BY customer_id) of),
cats AS (' || CASE WHEN pg_catalog.cardinality(line_parts) = 0 THEN
		'SELECT NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.text[] AS categories WHERE false'
	ELSE
		'SELECT l.customer_id, pg_catalog.array_agg(DISTINCT l.category ORDER BY l.category) AS categories
	  FROM (' || pg_catalog.array_to_string(line_parts, ' UNION ALL ') || ') l
	 WHERE l.category IS NOT NULL GROUP BY l.customer_id' END || '),
cart_rows AS (' || COALESCE(NULLIF(pg_catalog.array_to_string(cart_parts, ' UNION ALL '), ''),
		'SELECT NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.text AS cart_id, NULL::pg_catalog.timestamptz AS created_at, '
		'NULL::pg_catalog.timestamptz AS updated_at, NULL::pg_catalog.numeric AS value, NULL::pg_catalog.text AS stage, '
		'NULL::pg_catalog.text AS state, NULL::pg_catalog.text AS link WHERE false') || '),
carts AS (
	SELECT cr.customer_id, pg_catalog.count(*)::pg_catalog.int4 AS carts_started,
		   pg_catalog.count(*) FILTER (WHERE cr.state = ''converted''
				OR (cr.state = ''open'' AND cr.updated_at <= o.last_order_at))::pg_catalog.int4 AS carts_converted
	  FROM cart_rows cr LEFT JOIN ord o ON o.customer_id = cr.customer_id
	 GROUP BY cr.customer_id),
open_cart AS (
	SELECT DISTINCT ON (customer_id) customer_id, cart_id, value, stage, created_at, updated_at, link
	  FROM cart_rows WHERE state = ''open''
	 ORDER BY customer_id, updated_at DESC, cart_id DESC),
profile AS (
	SELECT DISTINCT ON (customer_id) * FROM (' || COALESCE(NULLIF(pg_catalog.array_to_string(profile_parts, ' UNION ALL '), ''),
		'SELECT 1 AS priority, NULL::pg_catalog.text AS customer_id WHERE false') || ') p
	 ORDER BY customer_id, priority),
engagement AS (
	SELECT customer_id,
		   pg_catalog.count(*) FILTER (WHERE event = ''sent'')::pg_catalog.int4 AS messages_sent,
		   pg_catalog.count(*) FILTER (WHERE event = ''opened'')::pg_catalog.int4 AS messages_opened,
		   pg_catalog.count(*) FILTER (WHERE event = ''clicked'')::pg_catalog.int4 AS messages_clicked,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''sent'') AS last_message_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event IN (''opened'', ''clicked'')) AS last_engaged_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''bounced'') AS last_bounced_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''complained'') AS last_complained_at
	  FROM @extschema@.engagement_events' || pg_catalog.format(ours, 'customer_id') || ' GROUP BY customer_id),
ignored AS (
	SELECT e.customer_id, pg_catalog.count(*)::pg_catalog.int4 AS consecutive_ignored
	  FROM @extschema@.engagement_events ev JOIN engagement e ON e.customer_id = ev.customer_id
	 WHERE ev.event = ''sent'' AND ev.occurred_at > COALESCE(e.last_engaged_at, ''-infinity'')' ||
	   CASE WHEN as_of_mode THEN ' AND ev.occurred_at <= $2' ELSE '' END || '
	 GROUP BY e.customer_id),
consent AS (
	SELECT customer_id,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''email''), false) AS consent_email,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''sms''), false) AS consent_sms,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''telegram''), false) AS consent_telegram,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''push''), false) AS consent_push
	  FROM (SELECT DISTINCT ON (customer_id, channel) customer_id, channel::pg_catalog.text AS channel, granted
			  FROM @extschema@.consent_events' || pg_catalog.format(ours, 'customer_id') || '
			 ORDER BY customer_id, channel, occurred_at DESC, event_id DESC) latest
	 GROUP BY customer_id),
wallet AS (
	SELECT customer_id, pg_catalog.sum(amount) AS balance, pg_catalog.max(occurred_at) AS last_activity_at
	  FROM @extschema@.wallet_events' || pg_catalog.format(ours, 'customer_id') || ' GROUP BY customer_id),
referrals AS (
	SELECT referrer_id AS customer_id, pg_catalog.count(referred_id)::pg_catalog.int4 AS referrals_made,
		   pg_catalog.sum(credit) AS referral_credit
	  FROM @extschema@.referral_events' || pg_catalog.format(ours, 'referrer_id') || ' GROUP BY referrer_id),
referred AS (
	SELECT DISTINCT ON (referred_id) referred_id AS customer_id, referrer_id
	  FROM @extschema@.referral_events WHERE referred_id IS NOT NULL' ||
	  CASE WHEN as_of_mode THEN ' AND occurred_at <= $2' ELSE '' END ||
	  CASE WHEN keyed THEN ' AND referred_id = ANY($1)' ELSE '' END || '
	 ORDER BY referred_id, occurred_at, event_id)' || CASE WHEN keyed THEN ',
keys AS (SELECT DISTINCT k AS customer_id FROM pg_catalog.unnest($1) k)
' ELSE '' END || '
SELECT ' || CASE WHEN keyed THEN 'k.customer_id' ELSE 'COALESCE(o.customer_id, ca.customer_id, p.customer_id, e.customer_id, cs.customer_id, w.customer_id, r.customer_id, rd.customer_id)' END || ',
	   o.first_order_at, o.last_order_at, COALESCE(o.orders, 0), COALESCE(o.refunded_orders, 0),
	   COALESCE(o.cancelled_orders, 0), COALESCE(o.gross_revenue, 0), COALESCE(o.refunded_amount, 0),
	   COALESCE(o.gross_revenue - o.refunded_amount, 0),
	   CASE WHEN o.orders > 0 THEN pg_catalog.round((o.gross_revenue - o.refunded_amount) / o.orders, 2) END,
	   COALESCE(o.discounted_orders, 0), o.margin, (o.cycle).median_gap_days, COALESCE((o.cycle).gap_count, 0),
	   cats.categories,
	   COALESCE(ca.carts_started, 0), COALESCE(ca.carts_converted, 0),
	   oc.cart_id, oc.value, oc.stage, oc.created_at, oc.updated_at, oc.link,
	   COALESCE(e.messages_sent, 0), COALESCE(e.messages_opened, 0), COALESCE(e.messages_clicked, 0),
	   e.last_message_at, e.last_engaged_at, COALESCE(i.consecutive_ignored, 0), e.last_bounced_at, e.last_complained_at,
	   COALESCE(cs.consent_email, false), COALESCE(cs.consent_sms, false),
	   COALESCE(cs.consent_telegram, false), COALESCE(cs.consent_push, false),
	   p.country, p.region, p.language, p.currency, p.time_zone, p.account_type, p.tags, p.created_at,
	   COALESCE(p.wallet_balance, w.balance), w.last_activity_at,
	   COALESCE(p.referred_by, rd.referrer_id), COALESCE(r.referrals_made, 0), COALESCE(r.referral_credit, 0),
	   LEAST(@extschema@.next_time_after($2, o.last_order_at, ' || watch || '),
			 @extschema@.next_time_after($2, o.first_order_at, ' || watch || '),
			 @extschema@.next_time_after($2, e.last_engaged_at, ' || watch || '),
			 @extschema@.next_time_after($2, e.last_message_at, ' || watch || '),
			 @extschema@.next_time_after($2, w.last_activity_at, ' || watch || '),
			 CASE WHEN oc.cart_id IS NOT NULL THEN
				(SELECT pg_catalog.min(oc.updated_at + m * ''1 minute''::pg_catalog.interval)
				   FROM pg_catalog.unnest(' || cart_minutes || '::pg_catalog.int4[]) m
				  WHERE oc.updated_at + m * ''1 minute''::pg_catalog.interval > $2) END)
' || CASE WHEN keyed THEN '
  FROM keys k
  LEFT JOIN ord o ON o.customer_id = k.customer_id
  LEFT JOIN cats ON cats.customer_id = k.customer_id
  LEFT JOIN carts ca ON ca.customer_id = k.customer_id
  LEFT JOIN open_cart oc ON oc.customer_id = k.customer_id
	   AND (o.last_order_at IS NULL OR o.last_order_at < oc.updated_at)
  LEFT JOIN profile p ON p.customer_id = k.customer_id
  LEFT JOIN engagement e ON e.customer_id = k.customer_id
  LEFT JOIN ignored i ON i.customer_id = k.customer_id
  LEFT JOIN consent cs ON cs.customer_id = k.customer_id
  LEFT JOIN wallet w ON w.customer_id = k.customer_id
  LEFT JOIN referrals r ON r.customer_id = k.customer_id
  LEFT JOIN referred rd ON rd.customer_id = k.customer_id
 WHERE o.customer_id IS NOT NULL OR ca.customer_id IS NOT NULL OR p.customer_id IS NOT NULL
	OR e.customer_id IS NOT NULL OR cs.customer_id IS NOT NULL OR w.customer_id IS NOT NULL
	OR r.customer_id IS NOT NULL OR rd.customer_id IS NOT NULL'
	ELSE
	-- every customer some source mentions: one FULL JOIN chain (hash joins,
	-- no union of keys, no sort); cats and ignored are subsets of ord and
	-- engagement, open_cart of carts
	'
  FROM ord o
  FULL JOIN carts ca ON ca.customer_id = o.customer_id
  FULL JOIN profile p ON p.customer_id = COALESCE(o.customer_id, ca.customer_id)
  FULL JOIN engagement e ON e.customer_id = COALESCE(o.customer_id, ca.customer_id, p.customer_id)
  FULL JOIN consent cs ON cs.customer_id = COALESCE(o.customer_id, ca.customer_id, p.customer_id, e.customer_id)
  FULL JOIN wallet w ON w.customer_id = COALESCE(o.customer_id, ca.customer_id, p.customer_id, e.customer_id,
	   cs.customer_id)
  FULL JOIN referrals r ON r.customer_id = COALESCE(o.customer_id, ca.customer_id, p.customer_id, e.customer_id,
	   cs.customer_id, w.customer_id)
  FULL JOIN referred rd ON rd.customer_id = COALESCE(o.customer_id, ca.customer_id, p.customer_id, e.customer_id,
	   cs.customer_id, w.customer_id, r.customer_id)
  LEFT JOIN cats ON cats.customer_id = o.customer_id
  LEFT JOIN open_cart oc ON oc.customer_id = ca.customer_id
	   AND (o.last_order_at IS NULL OR o.last_order_at < oc.updated_at)
  LEFT JOIN ignored i ON i.customer_id = e.customer_id' END;
	RETURN q;
END
$$;




-- The write half of a full rebuild: the computed rows go into the freshly
-- truncated heap without index maintenance, then every index is built once
-- (sorted, uniqueness checked). Row-by-row maintenance of the six indexes
-- cost as much as computing half the facts.
CREATE FUNCTION @extschema@._load_facts(query pg_catalog.text, as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int8
AS 'MODULE_PATHNAME', 'segments_load_facts'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION @extschema@._load_facts(pg_catalog.text, pg_catalog.timestamptz) IS
'Internal: loads the rows of a facts query into customer_facts, truncated and locked by the caller, then rebuilds its indexes; NULL when the table has triggers or constraints that need a plain INSERT';

CREATE OR REPLACE FUNCTION @extschema@.rebuild_facts(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
	cols pg_catalog.text;
	n pg_catalog.int8;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	-- one refresh or rebuild at a time: concurrent ones would overwrite
	-- newer facts with older ones
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('segments.facts'));
	DELETE FROM @extschema@.customer_changes;
	RAISE NOTICE 'segments: computing facts for every customer from % source(s)',
		(SELECT pg_catalog.count(*) FROM @extschema@.sources);
	-- ACCESS EXCLUSIVE until commit: nobody sees the table while its
	-- indexes are rebuilt
	TRUNCATE @extschema@.customer_facts;
	-- every column in table order and exact type; refreshed_at is now()
	SELECT pg_catalog.string_agg(CASE WHEN a.attname = 'refreshed_at'
				THEN pg_catalog.format('pg_catalog.now()::%s', pg_catalog.format_type(a.atttypid, a.atttypmod))
				ELSE pg_catalog.format('x.%I::%s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) END,
			', ' ORDER BY a.attnum)
	  INTO cols
	  FROM pg_catalog.pg_attribute a
	 WHERE a.attrelid = '@extschema@.customer_facts'::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped;
	n := @extschema@._load_facts(pg_catalog.format('SELECT %s FROM (%s) x (%s)',
			cols, @extschema@._facts_sql(false), @extschema@._facts_columns()), as_of);
	IF n IS NULL THEN
		-- the table has triggers or constraints of its own: a plain INSERT
		EXECUTE pg_catalog.format('INSERT INTO @extschema@.customer_facts (%s) %s',
			@extschema@._facts_columns(), @extschema@._facts_sql(false))
		USING NULL::pg_catalog.text[], as_of;
		GET DIAGNOSTICS n = ROW_COUNT;
	END IF;
	PERFORM @extschema@._facts_refreshed(NULL);
	RAISE NOTICE 'segments: wrote facts for % customers', n;
	RAISE DEBUG 'segments: rebuild took % ms',
		pg_catalog.round((EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) * 1000)::pg_catalog.numeric);
	RETURN n;
END
$$;

-- A refresh recomputes a few thousand customers through the shop's indexes;
-- its plan's cost estimate can still pass jit_above_cost, and compiling it
-- cost more than the whole refresh (~250 ms at 1 M customers). JIT stays
-- available to rebuild_facts() and verify_facts() called directly, whose
-- scans it can pay for.
ALTER FUNCTION @extschema@.refresh_facts(pg_catalog.timestamptz) SET jit = off;
ALTER FUNCTION @extschema@._write_facts(pg_catalog.text[], pg_catalog.timestamptz) SET jit = off;


-- A shop without costs has no margins: index only the buyers that have one,
-- so an order of such a shop does not write a margin index entry.  The
-- breakpoint range queries compare margin with BETWEEN, which implies
-- margin IS NOT NULL, so they still use the index.
DROP INDEX @extschema@.customer_facts_margin;
CREATE INDEX customer_facts_margin ON @extschema@.customer_facts (margin)
	WHERE orders > 0 AND margin IS NOT NULL;

--------------------------------------------------------------------------------
-- 2. Segment evaluation
--
-- (changes to segment evaluation go here)
--------------------------------------------------------------------------------

-- segment_facts with the category cycles looked up in one JSON object
-- built once per statement, instead of a subquery over the category_cycles
-- view (an index scan of each of its two tables) per customer: 5 s less per
-- million customers with categories, for the evaluation and the view alike.
CREATE OR REPLACE FUNCTION @extschema@._segment_facts_sql(as_of pg_catalog.text,
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
	   (SELECT pg_catalog.max((cc.cycles OPERATOR(pg_catalog.->>) c)::pg_catalog.int4)
		  FROM pg_catalog.unnest(f.categories) c) AS category_cycle_days,
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
 CROSS JOIN (SELECT COALESCE(pg_catalog.jsonb_object_agg(y.category, y.cycle_days), '{}'::pg_catalog.jsonb) AS cycles
			   FROM @extschema@.category_cycles y) cc
 CROSS JOIN LATERAL (
	SELECT CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(EXTRACT(epoch FROM f.last_order_at)::pg_catalog.float8, b.r) END AS rfm_recency,
		   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.orders::pg_catalog.float8, b.fq) END AS rfm_frequency,
		   CASE WHEN f.orders > 0 THEN @extschema@.ntile_score(f.net_revenue::pg_catalog.float8, b.m) END AS rfm_monetary) r
$sql$, as_of, facts_from, breaks_from);

DO $$
BEGIN
	EXECUTE 'CREATE OR REPLACE VIEW @extschema@.segment_facts AS ' || @extschema@._segment_facts_sql('pg_catalog.now()');
END
$$;

-- A cheap catalog version. Every statement that writes a table the rules
-- are made from bumps it (statement triggers, fired in replica sessions too,
-- and by the COPY of a pg_restore); evaluate_segments() compares it with the
-- version the compiled rules were checked against and only then computes
-- the full fingerprint. The fingerprint is still computed whenever the
-- breakpoints are (hourly) and on a full evaluation, which catches what no
-- trigger saw (a data-only restore with --disable-triggers).
CREATE TABLE @extschema@.segment_catalog_version (
	version pg_catalog.int8 NOT NULL
);
INSERT INTO @extschema@.segment_catalog_version VALUES (1);
-- whoever may edit the catalog tables must be able to bump it (the trigger
-- runs as that role); a bump by anyone else only costs one fingerprint
GRANT SELECT, UPDATE ON @extschema@.segment_catalog_version TO PUBLIC;

COMMENT ON TABLE @extschema@.segment_catalog_version IS
'Bumped by every statement that writes a table segment rules are made from; tells evaluate_segments() when to check the catalog fingerprint';

CREATE FUNCTION @extschema@._catalog_changed()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.segment_catalog_version SET version = version + 1;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION @extschema@._catalog_changed() IS
'Statement trigger on the segment catalog tables: bumps segment_catalog_version';

DO $$
DECLARE
	t pg_catalog.text;
BEGIN
	FOREACH t IN ARRAY ARRAY['segment_builtin', 'segment_override', 'segment_custom', 'category_cycle',
							 'category_cycle_default', 'rfm_group_map', 'rfm_group_default'] LOOP
		EXECUTE pg_catalog.format('CREATE TRIGGER segments_catalog_changed
			AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.%I
			FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._catalog_changed()', t);
		EXECUTE pg_catalog.format('ALTER TABLE @extschema@.%I ENABLE ALWAYS TRIGGER segments_catalog_changed', t);
	END LOOP;
END
$$;

-- The version the compiled rules were checked against, and the evaluation
-- statements generated from them (NULL until first needed; cleared whenever
-- segment_compiled changes).
ALTER TABLE @extschema@.segment_compiled_from
	ADD COLUMN catalog_version pg_catalog.int8,
	ADD COLUMN keyed_sql pg_catalog.text,
	ADD COLUMN full_sql pg_catalog.text;

-- Where each rule reads a score column (percentiles, RFM), and what it
-- compares it with: refresh_score_breaks() queues only the customers near
-- the breakpoints some rule can notice. NULL: not known, every breakpoint.
ALTER TABLE @extschema@.segment_compiled
	ADD COLUMN score_columns pg_catalog.text[],
	ADD COLUMN score_exprs pg_catalog.text[];

CREATE FUNCTION @extschema@._rule_score_uses(expression pg_catalog.text, target pg_catalog.regclass,
	score_columns pg_catalog.text[], OUT columns pg_catalog.text[], OUT thresholds pg_catalog.text[])
RETURNS record
AS 'MODULE_PATHNAME', 'segments_rule_score_uses'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@._rule_score_uses(pg_catalog.text, pg_catalog.regclass, pg_catalog.text[]) IS
'For a checked rule: every use of the given score columns, with the column-free expression it is compared with, or NULL for any other use';

-- The score columns of segment_facts, and the breakpoints each is scored on.
CREATE FUNCTION @extschema@._score_columns()
RETURNS TABLE (score_column pg_catalog.text, measure pg_catalog.text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	VALUES ('revenue_percentile', 'revenue_percentile'), ('orders_percentile', 'orders_percentile'),
		('margin_percentile', 'margin_percentile'),
		('rfm_recency', 'rfm_recency'), ('rfm_frequency', 'rfm_frequency'), ('rfm_monetary', 'rfm_monetary'),
		('rfm_cell', 'rfm_recency'), ('rfm_cell', 'rfm_frequency'), ('rfm_cell', 'rfm_monetary'),
		('rfm_group', 'rfm_recency'), ('rfm_group', 'rfm_frequency'), ('rfm_group', 'rfm_monetary')
$$;

COMMENT ON FUNCTION @extschema@._score_columns() IS
'The score columns of segment_facts and the score_breaks measures each depends on';

CREATE FUNCTION @extschema@._next_crossing(anchor pg_catalog.timestamptz, threshold pg_catalog.numeric,
	unit pg_catalog.interval, after pg_catalog.timestamptz)
RETURNS pg_catalog.timestamptz
AS 'MODULE_PATHNAME', 'segments_next_crossing'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@._next_crossing(pg_catalog.timestamptz, pg_catalog.numeric, pg_catalog.interval, pg_catalog.timestamptz) IS
'The first instant after "after" at which a whole count of units since anchor crosses threshold (NULL beyond 0 .. 1 000 000 units)';

CREATE OR REPLACE FUNCTION @extschema@._compile_segments()
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n pg_catalog.int4;
	v pg_catalog.int8;
BEGIN
	-- the version first: an edit committed after this read bumps it again
	SELECT pg_catalog.max(x.version) INTO v FROM @extschema@.segment_catalog_version x;
	DELETE FROM @extschema@.segment_compiled;
	INSERT INTO @extschema@.segment_compiled (segment_id, expression, columns, threshold_columns, threshold_exprs,
											  score_columns, score_exprs)
	SELECT c.segment_id, d.expression, d.columns, d.threshold_columns, d.threshold_exprs, s.columns, s.thresholds
	  FROM @extschema@.segment_catalog c
	 CROSS JOIN LATERAL @extschema@.rule_compile(c.rule, '@extschema@.segment_facts',
			ARRAY(SELECT t.time_column FROM @extschema@._time_columns() t)) d
	 CROSS JOIN LATERAL @extschema@._rule_score_uses(d.expression, '@extschema@.segment_facts',
			ARRAY(SELECT DISTINCT sc.score_column FROM @extschema@._score_columns() sc)) s
	 WHERE c.enabled;
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM @extschema@.segment_compiled_from;
	INSERT INTO @extschema@.segment_compiled_from (fingerprint, catalog_version)
	VALUES (@extschema@._catalog_fingerprint(), v);
	-- every customer must be looked at again under the new rules
	INSERT INTO @extschema@.evaluation_queue (customer_id) VALUES (NULL);
	RETURN n;
END
$$;

COMMENT ON FUNCTION @extschema@._compile_segments() IS
'Checks every enabled rule of the catalog into segment_compiled and queues everyone for evaluation';

-- The score uses of the rules compiled before 0.4.0 (nothing to re-evaluate:
-- the rules themselves did not change).
UPDATE @extschema@.segment_compiled c
   SET score_columns = s.columns, score_exprs = s.thresholds
  FROM @extschema@.segment_compiled x
 CROSS JOIN LATERAL @extschema@._rule_score_uses(x.expression, '@extschema@.segment_facts',
		ARRAY(SELECT DISTINCT sc.score_column FROM @extschema@._score_columns() sc)) s
 WHERE x.segment_id = c.segment_id;
UPDATE @extschema@.segment_compiled_from
   SET catalog_version = (SELECT v.version FROM @extschema@.segment_catalog_version v),
	   keyed_sql = NULL, full_sql = NULL;

-- Recomputes every breakpoint. Where one moved that some rule can notice
-- (it compares a score with a value next to it, or uses the score in any
-- other way), the customers whose value lies between its old and new place
-- can change segment: they are queued for evaluation. Breakpoints no rule
-- reads move without queuing anyone.
CREATE OR REPLACE FUNCTION @extschema@.refresh_score_breaks(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
	u record;
	computed pg_catalog.jsonb;
	new_breaks pg_catalog.float8[];
	buyer_count pg_catalog.int8;
	conds pg_catalog.text;
	queued pg_catalog.int8 := 0;
	n pg_catalog.int8;
	every_break pg_catalog.bool;
	relevant pg_catalog.int4[];
	c pg_catalog.float8;
BEGIN
	SELECT x.computed, x.buyers INTO computed, buyer_count
	  FROM @extschema@._compute_score_breaks('@extschema@.customer_facts') x;

	FOR m IN SELECT * FROM @extschema@.score_breaks ORDER BY measure LOOP
		new_breaks := @extschema@._jsonb_float8_array(computed->m.measure);
		IF new_breaks IS DISTINCT FROM m.breaks THEN
			-- which breakpoints the rules can notice: breaks[k] separates
			-- score k from k + 1, so "score op c" only changes across
			-- k = ceil(c) - 1 and k = floor(c); rules set aside count too
			every_break := false;
			relevant := '{}';
			FOR u IN SELECT t.col, t.expr, x.score_columns IS NULL AS unknown
					   FROM @extschema@.segment_compiled x
					   LEFT JOIN LATERAL ROWS FROM (pg_catalog.unnest(x.score_columns), pg_catalog.unnest(x.score_exprs)) AS t(col, expr) ON true
					  WHERE x.score_columns IS NULL
						 OR t.col IN (SELECT sc.score_column FROM @extschema@._score_columns() sc WHERE sc.measure = m.measure) LOOP
				IF u.unknown OR u.expr IS NULL THEN
					every_break := true;
					EXIT;
				END IF;
				BEGIN
					EXECUTE pg_catalog.format('SELECT (%s)::pg_catalog.float8', u.expr) INTO c;
				EXCEPTION WHEN OTHERS THEN
					every_break := true;
					EXIT;
				END;
				IF c IS NOT NULL THEN
					relevant := relevant || ARRAY[pg_catalog.ceil(c)::pg_catalog.int4 - 1, pg_catalog.floor(c)::pg_catalog.int4];
				END IF;
			END LOOP;
			IF NOT every_break AND relevant = '{}' THEN
				CONTINUE;			-- no rule reads this score
			END IF;
			IF m.breaks IS NULL OR new_breaks IS NULL THEN
				INSERT INTO @extschema@.evaluation_queue (customer_id) VALUES (NULL);
			ELSE
				SELECT pg_catalog.string_agg(@extschema@._score_measure_range(m.measure, LEAST(b.o, b.nw), GREATEST(b.o, b.nw)), ' OR ')
				  INTO conds
				  FROM ROWS FROM (pg_catalog.unnest(m.breaks), pg_catalog.unnest(new_breaks)) WITH ORDINALITY AS b(o, nw, k)
				 WHERE b.o IS DISTINCT FROM b.nw
				   AND (every_break OR b.k::pg_catalog.int4 = ANY (relevant));
				IF conds IS NOT NULL THEN
					EXECUTE pg_catalog.format('INSERT INTO @extschema@.evaluation_queue (customer_id)
						SELECT f.customer_id FROM @extschema@.customer_facts f WHERE f.orders > 0 AND (%s)', conds);
					GET DIAGNOSTICS n = ROW_COUNT;
					queued := queued + n;
				END IF;
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
'Recomputes percentile and RFM breakpoints over all buyers; queues the customers near a moved breakpoint that some rule can notice; returns how many';

-- The keyed refresh after new orders reads every order of each changed
-- customer: for 1 000 random customers of a 10 M-order shop, ~12 000 rows
-- on as many heap pages of the shop's table, which we may not index or
-- cluster. An index scan fetches them one by one in key order; a bitmap
-- heap scan visits them in block order and, with effective_io_concurrency,
-- asks the kernel for the next pages ahead of time. Pages not in memory
-- then arrive in parallel instead of one after the other: 250-340 ms
-- instead of 500-1 040 ms for the refresh with a cold cache at 1 M
-- customers, about the same when warm. The keyed statement's other scans
-- (customers, tracked sources, order lines by order) are ANY(keys) or
-- per-order lookups that a bitmap scan serves as well. rebuild_facts()
-- does not go through _write_facts().
ALTER FUNCTION @extschema@._write_facts(pg_catalog.text[], pg_catalog.timestamptz) SET enable_indexscan = off;
DO $$
BEGIN
	-- platforms without posix_fadvise() accept only 0
	PERFORM pg_catalog.set_config('effective_io_concurrency', '64', true);
	ALTER FUNCTION @extschema@._write_facts(pg_catalog.text[], pg_catalog.timestamptz) SET effective_io_concurrency = 64;
EXCEPTION WHEN invalid_parameter_value THEN
	NULL;
END
$$;

-- segment_membership is keyed by customer first. Each tick reads the
-- memberships of the customers it evaluates and writes their enters and
-- exits: with (customer_id, segment_id) as the primary key that read is an
-- index-only scan of one leaf page per customer, and each enter lands in
-- the leaf just read; the per-segment index on segment_id (deduplicated,
-- a few MB) takes each new row at the end of its segment's run. Before,
-- every enter paid two random index inserts (the (segment_id, customer_id)
-- key and the customer_id index) and the read went to the heap. Lookups of
-- one pair use the new key; member lists of a segment the segment index.
ALTER TABLE @extschema@.segment_membership
	DROP CONSTRAINT segment_membership_pkey,
	ADD CONSTRAINT segment_membership_pkey PRIMARY KEY (customer_id, segment_id);
DROP INDEX @extschema@.segment_membership_customer;
CREATE INDEX segment_membership_segment ON @extschema@.segment_membership (segment_id);

-- segment_history is read by segment and time (the campaigns'
-- segment_entered and went_quiet signals: segment_history_segment_at). The
-- index on (customer_id, at) served only ad hoc per-customer lookups, yet
-- every enter and exit paid a random insert into it: a third of the index
-- writes of a history row, the one that misses the cache at 1 M customers.
-- A shop that looks up history per customer often can create it again.
DROP INDEX @extschema@.segment_history_customer;

-- The statement that evaluates every enabled segment for the customers in
-- $1 (all when NULL) as of $2, and writes only the differences. The watch
-- instants are plain function calls (no subquery per customer), and only
-- the watch rows whose instant moved are written (no row lock on the rest).
CREATE OR REPLACE FUNCTION @extschema@._evaluation_sql(keyed pg_catalog.bool)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
	watches pg_catalog.text;
BEGIN
	-- the segments a customer is in: one array of the ids of the rules that
	-- hold (an expression per rule, no VALUES row per rule and customer)
	SELECT 'ARRAY[' || pg_catalog.string_agg(pg_catalog.format('CASE WHEN (%s) THEN %L END', c.expression, c.segment_id),
											 ', ' ORDER BY c.segment_id) || ']::pg_catalog.text[]'
	  INTO rules
	  FROM @extschema@.segment_compiled c WHERE c.error IS NULL;
	-- every threshold a time column is compared with gives the instant the
	-- column next crosses it (_next_crossing)
	SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format(
			'@extschema@._next_crossing(f.%1$I, (%3$s)::pg_catalog.numeric, %2$L::pg_catalog.interval, $2)',
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
	SELECT x.customer_id, x.next_check_at FROM watch x
	 WHERE x.next_check_at IS NOT NULL
	   AND NOT EXISTS (SELECT FROM @extschema@.segment_watch o
						WHERE o.customer_id = x.customer_id AND o.next_check_at = x.next_check_at%7$s)
	ON CONFLICT (customer_id) DO UPDATE SET next_check_at = excluded.next_check_at
	 WHERE w.next_check_at IS DISTINCT FROM excluded.next_check_at
	RETURNING 1),
watch_cleared AS (
	DELETE FROM @extschema@.segment_watch w
	 WHERE %6$s NOT EXISTS (SELECT FROM watch x WHERE x.customer_id = w.customer_id AND x.next_check_at IS NOT NULL)
	RETURNING 1),
fresh AS (
	SELECT f.customer_id, v.segment_id
	  FROM f CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.array_remove(%3$s, NULL)) v(segment_id)),
cur AS (SELECT m.segment_id, m.customer_id FROM @extschema@.segment_membership m
		 WHERE m.segment_id NOT IN (SELECT x.segment_id FROM @extschema@.segment_compiled x WHERE x.error IS NOT NULL)%4$s),
entered AS (
	INSERT INTO @extschema@.segment_membership (segment_id, customer_id, since)
	SELECT n.segment_id, n.customer_id, $2 FROM fresh n
	 WHERE NOT EXISTS (SELECT FROM cur c WHERE c.segment_id = n.segment_id AND c.customer_id = n.customer_id)
	RETURNING segment_id, customer_id),
exited AS (
	DELETE FROM @extschema@.segment_membership m USING cur c
	 WHERE m.customer_id = c.customer_id AND m.segment_id = c.segment_id
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
		COALESCE(rules, '''{}''::pg_catalog.text[]'),
		CASE WHEN keyed THEN ' AND m.customer_id = ANY($1)' ELSE '' END,
		COALESCE(watches, 'NULL::pg_catalog.timestamptz'),
		CASE WHEN keyed THEN 'w.customer_id = ANY($1) AND' ELSE '' END,
		CASE WHEN keyed THEN ' AND o.customer_id = ANY($1)' ELSE '' END);
END
$$;

-- The evaluation statements are generated once per compiled catalog and
-- kept next to it, not in every tick (pg_cron opens a new session for each).
CREATE FUNCTION @extschema@._evaluation_sql_cached(keyed pg_catalog.bool)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result pg_catalog.text;
BEGIN
	SELECT CASE WHEN keyed THEN f.keyed_sql ELSE f.full_sql END INTO result
	  FROM @extschema@.segment_compiled_from f;
	IF result IS NULL THEN
		result := @extschema@._evaluation_sql(keyed);
		IF keyed THEN
			UPDATE @extschema@.segment_compiled_from SET keyed_sql = result;
		ELSE
			UPDATE @extschema@.segment_compiled_from SET full_sql = result;
		END IF;
	END IF;
	RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@._evaluation_sql_cached(pg_catalog.bool) IS
'_evaluation_sql() of the compiled rules, generated once and kept in segment_compiled_from';

-- Runs the keyed statement. A tick evaluates a few to a few thousand
-- customers; around a thousand the estimate crosses jit_above_cost and JIT
-- compilation alone would cost more than the whole statement. The
-- membership diff of a few thousand rows hashes rather than sorting both
-- sides of it twice for merge joins.
CREATE FUNCTION @extschema@._evaluate_keyed(keys pg_catalog.text[], as_of pg_catalog.timestamptz,
	evaluation_id pg_catalog.int8,
	OUT customers pg_catalog.int8, OUT entered pg_catalog.int8, OUT exited pg_catalog.int8,
	OUT watch_changes pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
SET jit = off
SET enable_mergejoin = off
AS $$
BEGIN
	EXECUTE @extschema@._evaluation_sql_cached(true)
	   INTO customers, entered, exited, watch_changes
	  USING keys, as_of, evaluation_id;
END
$$;

COMMENT ON FUNCTION @extschema@._evaluate_keyed(pg_catalog.text[], pg_catalog.timestamptz, pg_catalog.int8) IS
'Evaluates the customers in keys (without JIT: short statements)';

-- Runs the statement over everyone. The planner overestimates the member
-- rows (half of every rule for every customer) and would sort millions of
-- (segment, customer) text pairs for merge joins; hash joins are cheaper.
CREATE FUNCTION @extschema@._evaluate_all(as_of pg_catalog.timestamptz, evaluation_id pg_catalog.int8,
	OUT customers pg_catalog.int8, OUT entered pg_catalog.int8, OUT exited pg_catalog.int8,
	OUT watch_changes pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
SET enable_mergejoin = off
AS $$
BEGIN
	EXECUTE @extschema@._evaluation_sql_cached(false)
	   INTO customers, entered, exited, watch_changes
	  USING NULL::pg_catalog.text[], as_of, evaluation_id;
END
$$;

COMMENT ON FUNCTION @extschema@._evaluate_all(pg_catalog.timestamptz, pg_catalog.int8) IS
'Evaluates every customer (hash joins for the membership diff)';

CREATE OR REPLACE FUNCTION @extschema@._set_aside_failing_rules(keyed pg_catalog.bool, keys pg_catalog.text[],
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
	IF failed > 0 THEN
		-- the generated statements leave the set-aside rules out
		UPDATE @extschema@.segment_compiled_from SET keyed_sql = NULL, full_sql = NULL;
	END IF;
	RETURN failed;
END
$$;

-- Compiles the rules again when the catalog they were made from changed
-- (the fingerprint differs); otherwise only notes the version as checked.
CREATE FUNCTION @extschema@._check_catalog(version_now pg_catalog.int8)
RETURNS pg_catalog.bool
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM @extschema@.segment_compiled_from f
					WHERE f.fingerprint = @extschema@._catalog_fingerprint()) THEN
		PERFORM @extschema@._compile_segments();
		RETURN true;
	END IF;
	UPDATE @extschema@.segment_compiled_from f SET catalog_version = version_now
	 WHERE f.catalog_version IS DISTINCT FROM version_now;
	RETURN false;
END
$$;

COMMENT ON FUNCTION @extschema@._check_catalog(pg_catalog.int8) IS
'Recompiles the rules when the catalog fingerprint no longer matches; returns whether it did';

CREATE OR REPLACE FUNCTION @extschema@.evaluate_segments(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now(),
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
	version_now pg_catalog.int8;
	checked pg_catalog.bool := false;
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

	-- the catalog changed (an edit, a restore): the fingerprint tells whether
	-- the rules did, and if so they are compiled again
	SELECT pg_catalog.max(v.version) INTO version_now FROM @extschema@.segment_catalog_version v;
	IF full_evaluation OR NOT EXISTS (SELECT FROM @extschema@.segment_compiled_from f
									   WHERE f.catalog_version = version_now) THEN
		PERFORM @extschema@._check_catalog(version_now);
		checked := true;
	END IF;

	-- customers whose membership time alone may have changed
	INSERT INTO @extschema@.evaluation_queue (customer_id)
	SELECT w.customer_id FROM @extschema@.segment_watch w WHERE w.next_check_at <= as_of;

	-- nothing queued and no full evaluation asked for: nothing to do, nothing written
	IF NOT full_evaluation AND NOT EXISTS (SELECT FROM @extschema@.evaluation_queue) THEN
		RETURN;
	END IF;

	-- facts changed, so breakpoints may have: recompute them when they are
	-- old; check the catalog fingerprint as often (edits no trigger saw)
	IF full_evaluation OR NOT EXISTS (
		SELECT FROM @extschema@.score_breaks sb
		 WHERE sb.computed_at > as_of - @extschema@.setting_value('score_breaks_max_age')::pg_catalog.interval) THEN
		IF NOT checked THEN
			PERFORM @extschema@._check_catalog(version_now);
		END IF;
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
		IF everyone THEN
			SELECT * INTO customers, entered, exited, watch_changes
			  FROM @extschema@._evaluate_all(as_of, evaluation_id);
		ELSE
			SELECT * INTO customers, entered, exited, watch_changes
			  FROM @extschema@._evaluate_keyed(keys, as_of, evaluation_id);
		END IF;
	EXCEPTION WHEN OTHERS THEN
		-- One rule failing at run time (a division by zero on some customer's
		-- facts) must not stop every other segment: find it, set it aside
		-- with its error (its members stay as they were), evaluate the rest.
		GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
		IF @extschema@._set_aside_failing_rules(NOT everyone, keys, as_of) = 0 THEN
			RAISE;
		END IF;
		IF everyone THEN
			SELECT * INTO customers, entered, exited, watch_changes
			  FROM @extschema@._evaluate_all(as_of, evaluation_id);
		ELSE
			SELECT * INTO customers, entered, exited, watch_changes
			  FROM @extschema@._evaluate_keyed(keys, as_of, evaluation_id);
		END IF;
	END;
	UPDATE @extschema@.evaluations e
	   SET finished_at = pg_catalog.clock_timestamp(), customers = evaluate_segments.customers,
		   entered = evaluate_segments.entered, exited = evaluate_segments.exited
	 WHERE e.evaluation_id = evaluate_segments.evaluation_id;
END
$$;



--------------------------------------------------------------------------------
-- 3. Campaigns
--
-- (campaigns go here)
--------------------------------------------------------------------------------

/*
 * segment membership -> CAMPAIGN ENROLLMENT -> due steps -> STOP RULES (C)
 * -> OUTBOX -> sender (claim / ack / fail) -> engagement and orders back
 *
 *   campaign, campaign_step   the owner's campaigns (kept by pg_dump)
 *   campaign_template(_step)  ready-made campaigns, copied on request
 *   enrollment                one buyer in one campaign for one signal
 *   decision_log              every send / defer / skip with its reason
 *   contact_log               last message queued per buyer and channel:
 *                             the frequency cap's lock row
 *   outbox                    messages for senders, with lease and fencing
 *   tick_runs, tick_state     the tick's log and its watermark
 */

-- Settings that change what campaigns do, not what facts hold: changing
-- them must not rebuild the facts.
ALTER TABLE @extschema@.setting_default
	ADD COLUMN rebuilds_facts pg_catalog.bool NOT NULL DEFAULT true;

INSERT INTO @extschema@.setting_default (name, value, value_type, description, rebuilds_facts) VALUES
	('frequency_cap_email', '16 hours', 'pg_catalog.interval',
	 'At most one campaign message per buyer on email within this time, across campaigns', false),
	('frequency_cap_sms', '24 hours', 'pg_catalog.interval',
	 'At most one campaign message per buyer by SMS within this time, across campaigns', false),
	('frequency_cap_telegram', '24 hours', 'pg_catalog.interval',
	 'At most one campaign message per buyer on Telegram within this time, across campaigns', false),
	('frequency_cap_push', '4 hours', 'pg_catalog.interval',
	 'At most one campaign message per buyer by push within this time, across campaigns', false),
	('quiet_hours_start', '21:00', 'pg_catalog.time',
	 'Start of quiet hours in the buyer''s own time zone: messages wait until quiet_hours_end', false),
	('quiet_hours_end', '08:00', 'pg_catalog.time',
	 'End of quiet hours in the buyer''s own time zone (equal to the start: no quiet hours)', false),
	('unknown_zone_margin', '2 hours', 'pg_catalog.interval',
	 'A buyer without a known time zone gets the shop''s zone with quiet hours this much longer on each side', false),
	('sunset_after_ignored', '6', 'pg_catalog.int4',
	 'Stop messaging a buyer after this many messages in a row without an open or click (0: never)', false),
	('step_valid_for', '1 day', 'pg_catalog.interval',
	 'How long after it falls due a step may still be sent, unless the step says otherwise', false),
	('outbox_lease', '5 minutes', 'pg_catalog.interval',
	 'How long a claimed message stays with its sender before another sender may claim it', false),
	('outbox_max_attempts', '5', 'pg_catalog.int4',
	 'Claims (and failures) after which a message is parked as dead', false),
	('outbox_retry_after', '1 minute', 'pg_catalog.interval',
	 'Back-off after the first failed attempt; doubles with every further attempt', false),
	('tick_run_retention', '14 days', 'pg_catalog.interval',
	 'How long tick_runs keeps its rows', false),
	('signal_lookback', '15 minutes', 'pg_catalog.interval',
	 'How far behind the last tick signals are read again, for events committed late (each signal still enrolls once)', false),
	('shop_link', '', 'pg_catalog.text',
	 'The destination link of steps that link to the shop', false),
	('product_link_template', '', 'pg_catalog.text',
	 'Destination link of product steps; {product_id} is replaced', false),
	('wallet_link', '', 'pg_catalog.text',
	 'Destination link of wallet steps', false),
	('referral_link_template', '', 'pg_catalog.text',
	 'Destination link of referral steps; {customer_id} is replaced', false);

CREATE OR REPLACE FUNCTION @extschema@.set_setting(setting_name pg_catalog.text, new_value pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	vtype pg_catalog.regtype;
	rebuilds pg_catalog.bool;
BEGIN
	SELECT d.value_type, d.rebuilds_facts INTO vtype, rebuilds
	  FROM @extschema@.setting_default d WHERE d.name = setting_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unrecognized segments setting "%"', setting_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM segments.settings lists them.';
	END IF;
	IF new_value IS NULL THEN
		RAISE EXCEPTION 'setting "%" cannot be NULL', setting_name
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Use segments.reset_setting() to go back to the default.';
	END IF;
	-- the value must parse as its type (the cast raises the precise error)
	EXECUTE pg_catalog.format('SELECT %L::%s', new_value, vtype);
	IF setting_name = 'shop_time_zone' THEN
		PERFORM pg_catalog.now() AT TIME ZONE new_value;
	ELSIF vtype = 'pg_catalog.interval'::pg_catalog.regtype
		  AND new_value::pg_catalog.interval <= '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'setting "%" must be a positive interval', setting_name
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF vtype = 'pg_catalog.int4'::pg_catalog.regtype AND new_value::pg_catalog.int4 < 0 THEN
		RAISE EXCEPTION 'setting "%" must not be negative', setting_name
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF setting_name = 'outbox_max_attempts' AND new_value::pg_catalog.int4 < 1 THEN
		RAISE EXCEPTION 'setting "outbox_max_attempts" must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF setting_name IN ('quiet_hours_start', 'quiet_hours_end')
		  AND (new_value::pg_catalog.time >= '24:00'::pg_catalog.time
			   OR pg_catalog.date_part('second', new_value::pg_catalog.time) <> 0) THEN
		RAISE EXCEPTION 'setting "%" must be a whole minute of the day, 00:00 to 23:59', setting_name
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF setting_name = 'unknown_zone_margin' AND new_value::pg_catalog.interval > '12 hours'::pg_catalog.interval THEN
		RAISE EXCEPTION 'setting "unknown_zone_margin" must be at most 12 hours'
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF setting_name = 'watch_days'
		  AND (pg_catalog.array_ndims(new_value::pg_catalog.int4[]) IS DISTINCT FROM 1
			   OR EXISTS (SELECT FROM pg_catalog.unnest(new_value::pg_catalog.int4[]) d WHERE d IS NULL OR d < 0)) THEN
		RAISE EXCEPTION 'setting "watch_days" must be a one-dimensional array of non-negative day counts'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO @extschema@.setting AS s (name, value) VALUES (setting_name, new_value)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, changed_at = pg_catalog.now();
	IF rebuilds THEN
		-- facts were computed under the old value: the next refresh rebuilds them
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'settings');
	END IF;
	RETURN new_value;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.reset_setting(setting_name pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM @extschema@.setting s WHERE s.name = setting_name;
	IF FOUND AND (SELECT d.rebuilds_facts FROM @extschema@.setting_default d WHERE d.name = setting_name) THEN
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'settings');
	END IF;
	RETURN @extschema@.setting_value(setting_name);
END
$$;

--------------------------------------------------------------------------------
-- Campaigns as data
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.campaign (
	campaign_id pg_catalog.text PRIMARY KEY
		CHECK (campaign_id OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
	title pg_catalog.text NOT NULL,
	signal pg_catalog.text NOT NULL CHECK (signal IN ('segment_entered', 'cart_abandoned',
		'checkout_abandoned', 'order_completed', 'went_quiet', 'product_restocked',
		'wallet_credit', 'referral_shared', 'broadcast')),
	signal_segment pg_catalog.text,
	audience_segments pg_catalog.text[] NOT NULL DEFAULT '{}',
	audience_mode pg_catalog.text NOT NULL DEFAULT 'any' CHECK (audience_mode IN ('any', 'primary')),
	exclude_segments pg_catalog.text[] NOT NULL DEFAULT '{}',
	reentry_days pg_catalog.int4 NOT NULL DEFAULT 30 CHECK (reentry_days >= 0),
	holdout_percent pg_catalog.numeric NOT NULL DEFAULT 10 CHECK (holdout_percent >= 0 AND holdout_percent <= 100),
	max_offer_percent pg_catalog.numeric CHECK (max_offer_percent >= 0 AND max_offer_percent <= 100),
	min_margin_percent pg_catalog.numeric CHECK (min_margin_percent >= 0 AND min_margin_percent <= 100),
	priority pg_catalog.int4 NOT NULL DEFAULT 100,
	status pg_catalog.text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused', 'archived')),
	starts_at pg_catalog.timestamptz,
	expires_at pg_catalog.timestamptz,
	broadcast_at pg_catalog.timestamptz,
	template_id pg_catalog.text,
	activated_at pg_catalog.timestamptz,
	created_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK ((signal IN ('segment_entered', 'went_quiet')) = (signal_segment IS NOT NULL)),
	CHECK ((signal = 'broadcast') = (broadcast_at IS NOT NULL)),
	CHECK (expires_at IS NULL OR starts_at IS NULL OR expires_at > starts_at)
);

COMMENT ON TABLE @extschema@.campaign IS
'The owner''s campaigns: signal, audience, re-entry, holdout, guardrail and status (kept by pg_dump)';
COMMENT ON COLUMN @extschema@.campaign.signal IS
'What enrolls a buyer: segment_entered, cart_abandoned, checkout_abandoned, order_completed, went_quiet, product_restocked, wallet_credit, referral_shared or broadcast';
COMMENT ON COLUMN @extschema@.campaign.audience_segments IS
'Buyers must be in one of these segments (audience_mode any) or have one as their primary segment (primary); empty: everyone';
COMMENT ON COLUMN @extschema@.campaign.reentry_days IS 'A buyer is not enrolled again within this many days';
COMMENT ON COLUMN @extschema@.campaign.holdout_percent IS
'Share of enrollments that get nothing, for measuring lift; fixed per buyer and campaign';
COMMENT ON COLUMN @extschema@.campaign.max_offer_percent IS
'Margin guardrail: the largest discount a step may offer (NULL: no discounts)';
COMMENT ON COLUMN @extschema@.campaign.min_margin_percent IS
'Margin guardrail: a discount must leave at least this margin on the buyer''s own known margin rate';
COMMENT ON COLUMN @extschema@.campaign.priority IS
'Lower goes first when two campaigns compete for one buyer''s frequency cap';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.campaign', '');

CREATE TABLE @extschema@.campaign_step (
	campaign_id pg_catalog.text NOT NULL REFERENCES @extschema@.campaign ON DELETE CASCADE ON UPDATE CASCADE,
	step_no pg_catalog.int4 NOT NULL CHECK (step_no BETWEEN 1 AND 100),
	delay pg_catalog.interval NOT NULL CHECK (delay >= '0'::pg_catalog.interval),
	channel @extschema@.channel NOT NULL,
	message_key pg_catalog.text NOT NULL CHECK (message_key OPERATOR(pg_catalog.<>) ''),
	link pg_catalog.text NOT NULL DEFAULT 'shop' CHECK (link IN ('cart', 'product', 'wallet', 'referral', 'shop', 'none')),
	offer_percent pg_catalog.numeric CHECK (offer_percent > 0 AND offer_percent <= 100),
	valid_for pg_catalog.interval CHECK (valid_for > '0'::pg_catalog.interval),
	PRIMARY KEY (campaign_id, step_no)
);

COMMENT ON TABLE @extschema@.campaign_step IS
'Timed steps of a campaign: delay after the signal, channel, message key, destination link, optional offer';
COMMENT ON COLUMN @extschema@.campaign_step.delay IS 'Time from the signal (e.g. the cart''s last activity) to this step';
COMMENT ON COLUMN @extschema@.campaign_step.valid_for IS
'How long after falling due the step may still be sent (NULL: setting step_valid_for)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.campaign_step', '');

-- Ready-made campaigns: ours, not dumped; campaign_from_template() copies one
-- into the owner's tables.  A NULL channel takes the channel asked for; the
-- first cart step is faster on chat channels.
CREATE TABLE @extschema@.campaign_template (
	template_id pg_catalog.text PRIMARY KEY,
	title pg_catalog.text NOT NULL,
	signal pg_catalog.text NOT NULL,
	signal_segment pg_catalog.text,
	audience_segments pg_catalog.text[] NOT NULL DEFAULT '{}',
	exclude_segments pg_catalog.text[] NOT NULL DEFAULT '{}',
	reentry_days pg_catalog.int4 NOT NULL,
	holdout_percent pg_catalog.numeric NOT NULL DEFAULT 10,
	max_offer_percent pg_catalog.numeric,
	default_channel pg_catalog.text NOT NULL DEFAULT 'email',
	description pg_catalog.text NOT NULL
);

CREATE TABLE @extschema@.campaign_template_step (
	template_id pg_catalog.text NOT NULL REFERENCES @extschema@.campaign_template,
	step_no pg_catalog.int4 NOT NULL,
	delay pg_catalog.interval NOT NULL,
	chat_delay pg_catalog.interval,
	message_key pg_catalog.text NOT NULL,
	link pg_catalog.text NOT NULL,
	offer_percent pg_catalog.numeric,
	valid_for pg_catalog.interval,
	PRIMARY KEY (template_id, step_no)
);

INSERT INTO @extschema@.campaign_template
	(template_id, title, signal, signal_segment, audience_segments, exclude_segments, reentry_days,
	 holdout_percent, max_offer_percent, description) VALUES
	('cart_recovery', 'Cart recovery', 'cart_abandoned', NULL, '{}', '{}', 7, 10, 10,
	 'Three reminders of the exact cart: within the hour without a discount (15 minutes on Telegram and SMS), after a day with reassurance, after two days a small incentive only if still needed'),
	('checkout_recovery', 'Checkout recovery', 'checkout_abandoned', NULL, '{}', '{}', 7, 10, 10,
	 'Like cart recovery, for buyers who left at the checkout'),
	('first_order_followup', 'First-order follow-up', 'order_completed', NULL, '{first_time}', '{}', 30, 10, 10,
	 'A review request 7 days after the first order, a second-order offer after 21 days'),
	('win_back', 'Win-back', 'went_quiet', 'lapsed_own_cycle', '{}', '{suppressed}', 90, 10, 15,
	 'Past their own buying cycle: what is new first, a limited offer after 5 days only to those who still did not buy, a last note after 14 days'),
	('vip_early_access', 'VIP early access', 'broadcast', NULL, '{vip}', '{}', 0, 10, NULL,
	 '24-hour early access for the top buyers before a launch, no discount; set broadcast_at'),
	('restock_alert', 'Restock alert', 'product_restocked', NULL, '{}', '{}', 1, 0, NULL,
	 'Tells buyers who asked that the product is back'),
	('wallet_reminder', 'Wallet reminder', 'wallet_credit', NULL, '{}', '{}', 30, 10, NULL,
	 'Reminds buyers of credit added to their wallet, after a day and after a week'),
	('referral_prompt', 'Referral prompt', 'order_completed', NULL, '{repeat,loyal,vip}', '{}', 90, 10, NULL,
	 'Asks happy repeat buyers to refer a friend three days after an order');

INSERT INTO @extschema@.campaign_template_step
	(template_id, step_no, delay, chat_delay, message_key, link, offer_percent, valid_for) VALUES
	('cart_recovery', 1, '1 hour', '15 minutes', 'cart_reminder', 'cart', NULL, '12 hours'),
	('cart_recovery', 2, '24 hours', NULL, 'cart_reassurance', 'cart', NULL, '12 hours'),
	('cart_recovery', 3, '48 hours', NULL, 'cart_incentive', 'cart', 5, '24 hours'),
	('checkout_recovery', 1, '1 hour', '15 minutes', 'checkout_reminder', 'cart', NULL, '12 hours'),
	('checkout_recovery', 2, '24 hours', NULL, 'checkout_reassurance', 'cart', NULL, '12 hours'),
	('checkout_recovery', 3, '48 hours', NULL, 'checkout_incentive', 'cart', 5, '24 hours'),
	('first_order_followup', 1, '7 days', NULL, 'review_request', 'shop', NULL, '2 days'),
	('first_order_followup', 2, '21 days', NULL, 'second_order_offer', 'shop', 10, '3 days'),
	('win_back', 1, '0', NULL, 'win_back_news', 'shop', NULL, '2 days'),
	('win_back', 2, '5 days', NULL, 'win_back_offer', 'shop', 10, '3 days'),
	('win_back', 3, '14 days', NULL, 'win_back_last_note', 'shop', NULL, '3 days'),
	('vip_early_access', 1, '0', NULL, 'vip_early_access', 'shop', NULL, '24 hours'),
	('restock_alert', 1, '0', NULL, 'back_in_stock', 'product', NULL, '2 days'),
	('wallet_reminder', 1, '1 day', NULL, 'wallet_credit_added', 'wallet', NULL, '2 days'),
	('wallet_reminder', 2, '7 days', NULL, 'wallet_credit_reminder', 'wallet', NULL, '3 days'),
	('referral_prompt', 1, '3 days', NULL, 'referral_prompt', 'referral', NULL, '3 days');

CREATE VIEW @extschema@.campaign_templates AS
	SELECT t.template_id, t.title, t.signal, t.signal_segment, t.audience_segments,
		   t.reentry_days, t.holdout_percent, t.max_offer_percent, t.description,
		   pg_catalog.count(s.step_no)::pg_catalog.int4 AS steps
	  FROM @extschema@.campaign_template t
	  LEFT JOIN @extschema@.campaign_template_step s ON s.template_id OPERATOR(pg_catalog.=) t.template_id
	 GROUP BY t.template_id;

COMMENT ON VIEW @extschema@.campaign_templates IS
'Ready-made campaigns; copy one with campaign_from_template(), which leaves it inactive unless asked';

-- Products for restock alerts and the out-of-stock rule.
CREATE TABLE @extschema@.product_stock (
	product_id pg_catalog.text PRIMARY KEY,
	in_stock pg_catalog.bool NOT NULL,
	changed_at pg_catalog.timestamptz NOT NULL
);
CREATE TABLE @extschema@.stock_events (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	product_id pg_catalog.text NOT NULL,
	in_stock pg_catalog.bool NOT NULL,
	occurred_at pg_catalog.timestamptz NOT NULL
);
CREATE INDEX stock_events_restocked ON @extschema@.stock_events (occurred_at) WHERE in_stock;
CREATE TABLE @extschema@.restock_requests (
	customer_id pg_catalog.text NOT NULL,
	product_id pg_catalog.text NOT NULL,
	requested_at pg_catalog.timestamptz NOT NULL,
	PRIMARY KEY (product_id, customer_id)
);
COMMENT ON TABLE @extschema@.product_stock IS 'Whether a product is in stock now (track_stock())';
COMMENT ON TABLE @extschema@.stock_events IS 'Stock changes over time; restocks drive restock alerts';
COMMENT ON TABLE @extschema@.restock_requests IS 'Buyers who asked to hear when a product is back';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.product_stock', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.stock_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.stock_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.restock_requests', '');

--------------------------------------------------------------------------------
-- Campaign state: enrollments, decisions, the frequency cap, the outbox.
-- All of it is the shop's history (what was sent to whom): pg_dump keeps it,
-- so a restored shop never sends a message twice.
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.enrollment (
	enrollment_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	campaign_id pg_catalog.text NOT NULL REFERENCES @extschema@.campaign ON UPDATE CASCADE,
	customer_id pg_catalog.text NOT NULL,
	signal_key pg_catalog.text NOT NULL,
	signal_at pg_catalog.timestamptz NOT NULL,
	enrolled_at pg_catalog.timestamptz NOT NULL,
	holdout pg_catalog.bool NOT NULL,
	cart_id pg_catalog.text,
	product_id pg_catalog.text,
	state pg_catalog.text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'completed', 'stopped')),
	stop_reason pg_catalog.text,
	next_step_no pg_catalog.int4,
	next_due_at pg_catalog.timestamptz,
	step_not_after pg_catalog.timestamptz,
	UNIQUE (campaign_id, customer_id, signal_key),
	CHECK ((state = 'active') = (next_due_at IS NOT NULL))
);
CREATE INDEX enrollment_due ON @extschema@.enrollment (next_due_at) WHERE state = 'active';
CREATE INDEX enrollment_customer ON @extschema@.enrollment (customer_id, campaign_id, enrolled_at);

COMMENT ON TABLE @extschema@.enrollment IS
'One buyer in one campaign for one signal; next_due_at is when its next step is decided';
COMMENT ON COLUMN @extschema@.enrollment.signal_key IS
'What enrolled the buyer (e.g. cart:42@<time>): the same signal never enrolls twice';
COMMENT ON COLUMN @extschema@.enrollment.holdout IS 'In the holdout group: gets nothing, counted for lift';

CREATE TABLE @extschema@.decision_log (
	decision_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	enrollment_id pg_catalog.int8 NOT NULL,
	campaign_id pg_catalog.text NOT NULL,
	step_no pg_catalog.int4 NOT NULL,
	customer_id pg_catalog.text NOT NULL,
	channel pg_catalog.text NOT NULL,
	decided_at pg_catalog.timestamptz NOT NULL,
	stage pg_catalog.text NOT NULL CHECK (stage IN ('tick', 'claim')),
	decision pg_catalog.text NOT NULL CHECK (decision IN ('send', 'defer', 'skip')),
	reason pg_catalog.text,
	defer_until pg_catalog.timestamptz,
	message_id pg_catalog.int8,
	facts pg_catalog.jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX decision_log_enrollment ON @extschema@.decision_log (enrollment_id, step_no);
CREATE INDEX decision_log_campaign_at ON @extschema@.decision_log (campaign_id, decided_at);

COMMENT ON TABLE @extschema@.decision_log IS
'Every decision on a due step: send, defer (with until when) or skip, with the reason and the facts that decided it';

CREATE TABLE @extschema@.contact_log (
	customer_id pg_catalog.text NOT NULL,
	channel pg_catalog.text NOT NULL,
	last_queued_at pg_catalog.timestamptz NOT NULL,
	PRIMARY KEY (customer_id, channel)
);

COMMENT ON TABLE @extschema@.contact_log IS
'When a campaign message was last queued per buyer and channel: the row every enqueue locks, so two campaigns cannot both pass one frequency cap';

CREATE TABLE @extschema@.outbox (
	message_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	idempotency_key pg_catalog.text NOT NULL UNIQUE,
	enrollment_id pg_catalog.int8 NOT NULL REFERENCES @extschema@.enrollment,
	campaign_id pg_catalog.text NOT NULL,
	step_no pg_catalog.int4 NOT NULL,
	customer_id pg_catalog.text NOT NULL,
	channel pg_catalog.text NOT NULL,
	message_key pg_catalog.text NOT NULL,
	variables pg_catalog.jsonb NOT NULL DEFAULT '{}',
	state pg_catalog.text NOT NULL DEFAULT 'ready'
		CHECK (state IN ('ready', 'leased', 'sent', 'dead', 'cancelled', 'expired')),
	not_before pg_catalog.timestamptz NOT NULL,
	not_after pg_catalog.timestamptz NOT NULL,
	attempt pg_catalog.int4 NOT NULL DEFAULT 0,
	leased_by pg_catalog.text,
	lease_until pg_catalog.timestamptz,
	provider_message_id pg_catalog.text,
	last_error pg_catalog.text,
	created_at pg_catalog.timestamptz NOT NULL,
	sent_at pg_catalog.timestamptz
);
CREATE INDEX outbox_claimable ON @extschema@.outbox (channel, not_before) WHERE state IN ('ready', 'leased');
CREATE INDEX outbox_enrollment ON @extschema@.outbox (enrollment_id, step_no);

COMMENT ON TABLE @extschema@.outbox IS
'Messages for senders: claim_messages() leases them, ack_message() / fail_message() settle them';
COMMENT ON COLUMN @extschema@.outbox.idempotency_key IS
'campaign:step:customer:enrollment; unique, so a message is queued once whatever happens; senders pass it to their provider';
COMMENT ON COLUMN @extschema@.outbox.attempt IS
'Raised by every claim; acknowledgements must carry it, so a late one from an expired lease changes nothing';
COMMENT ON COLUMN @extschema@.outbox.not_after IS 'Never handed out after this time (state expired)';

CREATE TABLE @extschema@.tick_state (
	singleton pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (singleton),
	watermark pg_catalog.timestamptz,
	last_run_id pg_catalog.int8
);
-- its one row is created by the first tick, not here: pg_dump keeps the row,
-- and a restore must not find one already in place

COMMENT ON TABLE @extschema@.tick_state IS
'The as-of time of the last successful tick: the next one catches up on every signal since then';

CREATE TABLE @extschema@.tick_runs (
	run_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	as_of pg_catalog.timestamptz,
	watermark_from pg_catalog.timestamptz,
	started_at pg_catalog.timestamptz NOT NULL,
	finished_at pg_catalog.timestamptz,
	status pg_catalog.text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
	backend_pid pg_catalog.int4,
	customers_refreshed pg_catalog.int4,
	segment_enters pg_catalog.int4,
	segment_exits pg_catalog.int4,
	enrolled pg_catalog.int4,
	steps_due pg_catalog.int4,
	queued pg_catalog.int4,
	deferred pg_catalog.int4,
	skipped pg_catalog.int4,
	error pg_catalog.text
);
CREATE INDEX tick_runs_started ON @extschema@.tick_runs (started_at);

COMMENT ON TABLE @extschema@.tick_runs IS
'One row per tick: when, rows at each stage, and the error of a failed one; kept for tick_run_retention';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.enrollment', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.enrollment_enrollment_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.decision_log', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.decision_log_decision_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.contact_log', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tick_state', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tick_runs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tick_runs_run_id_seq', '');

-- Signals read customer_facts by time: these keep enrollment O(signals).
CREATE INDEX customer_facts_cart_updated_at ON @extschema@.customer_facts (cart_updated_at)
	WHERE cart_id IS NOT NULL;
CREATE INDEX wallet_events_occurred_at ON @extschema@.wallet_events (occurred_at);
CREATE INDEX referral_events_occurred_at ON @extschema@.referral_events (occurred_at);

--------------------------------------------------------------------------------
-- Stop rules (C): one decision per due step, at the tick and again at claim
--------------------------------------------------------------------------------

CREATE TYPE @extschema@.step_decision AS (
	decision pg_catalog.text,
	reason pg_catalog.text,
	defer_until pg_catalog.timestamptz,
	stops_enrollment pg_catalog.bool
);

COMMENT ON TYPE @extschema@.step_decision IS
'send, defer (until defer_until) or skip; reason says why; stops_enrollment: no later step is sent either';

CREATE FUNCTION @extschema@.decide_step(
	as_of pg_catalog.timestamptz,
	campaign_status pg_catalog.text,
	campaign_expires_at pg_catalog.timestamptz,
	holdout pg_catalog.bool,
	signal_at pg_catalog.timestamptz,
	last_order_at pg_catalog.timestamptz,
	cart_state pg_catalog.text,
	consent pg_catalog.bool,
	last_bounced_at pg_catalog.timestamptz,
	last_complained_at pg_catalog.timestamptz,
	consecutive_ignored pg_catalog.int4,
	sunset_after pg_catalog.int4,
	already_sent pg_catalog.bool,
	not_after pg_catalog.timestamptz,
	offer_percent pg_catalog.float8,
	max_offer_percent pg_catalog.float8,
	in_stock pg_catalog.bool,
	facts_pending pg_catalog.bool,
	last_sent_on_channel pg_catalog.timestamptz,
	frequency_cap pg_catalog.interval,
	time_zone pg_catalog.text,
	fallback_time_zone pg_catalog.text,
	quiet_start pg_catalog.int4,
	quiet_end pg_catalog.int4,
	unknown_zone_margin pg_catalog.int4)
RETURNS @extschema@.step_decision
AS 'MODULE_PATHNAME', 'segments_decide_step'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.decide_step IS
'The stop rules for one due step: send, defer until a time, or skip with a reason (NULL arguments: not known or not applicable)';

CREATE FUNCTION @extschema@.quiet_hours_end(at pg_catalog.timestamptz, time_zone pg_catalog.text,
	quiet_start pg_catalog.int4, quiet_end pg_catalog.int4)
RETURNS pg_catalog.timestamptz
AS 'MODULE_PATHNAME', 'segments_quiet_hours_end'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.quiet_hours_end IS
'The first instant at or after "at" outside quiet hours [quiet_start, quiet_end) (minutes of the day) in that IANA zone; NULL for an unknown zone';

-- Everything the stop rules read from settings, read once per call.
CREATE FUNCTION @extschema@._stop_rule_settings(
	OUT cap_email pg_catalog.interval, OUT cap_sms pg_catalog.interval,
	OUT cap_telegram pg_catalog.interval, OUT cap_push pg_catalog.interval,
	OUT quiet_start pg_catalog.int4, OUT quiet_end pg_catalog.int4,
	OUT unknown_zone_margin pg_catalog.int4, OUT shop_time_zone pg_catalog.text,
	OUT sunset_after pg_catalog.int4, OUT step_valid_for pg_catalog.interval,
	OUT links pg_catalog.jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s pg_catalog.jsonb;
BEGIN
	SELECT pg_catalog.jsonb_object_agg(v.name, v.value) INTO s FROM @extschema@.settings v;
	cap_email := (s->>'frequency_cap_email')::pg_catalog.interval;
	cap_sms := (s->>'frequency_cap_sms')::pg_catalog.interval;
	cap_telegram := (s->>'frequency_cap_telegram')::pg_catalog.interval;
	cap_push := (s->>'frequency_cap_push')::pg_catalog.interval;
	quiet_start := (pg_catalog.date_part('epoch', (s->>'quiet_hours_start')::pg_catalog.time) / 60)::pg_catalog.int4;
	quiet_end := (pg_catalog.date_part('epoch', (s->>'quiet_hours_end')::pg_catalog.time) / 60)::pg_catalog.int4;
	unknown_zone_margin := (pg_catalog.date_part('epoch', (s->>'unknown_zone_margin')::pg_catalog.interval) / 60)::pg_catalog.int4;
	shop_time_zone := s->>'shop_time_zone';
	sunset_after := (s->>'sunset_after_ignored')::pg_catalog.int4;
	step_valid_for := (s->>'step_valid_for')::pg_catalog.interval;
	links := pg_catalog.jsonb_build_object('shop', s->>'shop_link', 'product', s->>'product_link_template',
		'wallet', s->>'wallet_link', 'referral', s->>'referral_link_template');
END
$$;

-- Where the buyer's cart stands compared with the cart that enrolled them.
CREATE FUNCTION @extschema@._cart_state(enrolled_cart pg_catalog.text, signal_at pg_catalog.timestamptz,
	current_cart pg_catalog.text, cart_updated_at pg_catalog.timestamptz, last_order_at pg_catalog.timestamptz)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN enrolled_cart IS NULL THEN NULL
	WHEN current_cart IS NOT DISTINCT FROM enrolled_cart THEN
		CASE WHEN cart_updated_at > signal_at THEN 'changed' ELSE 'open' END
	WHEN last_order_at > signal_at THEN 'converted'
	ELSE 'gone' END;

-- Holdout: a fixed share of buyers per campaign, the same on every machine.
CREATE FUNCTION @extschema@.in_holdout(campaign_id pg_catalog.text, customer_id pg_catalog.text,
	holdout_percent pg_catalog.numeric)
RETURNS pg_catalog.bool
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (('x' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(campaign_id OPERATOR(pg_catalog.||) ':'
		OPERATOR(pg_catalog.||) customer_id), 1, 8))::pg_catalog.bit(32)::pg_catalog.int8
		OPERATOR(pg_catalog.&) 2147483647) % 10000 < holdout_percent * 100;

COMMENT ON FUNCTION @extschema@.in_holdout IS
'Whether a buyer is in a campaign''s holdout: a hash of campaign and customer, so the same buyer is always in or out';

--------------------------------------------------------------------------------
-- Managing campaigns
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._check_segments(segment_ids pg_catalog.text[], what pg_catalog.text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	missing pg_catalog.text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.quote_literal(x), ', ') INTO missing
	  FROM pg_catalog.unnest(segment_ids) x
	 WHERE x IS NULL OR NOT EXISTS (SELECT FROM @extschema@.segment_catalog c WHERE c.segment_id = x);
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION '% names unknown segments: %', what, missing
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT segment_id FROM segments.segment_catalog lists them.';
	END IF;
END
$$;

CREATE FUNCTION @extschema@.create_campaign(campaign_id pg_catalog.text, signal pg_catalog.text,
	title pg_catalog.text DEFAULT NULL,
	signal_segment pg_catalog.text DEFAULT NULL,
	audience_segments pg_catalog.text[] DEFAULT '{}',
	audience_mode pg_catalog.text DEFAULT 'any',
	exclude_segments pg_catalog.text[] DEFAULT '{}',
	reentry_days pg_catalog.int4 DEFAULT 30,
	holdout_percent pg_catalog.numeric DEFAULT 10,
	max_offer_percent pg_catalog.numeric DEFAULT NULL,
	broadcast_at pg_catalog.timestamptz DEFAULT NULL,
	starts_at pg_catalog.timestamptz DEFAULT NULL,
	expires_at pg_catalog.timestamptz DEFAULT NULL,
	priority pg_catalog.int4 DEFAULT 100,
	min_margin_percent pg_catalog.numeric DEFAULT NULL)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF campaign_id IS NULL OR campaign_id !~ '^[a-z][a-z0-9_]{0,62}$' THEN
		RAISE EXCEPTION 'invalid campaign id "%"', campaign_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use up to 63 lower-case letters, digits and underscores, starting with a letter.';
	END IF;
	IF signal IS NULL OR signal NOT IN ('segment_entered', 'cart_abandoned', 'checkout_abandoned', 'order_completed',
			'went_quiet', 'product_restocked', 'wallet_credit', 'referral_shared', 'broadcast') THEN
		RAISE EXCEPTION 'unknown campaign signal "%"', signal
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Signals are segment_entered, cart_abandoned, checkout_abandoned, order_completed, went_quiet, product_restocked, wallet_credit, referral_shared and broadcast.';
	END IF;
	IF (signal IN ('segment_entered', 'went_quiet')) <> (signal_segment IS NOT NULL) THEN
		RAISE EXCEPTION 'signal % %', signal,
			CASE WHEN signal_segment IS NULL THEN 'needs signal_segment' ELSE 'takes no signal_segment' END
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF (signal = 'broadcast') <> (broadcast_at IS NOT NULL) THEN
		RAISE EXCEPTION 'signal % %', signal,
			CASE WHEN broadcast_at IS NULL THEN 'needs broadcast_at' ELSE 'takes no broadcast_at' END
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF holdout_percent IS NULL OR holdout_percent < 0 OR holdout_percent > 100
	   OR max_offer_percent < 0 OR max_offer_percent > 100 OR min_margin_percent < 0 OR min_margin_percent > 100 THEN
		RAISE EXCEPTION 'holdout_percent, max_offer_percent and min_margin_percent must be between 0 and 100'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF reentry_days IS NULL OR reentry_days < 0 THEN
		RAISE EXCEPTION 'reentry_days must be 0 or more' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF audience_mode IS NULL OR audience_mode NOT IN ('any', 'primary') THEN
		RAISE EXCEPTION 'audience_mode must be any or primary, not %', COALESCE(audience_mode, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF expires_at <= starts_at THEN
		RAISE EXCEPTION 'expires_at must be after starts_at' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._check_segments(pg_catalog.array_remove(ARRAY[signal_segment], NULL)
		OPERATOR(pg_catalog.||) COALESCE(audience_segments, '{}') OPERATOR(pg_catalog.||) COALESCE(exclude_segments, '{}'),
		'campaign ' OPERATOR(pg_catalog.||) pg_catalog.quote_literal(campaign_id));
	INSERT INTO @extschema@.campaign (campaign_id, title, signal, signal_segment, audience_segments, audience_mode,
		exclude_segments, reentry_days, holdout_percent, max_offer_percent, min_margin_percent, broadcast_at,
		starts_at, expires_at, priority)
	VALUES (campaign_id, COALESCE(title, campaign_id), signal, signal_segment, COALESCE(audience_segments, '{}'),
		audience_mode, COALESCE(exclude_segments, '{}'), reentry_days, holdout_percent, max_offer_percent,
		min_margin_percent, broadcast_at, starts_at, expires_at, priority);
	RETURN campaign_id;
END
$$;

COMMENT ON FUNCTION @extschema@.create_campaign IS
'Creates a campaign in status draft; add steps with add_campaign_step() and switch it on with set_campaign_status()';

CREATE FUNCTION @extschema@.add_campaign_step(campaign_id pg_catalog.text, delay pg_catalog.interval,
	channel pg_catalog.text, message_key pg_catalog.text, link pg_catalog.text DEFAULT 'shop',
	offer_percent pg_catalog.numeric DEFAULT NULL, valid_for pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	next_no pg_catalog.int4;
	last_delay pg_catalog.interval;
BEGIN
	PERFORM FROM @extschema@.campaign c WHERE c.campaign_id = add_campaign_step.campaign_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign "%" does not exist', campaign_id USING ERRCODE = 'undefined_object';
	END IF;
	IF delay IS NULL OR delay < '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'a step''s delay must be zero or more, not %', COALESCE(delay::pg_catalog.text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF message_key IS NULL OR message_key = '' THEN
		RAISE EXCEPTION 'a step needs a message_key' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF link IS NULL OR link NOT IN ('cart', 'product', 'wallet', 'referral', 'shop', 'none') THEN
		RAISE EXCEPTION 'unknown link "%"', link
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Links are cart, product, wallet, referral, shop and none.';
	END IF;
	IF offer_percent <= 0 OR offer_percent > 100 OR valid_for <= '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'offer_percent must be above 0 and at most 100, valid_for positive'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT COALESCE(pg_catalog.max(s.step_no), 0) + 1, pg_catalog.max(s.delay) INTO next_no, last_delay
	  FROM @extschema@.campaign_step s WHERE s.campaign_id = add_campaign_step.campaign_id;
	IF delay < last_delay THEN
		RAISE EXCEPTION 'step % would come before step % (delay % < %)', next_no, next_no - 1, delay, last_delay
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Steps are added in the order they are sent; delays count from the signal.';
	END IF;
	INSERT INTO @extschema@.campaign_step (campaign_id, step_no, delay, channel, message_key, link, offer_percent, valid_for)
	VALUES (campaign_id, next_no, delay, @extschema@._check_channel(channel), message_key, link, offer_percent, valid_for);
	RETURN next_no;
END
$$;

COMMENT ON FUNCTION @extschema@.add_campaign_step IS
'Appends a step: delay after the signal, channel, message key, destination link (cart, product, wallet, referral, shop, none), optional offer';

CREATE FUNCTION @extschema@.set_campaign_status(campaign_id pg_catalog.text, status pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c @extschema@.campaign;
	bad pg_catalog.text;
BEGIN
	-- the row lock orders us after a running tick, which holds the row FOR SHARE
	SELECT * INTO c FROM @extschema@.campaign x WHERE x.campaign_id = set_campaign_status.campaign_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign "%" does not exist', campaign_id USING ERRCODE = 'undefined_object';
	END IF;
	IF status IS NULL OR status NOT IN ('draft', 'active', 'paused', 'archived') THEN
		RAISE EXCEPTION 'unknown campaign status "%"', status
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use draft, active, paused or archived.';
	END IF;
	IF c.status = 'archived' AND status <> 'archived' THEN
		RAISE EXCEPTION 'campaign "%" is archived', campaign_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Archived campaigns keep their history; copy it into a new campaign instead.';
	END IF;
	IF status = 'active' THEN
		IF NOT EXISTS (SELECT FROM @extschema@.campaign_step s WHERE s.campaign_id = c.campaign_id) THEN
			RAISE EXCEPTION 'campaign "%" has no steps', campaign_id
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Add one with segments.add_campaign_step().';
		END IF;
		PERFORM @extschema@._check_segments(pg_catalog.array_remove(ARRAY[c.signal_segment], NULL) OPERATOR(pg_catalog.||)
			c.audience_segments OPERATOR(pg_catalog.||) c.exclude_segments,
			'campaign ' OPERATOR(pg_catalog.||) pg_catalog.quote_literal(c.campaign_id));
		SELECT pg_catalog.string_agg(s.step_no::pg_catalog.text, ', ') INTO bad
		  FROM @extschema@.campaign_step s
		 WHERE s.campaign_id = c.campaign_id AND s.offer_percent IS NOT NULL
		   AND (c.max_offer_percent IS NULL OR s.offer_percent > c.max_offer_percent);
		IF bad IS NOT NULL THEN
			RAISE WARNING 'steps % of campaign "%" offer more than its margin guardrail allows; they will be skipped',
				bad, c.campaign_id;
		END IF;
	END IF;
	UPDATE @extschema@.campaign x
	   SET status = set_campaign_status.status,
		   activated_at = CASE WHEN set_campaign_status.status = 'active' AND x.activated_at IS NULL
							   THEN pg_catalog.now() ELSE x.activated_at END
	 WHERE x.campaign_id = c.campaign_id;
	IF status IN ('paused', 'archived') THEN
		-- queued but not yet handed out: nobody gets them now
		UPDATE @extschema@.outbox o SET state = 'cancelled', last_error = 'campaign_' OPERATOR(pg_catalog.||) status
		 WHERE o.campaign_id = c.campaign_id AND o.state = 'ready';
	END IF;
	IF status = 'archived' THEN
		UPDATE @extschema@.enrollment e
		   SET state = 'stopped', stop_reason = 'campaign_archived', next_due_at = NULL, next_step_no = NULL
		 WHERE e.campaign_id = c.campaign_id AND e.state = 'active';
	END IF;
	RETURN status;
END
$$;

COMMENT ON FUNCTION @extschema@.set_campaign_status IS
'draft, active (checks steps, segments, guardrail), paused (queued messages are cancelled; enrollments wait) or archived (everything stops)';

CREATE FUNCTION @extschema@.campaign_from_template(template_id pg_catalog.text,
	campaign_id pg_catalog.text DEFAULT NULL, channel pg_catalog.text DEFAULT NULL,
	activate pg_catalog.bool DEFAULT false, broadcast_at pg_catalog.timestamptz DEFAULT NULL)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t @extschema@.campaign_template;
	new_id pg_catalog.text;
	ch pg_catalog.text;
BEGIN
	SELECT * INTO t FROM @extschema@.campaign_template x WHERE x.template_id = campaign_from_template.template_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown campaign template "%"', template_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT template_id FROM segments.campaign_templates lists them.';
	END IF;
	new_id := COALESCE(campaign_id, t.template_id);
	ch := @extschema@._check_channel(COALESCE(channel, t.default_channel));
	IF t.signal = 'broadcast' AND broadcast_at IS NULL THEN
		RAISE EXCEPTION 'template "%" is a broadcast: give broadcast_at', template_id
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM @extschema@.create_campaign(new_id, t.signal, t.title, t.signal_segment, t.audience_segments, 'any',
		t.exclude_segments, t.reentry_days, t.holdout_percent, t.max_offer_percent,
		CASE WHEN t.signal = 'broadcast' THEN broadcast_at END);
	UPDATE @extschema@.campaign c SET template_id = t.template_id WHERE c.campaign_id = new_id;
	INSERT INTO @extschema@.campaign_step (campaign_id, step_no, delay, channel, message_key, link, offer_percent, valid_for)
	SELECT new_id, s.step_no,
		   CASE WHEN ch IN ('sms', 'telegram', 'push') THEN COALESCE(s.chat_delay, s.delay) ELSE s.delay END,
		   ch, s.message_key, s.link, s.offer_percent, s.valid_for
	  FROM @extschema@.campaign_template_step s WHERE s.template_id = t.template_id;
	IF activate THEN
		PERFORM @extschema@.set_campaign_status(new_id, 'active');
	END IF;
	RETURN new_id;
END
$$;

COMMENT ON FUNCTION @extschema@.campaign_from_template IS
'Copies a ready-made campaign (see campaign_templates) for one channel; it stays a draft unless activate => true';

-- Restock alerts
CREATE FUNCTION @extschema@.track_stock(product_id pg_catalog.text, in_stock pg_catalog.bool,
	at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._require(product_id, 'product_id'), @extschema@._require(in_stock, 'in_stock'),
			@extschema@._check_time(at, 'at');
	INSERT INTO @extschema@.stock_events (product_id, in_stock, occurred_at) VALUES (product_id, in_stock, at);
	INSERT INTO @extschema@.product_stock AS p (product_id, in_stock, changed_at) VALUES (product_id, in_stock, at)
		ON CONFLICT ON CONSTRAINT product_stock_pkey DO UPDATE SET in_stock = excluded.in_stock, changed_at = excluded.changed_at
		WHERE p.changed_at <= excluded.changed_at;
END
$$;

COMMENT ON FUNCTION @extschema@.track_stock IS 'Records that a product went out of stock (false) or is back (true)';

CREATE FUNCTION @extschema@.track_restock_request(customer_id pg_catalog.text, product_id pg_catalog.text,
	at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._require(customer_id, 'customer_id'), @extschema@._require(product_id, 'product_id'),
			@extschema@._check_time(at, 'at');
	INSERT INTO @extschema@.restock_requests (customer_id, product_id, requested_at) VALUES (customer_id, product_id, at)
		ON CONFLICT ON CONSTRAINT restock_requests_pkey DO UPDATE SET requested_at = excluded.requested_at;
END
$$;

COMMENT ON FUNCTION @extschema@.track_restock_request IS 'Records that a buyer wants to hear when a product is back in stock';

--------------------------------------------------------------------------------
-- Enrollment: signals since the watermark -> one enrollment per buyer and
-- signal.  Each signal reads an indexed time range, so the cost follows the
-- number of signals, not the number of buyers.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._signal_sql(signal pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
-- $1 as_of, $2 from (exclusive), $3 first step's delay, $4 signal segment,
-- $5 broadcast_at, $6 campaign id; rows: customer_id, signal_key, signal_at,
-- cart_id, product_id
RETURN CASE signal
	WHEN 'cart_abandoned' THEN
		$q$SELECT f.customer_id, 'cart:' || f.cart_id || '@' || extract(epoch FROM f.cart_updated_at)::text,
				  f.cart_updated_at, f.cart_id, NULL::text
			 FROM @extschema@.customer_facts f
			WHERE f.cart_id IS NOT NULL AND f.cart_stage IS DISTINCT FROM 'checkout'
			  AND f.cart_updated_at > $2 - $3 AND f.cart_updated_at <= $1 - $3$q$
	WHEN 'checkout_abandoned' THEN
		$q$SELECT f.customer_id, 'checkout:' || f.cart_id || '@' || extract(epoch FROM f.cart_updated_at)::text,
				  f.cart_updated_at, f.cart_id, NULL::text
			 FROM @extschema@.customer_facts f
			WHERE f.cart_id IS NOT NULL AND f.cart_stage = 'checkout'
			  AND f.cart_updated_at > $2 - $3 AND f.cart_updated_at <= $1 - $3$q$
	WHEN 'order_completed' THEN
		$q$SELECT f.customer_id, 'order@' || extract(epoch FROM f.last_order_at)::text, f.last_order_at, NULL::text, NULL::text
			 FROM @extschema@.customer_facts f
			WHERE f.orders > 0 AND f.last_order_at > $2 AND f.last_order_at <= $1$q$
	WHEN 'segment_entered' THEN
		$q$SELECT h.customer_id, 'segment:' || h.segment_id || '@' || extract(epoch FROM h.at)::text, h.at, NULL::text, NULL::text
			 FROM @extschema@.segment_history h
			WHERE h.segment_id = $4 AND h.change = 'enter' AND h.at > $2 AND h.at <= $1
			  AND EXISTS (SELECT FROM @extschema@.segment_membership m
						   WHERE m.segment_id = h.segment_id AND m.customer_id = h.customer_id)$q$
	WHEN 'went_quiet' THEN
		$q$SELECT h.customer_id, 'quiet:' || h.segment_id || '@' || extract(epoch FROM h.at)::text, h.at, NULL::text, NULL::text
			 FROM @extschema@.segment_history h
			WHERE h.segment_id = $4 AND h.change = 'enter' AND h.at > $2 AND h.at <= $1
			  AND EXISTS (SELECT FROM @extschema@.segment_membership m
						   WHERE m.segment_id = h.segment_id AND m.customer_id = h.customer_id)$q$
	WHEN 'broadcast' THEN
		$q$SELECT f.customer_id, 'broadcast', $5, NULL::text, NULL::text
			 FROM @extschema@.customer_facts f
			WHERE $5 <= $1
			  AND NOT EXISTS (SELECT FROM @extschema@.enrollment x WHERE x.campaign_id = $6 AND x.signal_key = 'broadcast')$q$
	WHEN 'product_restocked' THEN
		$q$SELECT r.customer_id, 'restock:' || se.product_id || '@' || extract(epoch FROM se.occurred_at)::text,
				  se.occurred_at, NULL::text, se.product_id
			 FROM @extschema@.stock_events se
			 JOIN @extschema@.restock_requests r ON r.product_id = se.product_id AND r.requested_at <= se.occurred_at
			WHERE se.in_stock AND se.occurred_at > $2 AND se.occurred_at <= $1$q$
	WHEN 'wallet_credit' THEN
		$q$SELECT w.customer_id, 'wallet:' || w.event_id, w.occurred_at, NULL::text, NULL::text
			 FROM @extschema@.wallet_events w
			WHERE w.amount > 0 AND w.occurred_at > $2 AND w.occurred_at <= $1$q$
	WHEN 'referral_shared' THEN
		$q$SELECT r.referrer_id, 'referral:' || r.event_id, r.occurred_at, NULL::text, NULL::text
			 FROM @extschema@.referral_events r
			WHERE r.occurred_at > $2 AND r.occurred_at <= $1$q$
	END;

CREATE FUNCTION @extschema@._enroll(as_of pg_catalog.timestamptz, since pg_catalog.timestamptz)
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	from_t pg_catalog.timestamptz;
	first_no pg_catalog.int4;
	first_delay pg_catalog.interval;
	n pg_catalog.int4;
	total pg_catalog.int4 := 0;
	lookback pg_catalog.interval := @extschema@.setting_value('signal_lookback')::pg_catalog.interval;
BEGIN
	-- FOR SHARE: set_campaign_status() waits for us, and we see its result
	FOR c IN SELECT * FROM @extschema@.campaign x
			  WHERE x.status = 'active' AND (x.starts_at IS NULL OR x.starts_at <= as_of)
				AND (x.expires_at IS NULL OR x.expires_at > as_of)
			  ORDER BY x.priority, x.campaign_id
			  FOR SHARE
	LOOP
		SELECT s.step_no, s.delay INTO first_no, first_delay
		  FROM @extschema@.campaign_step s WHERE s.campaign_id = c.campaign_id ORDER BY s.step_no LIMIT 1;
		CONTINUE WHEN first_no IS NULL;
		-- signals before the campaign was switched on never enroll anyone
		-- the look-back catches events stamped before the last tick but
		-- committed after it read them; signal_key keeps them from enrolling twice
		from_t := COALESCE(GREATEST(since - lookback, c.activated_at, c.starts_at), as_of);
		IF c.signal IN ('cart_abandoned', 'checkout_abandoned') THEN
			-- the buyer came back and left again: the newer abandonment
			-- restarts the sequence instead of being blocked by the old one
			EXECUTE format($q$
				UPDATE @extschema@.enrollment e
				   SET state = 'stopped', stop_reason = 'superseded', next_due_at = NULL, next_step_no = NULL
				  FROM (%s) AS s (customer_id, signal_key, signal_at, cart_id, product_id)
				 WHERE e.campaign_id = $6 AND e.customer_id = s.customer_id AND e.state = 'active'
				   AND e.signal_at < s.signal_at$q$, @extschema@._signal_sql(c.signal))
			USING as_of, from_t, first_delay, c.signal_segment, c.broadcast_at, c.campaign_id;
		END IF;
		EXECUTE format($q$
			INSERT INTO @extschema@.enrollment AS e (campaign_id, customer_id, signal_key, signal_at, enrolled_at,
				holdout, cart_id, product_id, next_step_no, next_due_at)
			SELECT DISTINCT ON (s.customer_id) $6, s.customer_id, s.signal_key, s.signal_at, $1,
				   @extschema@.in_holdout($6, s.customer_id, $7), s.cart_id, s.product_id, $8, s.signal_at + $3
			  FROM (%s) AS s (customer_id, signal_key, signal_at, cart_id, product_id)
			 WHERE (cardinality($9) = 0
					OR CASE WHEN $10 = 'primary'
							THEN EXISTS (SELECT FROM @extschema@.customer_primary_segment p
										  WHERE p.customer_id = s.customer_id AND p.segment_id = ANY ($9))
							ELSE EXISTS (SELECT FROM @extschema@.segment_membership m
										  WHERE m.customer_id = s.customer_id AND m.segment_id = ANY ($9)) END)
			   AND NOT EXISTS (SELECT FROM @extschema@.segment_membership m
								WHERE m.customer_id = s.customer_id AND m.segment_id = ANY ($11))
			   AND NOT EXISTS (SELECT FROM @extschema@.enrollment x
								WHERE x.campaign_id = $6 AND x.customer_id = s.customer_id
								  AND (x.state = 'active'
									   OR (x.enrolled_at > $1 - make_interval(days => $12)
										   AND COALESCE(x.stop_reason, '') NOT IN ('superseded', 'cart_changed', 'cart_emptied'))))
			 ORDER BY s.customer_id, s.signal_at DESC
			ON CONFLICT (campaign_id, customer_id, signal_key) DO NOTHING$q$,
			@extschema@._signal_sql(c.signal))
		USING as_of, from_t, first_delay, c.signal_segment, c.broadcast_at, c.campaign_id, c.holdout_percent,
			  first_no, c.audience_segments, c.audience_mode, c.exclude_segments, c.reentry_days;
		GET DIAGNOSTICS n = ROW_COUNT;
		total := total + n;
	END LOOP;
	RETURN total;
END
$$;

--------------------------------------------------------------------------------
-- Due steps: decide each one (C), queue the sends, move the enrollment on.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._frequency_cap(channel pg_catalog.text, cap_email pg_catalog.interval,
	cap_sms pg_catalog.interval, cap_telegram pg_catalog.interval, cap_push pg_catalog.interval)
RETURNS pg_catalog.interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE channel WHEN 'email' THEN cap_email WHEN 'sms' THEN cap_sms
	WHEN 'telegram' THEN cap_telegram WHEN 'push' THEN cap_push END;

-- links: the link settings, read once per tick by _stop_rule_settings()
CREATE FUNCTION @extschema@._destination(link pg_catalog.text, customer_id pg_catalog.text,
	enrolled_cart pg_catalog.text, current_cart pg_catalog.text, cart_link pg_catalog.text,
	product_id pg_catalog.text, links pg_catalog.jsonb)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN NULLIF(CASE link
	WHEN 'cart' THEN CASE WHEN current_cart = enrolled_cart THEN COALESCE(cart_link, links->>'shop') END
	WHEN 'product' THEN replace(links->>'product', '{product_id}', product_id)
	WHEN 'wallet' THEN links->>'wallet'
	WHEN 'referral' THEN replace(links->>'referral', '{customer_id}', customer_id)
	WHEN 'shop' THEN links->>'shop'
	END, '');

CREATE FUNCTION @extschema@._advance_due(as_of pg_catalog.timestamptz, only_campaign pg_catalog.text DEFAULT NULL,
	OUT due pg_catalog.int4, OUT queued pg_catalog.int4, OUT deferred pg_catalog.int4,
	OUT skipped pg_catalog.int4, OUT channels pg_catalog.text[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	st record;
	r record;
	d @extschema@.step_decision;
	cap pg_catalog.interval;
	max_offer pg_catalog.float8;
	cart pg_catalog.text;
	last_sent pg_catalog.timestamptz;
	got pg_catalog.bool;
	msg pg_catalog.int8;
	next_no pg_catalog.int4;
	next_delay pg_catalog.interval;
	pass pg_catalog.int4 := 0;
	try_no pg_catalog.int4;
	seen pg_catalog.int4;
BEGIN
	SELECT * INTO st FROM @extschema@._stop_rule_settings();
	due := 0; queued := 0; deferred := 0; skipped := 0; channels := '{}';
	-- a step made due by the previous one (catching up after downtime) is
	-- decided in the next pass; a handful of passes covers any campaign
	LOOP
		pass := pass + 1;
		seen := 0;
		FOR r IN
			SELECT e.enrollment_id, e.campaign_id, e.customer_id, e.next_step_no AS step_no, e.signal_at,
				   e.holdout, e.cart_id, e.product_id,
				   c.status, c.expires_at, c.max_offer_percent, c.min_margin_percent,
				   s.channel::pg_catalog.text AS channel, s.message_key, s.link, s.offer_percent,
				   COALESCE(e.step_not_after, e.signal_at + s.delay + COALESCE(s.valid_for, st.step_valid_for)) AS not_after,
				   COALESCE(s.valid_for, st.step_valid_for) AS valid_for,
				   f.last_order_at, f.cart_id AS current_cart, f.cart_updated_at, f.cart_value, f.cart_link,
				   f.last_bounced_at, f.last_complained_at, f.consecutive_ignored, f.time_zone,
				   f.margin, f.net_revenue, f.wallet_balance,
				   cn.granted AS consent, cl.last_queued_at, ps.in_stock,
				   EXISTS (SELECT FROM @extschema@.outbox o
							WHERE o.enrollment_id = e.enrollment_id AND o.step_no = e.next_step_no) AS already_sent
			  FROM @extschema@.enrollment e
			  JOIN @extschema@.campaign c ON c.campaign_id = e.campaign_id
			  LEFT JOIN @extschema@.campaign_step s ON s.campaign_id = e.campaign_id AND s.step_no = e.next_step_no
			  LEFT JOIN @extschema@.customer_facts f ON f.customer_id = e.customer_id
			  LEFT JOIN @extschema@.contact_log cl ON cl.customer_id = e.customer_id AND cl.channel = s.channel
			  LEFT JOIN @extschema@.product_stock ps ON ps.product_id = e.product_id AND s.link = 'product'
			  LEFT JOIN LATERAL (SELECT ce.granted FROM @extschema@.consent_events ce
								  WHERE ce.customer_id = e.customer_id AND ce.channel = s.channel
									AND ce.occurred_at <= as_of
								  ORDER BY ce.occurred_at DESC, ce.event_id DESC LIMIT 1) cn ON true
			 WHERE e.state = 'active' AND e.next_due_at <= as_of AND c.status <> 'paused'
			   AND (only_campaign IS NULL OR e.campaign_id = only_campaign)
			 ORDER BY c.priority, e.next_due_at, e.enrollment_id
			 FOR UPDATE OF e
		LOOP
			seen := seen + 1;
			IF r.message_key IS NULL THEN
				-- the owner deleted or renumbered this step: go on with the next
				-- one, never leave the enrollment stuck
				next_no := NULL;
				SELECT s.step_no, s.delay INTO next_no, next_delay
				  FROM @extschema@.campaign_step s
				 WHERE s.campaign_id = r.campaign_id AND s.step_no > r.step_no ORDER BY s.step_no LIMIT 1;
				UPDATE @extschema@.enrollment e
				   SET state = CASE WHEN next_no IS NULL THEN 'completed' ELSE 'active' END,
					   next_step_no = next_no, next_due_at = r.signal_at + next_delay, step_not_after = NULL
				 WHERE e.enrollment_id = r.enrollment_id;
				CONTINUE;
			END IF;
			due := due + 1;
			cap := @extschema@._frequency_cap(r.channel, st.cap_email, st.cap_sms, st.cap_telegram, st.cap_push);
			-- NULL max_offer_percent: no discounts at all (LEAST would skip the NULL)
			max_offer := CASE WHEN r.max_offer_percent IS NOT NULL AND r.min_margin_percent IS NOT NULL
								   AND r.margin IS NOT NULL AND r.net_revenue > 0
							  THEN LEAST(r.max_offer_percent, r.margin / r.net_revenue * 100 - r.min_margin_percent)
							  ELSE r.max_offer_percent END;
			cart := @extschema@._cart_state(r.cart_id, r.signal_at, r.current_cart, r.cart_updated_at, r.last_order_at);
			last_sent := r.last_queued_at;
			-- decide; a send must take the buyer's cap slot for this channel. The
			-- row lock makes a concurrent campaign wait and then see our slot (no
			-- write skew); the loser decides once more with the holder's time.
			FOR try_no IN 1 .. 2 LOOP
				d := @extschema@.decide_step(as_of, r.status, r.expires_at, r.holdout, r.signal_at, r.last_order_at,
					cart, COALESCE(r.consent, false), r.last_bounced_at, r.last_complained_at,
					r.consecutive_ignored, st.sunset_after, r.already_sent, r.not_after, r.offer_percent, max_offer,
					r.in_stock, false, last_sent, cap, r.time_zone, st.shop_time_zone, st.quiet_start,
					st.quiet_end, st.unknown_zone_margin);
				EXIT WHEN d.decision <> 'send';
				got := NULL;
				INSERT INTO @extschema@.contact_log AS x (customer_id, channel, last_queued_at)
				VALUES (r.customer_id, r.channel, as_of)
				ON CONFLICT (customer_id, channel) DO UPDATE SET last_queued_at = excluded.last_queued_at
				 WHERE x.last_queued_at + cap <= excluded.last_queued_at
				RETURNING true INTO got;
				EXIT WHEN got;
				SELECT x.last_queued_at INTO last_sent FROM @extschema@.contact_log x
				 WHERE x.customer_id = r.customer_id AND x.channel = r.channel;
				-- kept if the second decision is a send again (the holder is in our future)
				d := ROW('defer', 'frequency_cap', last_sent + cap, false)::@extschema@.step_decision;
			END LOOP;
			msg := NULL;
			IF d.decision = 'send' THEN
				INSERT INTO @extschema@.outbox (idempotency_key, enrollment_id, campaign_id, step_no, customer_id, channel,
					message_key, variables, not_before, not_after, created_at)
				VALUES (format('%s:%s:%s:%s', r.campaign_id, r.step_no, r.customer_id, r.enrollment_id),
					r.enrollment_id, r.campaign_id, r.step_no, r.customer_id, r.channel, r.message_key,
					jsonb_strip_nulls(jsonb_build_object(
						'campaign_id', r.campaign_id, 'step_no', r.step_no,
						'link', @extschema@._destination(r.link, r.customer_id, r.cart_id, r.current_cart, r.cart_link, r.product_id,
							st.links),
						'cart_id', r.cart_id,
						'cart_value', CASE WHEN r.cart_id IS NOT NULL THEN r.cart_value END,
						'offer_percent', r.offer_percent, 'product_id', r.product_id,
						'wallet_balance', CASE WHEN r.link = 'wallet' THEN r.wallet_balance END)),
					as_of, r.not_after, as_of)
				ON CONFLICT (idempotency_key) DO NOTHING
				RETURNING message_id INTO msg;
				IF msg IS NOT NULL THEN
					queued := queued + 1;
					IF NOT r.channel = ANY (channels) THEN
						channels := channels || r.channel;
					END IF;
				END IF;
			ELSIF d.decision = 'defer' THEN
				deferred := deferred + 1;
			ELSE
				skipped := skipped + 1;
			END IF;
			INSERT INTO @extschema@.decision_log (enrollment_id, campaign_id, step_no, customer_id, channel, decided_at,
				stage, decision, reason, defer_until, message_id, facts)
			VALUES (r.enrollment_id, r.campaign_id, r.step_no, r.customer_id, r.channel, as_of, 'tick',
				d.decision, d.reason, d.defer_until, msg,
				jsonb_strip_nulls(jsonb_build_object(
					'signal_at', r.signal_at, 'last_order_at', r.last_order_at, 'cart_state', cart,
					'consent', COALESCE(r.consent, false), 'time_zone', r.time_zone,
					'last_sent_on_channel', last_sent, 'frequency_cap', cap,
					'consecutive_ignored', r.consecutive_ignored, 'not_after', r.not_after,
					'offer_percent', r.offer_percent, 'max_offer_percent', max_offer, 'in_stock', r.in_stock,
					'holdout', r.holdout, 'campaign_status', r.status)));
			IF d.decision = 'defer' THEN
				-- defer, never drop: waiting past the step's window moves the
				-- window with it
				UPDATE @extschema@.enrollment e
				   SET next_due_at = d.defer_until,
					   step_not_after = GREATEST(r.not_after, d.defer_until + r.valid_for)
				 WHERE e.enrollment_id = r.enrollment_id;
			ELSIF d.stops_enrollment THEN
				UPDATE @extschema@.enrollment e
				   SET state = 'stopped', stop_reason = d.reason, next_due_at = NULL, next_step_no = NULL
				 WHERE e.enrollment_id = r.enrollment_id;
			ELSE
				next_no := NULL;
				SELECT s.step_no, s.delay INTO next_no, next_delay
				  FROM @extschema@.campaign_step s
				 WHERE s.campaign_id = r.campaign_id AND s.step_no > r.step_no ORDER BY s.step_no LIMIT 1;
				IF next_no IS NULL THEN
					UPDATE @extschema@.enrollment e SET state = 'completed', next_due_at = NULL, next_step_no = NULL
					 WHERE e.enrollment_id = r.enrollment_id;
				ELSE
					UPDATE @extschema@.enrollment e
					   SET next_step_no = next_no, next_due_at = r.signal_at + next_delay, step_not_after = NULL
					 WHERE e.enrollment_id = r.enrollment_id;
				END IF;
			END IF;
		END LOOP;
		EXIT WHEN seen = 0 OR pass >= 10;
	END LOOP;
END
$$;

--------------------------------------------------------------------------------
-- The tick: refresh facts -> evaluate segments -> enroll -> decide due steps
-- -> outbox -> NOTIFY.  Catches up from its own watermark, because pg_cron
-- never re-runs ticks missed while the server was down.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._tick_begin(as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rid pg_catalog.int8;
BEGIN
	-- we hold the tick lock, so a run still marked running died with its backend
	UPDATE @extschema@.tick_runs r
	   SET status = 'failed', finished_at = clock_timestamp(),
		   error = 'interrupted: the server stopped or the backend was killed before the tick finished; its work was rolled back'
	 WHERE r.status = 'running';
	DELETE FROM @extschema@.tick_runs r
	 WHERE r.started_at < clock_timestamp() - @extschema@.setting_value('tick_run_retention')::interval;
	INSERT INTO @extschema@.tick_state DEFAULT VALUES ON CONFLICT DO NOTHING;
	INSERT INTO @extschema@.tick_runs (as_of, watermark_from, started_at, status, backend_pid)
	SELECT as_of, t.watermark, clock_timestamp(), 'running', pg_backend_pid() FROM @extschema@.tick_state t
	RETURNING run_id INTO rid;
	RETURN rid;
END
$$;

CREATE FUNCTION @extschema@._tick_work(run_id pg_catalog.int8, as_of pg_catalog.timestamptz,
	OUT run_status pg_catalog.text, OUT run_enrolled pg_catalog.int4, OUT run_steps_due pg_catalog.int4,
	OUT run_queued pg_catalog.int4, OUT run_deferred pg_catalog.int4, OUT run_skipped pg_catalog.int4,
	OUT run_error pg_catalog.text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	since pg_catalog.timestamptz;
	fr record;
	ev record;
	adv record;
	ch pg_catalog.text;
	code pg_catalog.text;
BEGIN
	BEGIN
		SELECT t.watermark INTO since FROM @extschema@.tick_state t FOR UPDATE;
		SELECT * INTO fr FROM @extschema@.refresh_facts(as_of);
		SELECT * INTO ev FROM @extschema@.evaluate_segments(as_of);
		run_enrolled := @extschema@._enroll(as_of, since);
		SELECT * INTO adv FROM @extschema@._advance_due(as_of);
		run_steps_due := adv.due; run_queued := adv.queued;
		run_deferred := adv.deferred; run_skipped := adv.skipped;
		-- wake the senders of every channel with something to claim
		FOR ch IN SELECT x FROM unnest(ARRAY['email', 'sms', 'telegram', 'push']) x
				   WHERE x = ANY (adv.channels)
					  OR EXISTS (SELECT FROM @extschema@.outbox o
								  WHERE o.channel = x AND o.state = 'ready' AND o.not_before <= as_of)
		LOOP
			PERFORM pg_notify('segments_outbox', ch);
		END LOOP;
		UPDATE @extschema@.tick_state t
		   SET watermark = as_of, last_run_id = _tick_work.run_id;
		UPDATE @extschema@.tick_runs r
		   SET status = 'succeeded', finished_at = clock_timestamp(),
			   customers_refreshed = fr.customers_changed, segment_enters = ev.entered, segment_exits = ev.exited,
			   enrolled = run_enrolled, steps_due = run_steps_due, queued = run_queued,
			   deferred = run_deferred, skipped = run_skipped
		 WHERE r.run_id = _tick_work.run_id;
		run_status := 'succeeded';
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS run_error = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
		run_error := code || ': ' || run_error;
		run_status := 'failed';
		run_enrolled := NULL; run_steps_due := NULL; run_queued := NULL;
		run_deferred := NULL; run_skipped := NULL;
		UPDATE @extschema@.tick_runs r
		   SET status = 'failed', finished_at = clock_timestamp(), error = run_error
		 WHERE r.run_id = _tick_work.run_id;
		RAISE WARNING 'segments tick % failed: %', run_id, run_error;
	END;
END
$$;

CREATE FUNCTION @extschema@.tick(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now(),
	OUT run_id pg_catalog.int8, OUT status pg_catalog.text, OUT enrolled pg_catalog.int4,
	OUT steps_due pg_catalog.int4, OUT queued pg_catalog.int4, OUT deferred pg_catalog.int4,
	OUT skipped pg_catalog.int4, OUT error pg_catalog.text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT pg_try_advisory_xact_lock(hashtext('segments.tick')) THEN
		status := 'skipped';
		error := 'another tick is running';
		RAISE NOTICE 'segments: another tick is running; this one did nothing';
		RETURN;
	END IF;
	run_id := @extschema@._tick_begin(as_of);
	SELECT w.run_status, w.run_enrolled, w.run_steps_due, w.run_queued, w.run_deferred, w.run_skipped, w.run_error
	  INTO status, enrolled, steps_due, queued, deferred, skipped, error
	  FROM @extschema@._tick_work(run_id, as_of) w;
END
$$;

COMMENT ON FUNCTION @extschema@.tick(pg_catalog.timestamptz) IS
'One tick in the caller''s transaction: refresh facts, evaluate segments, enroll, decide due steps, queue messages; a concurrent second tick returns status skipped';

CREATE FUNCTION @extschema@._tick_session_begin(as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- a session lock: run_tick() commits between its stages
	IF NOT pg_try_advisory_lock(hashtext('segments.tick')) THEN
		RAISE NOTICE 'segments: another tick is running; this one did nothing';
		RETURN NULL;
	END IF;
	RETURN @extschema@._tick_begin(as_of);
END
$$;

CREATE FUNCTION @extschema@._tick_session_end()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT NULL::void FROM (SELECT pg_advisory_unlock(hashtext('segments.tick'))) x);

-- No SET clause here: a procedure with one cannot COMMIT.  Every name in the
-- body is schema-qualified instead.
CREATE PROCEDURE @extschema@.run_tick(as_of pg_catalog.timestamptz DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	rid pg_catalog.int8;
	t pg_catalog.timestamptz := COALESCE(as_of, pg_catalog.now());
BEGIN
	rid := @extschema@._tick_session_begin(t);
	IF rid IS NULL THEN
		RETURN;
	END IF;
	-- the run row survives a crash of the work below, marked running; the
	-- next tick records it as failed
	COMMIT;
	BEGIN
		PERFORM @extschema@._tick_work(rid, t);
	EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
		-- _tick_work records its own failures; this is a cancel or a bug:
		-- never leave the session's tick lock behind
		PERFORM @extschema@._tick_session_end();
		RAISE;
	END;
	COMMIT;
	PERFORM @extschema@._tick_session_end();
END
$$;

COMMENT ON PROCEDURE @extschema@.run_tick(pg_catalog.timestamptz) IS
'The tick for pg_cron (CALL segments.run_tick()): logs the run first and commits, so a crash leaves a failed run behind';

--------------------------------------------------------------------------------
-- Outbox API for senders: claim (stop rules checked again, in this very
-- transaction), then ack or fail, fenced by the attempt number.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.claim_messages(channel pg_catalog.text, batch_size pg_catalog.int4 DEFAULT 100,
	consumer pg_catalog.text DEFAULT NULL, at pg_catalog.timestamptz DEFAULT NULL)
RETURNS TABLE (message_id pg_catalog.int8, attempt pg_catalog.int4, customer_id pg_catalog.text,
	message_key pg_catalog.text, variables pg_catalog.jsonb, idempotency_key pg_catalog.text,
	not_after pg_catalog.timestamptz, lease_until pg_catalog.timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	-- the real clock, not the transaction's start: leases and send windows
	-- are about now; "at" is for tests that step the clock
	t pg_catalog.timestamptz := COALESCE(at, clock_timestamp());
	st record;
	lease pg_catalog.interval := @extschema@.setting_value('outbox_lease')::pg_catalog.interval;
	max_attempts pg_catalog.int4 := @extschema@.setting_value('outbox_max_attempts')::pg_catalog.int4;
	ch pg_catalog.text := @extschema@._check_channel(channel);
BEGIN
	IF batch_size IS NULL OR batch_size < 1 OR batch_size > 10000 THEN
		RAISE EXCEPTION 'batch_size must be between 1 and 10000, not %', batch_size
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT * INTO st FROM @extschema@._stop_rule_settings();
	RETURN QUERY
	-- FOR UPDATE returns the rows as they are now, not as of our snapshot: a
	-- lease another claimer took and let expire meanwhile has its raised
	-- attempt here, and the UPDATE below counts on from the row itself
	WITH msgs AS (
		SELECT o.* FROM @extschema@.outbox o
		 WHERE o.channel = ch AND o.state IN ('ready', 'leased') AND o.not_before <= t
		   AND (o.state = 'ready' OR o.lease_until <= t)
		 ORDER BY o.not_before, o.message_id
		 LIMIT batch_size
		 FOR UPDATE SKIP LOCKED),
	-- facts not yet folded in: an order, a cart change or an event committed
	-- since the last tick; wait for the tick rather than guess
	pending AS (
		SELECT DISTINCT cc.key FROM @extschema@.customer_changes cc
		 WHERE cc.key_kind = 'customer' AND cc.key IN (SELECT m.customer_id FROM msgs m)),
	checked AS (
		SELECT m.message_id, m.enrollment_id, m.campaign_id,
			   m.step_no, m.customer_id, d.decision, d.reason, d.defer_until, d.stops_enrollment,
			   jsonb_strip_nulls(jsonb_build_object('last_order_at', f.last_order_at, 'consent', COALESCE(cn.granted, false),
				   'campaign_status', c.status, 'time_zone', f.time_zone, 'facts_pending', m.customer_id IN (SELECT key FROM pending),
				   'not_after', m.not_after, 'attempt', m.attempt)) AS facts
		  FROM msgs m
		  JOIN @extschema@.enrollment e ON e.enrollment_id = m.enrollment_id
		  JOIN @extschema@.campaign c ON c.campaign_id = m.campaign_id
		  LEFT JOIN @extschema@.customer_facts f ON f.customer_id = m.customer_id
		  LEFT JOIN LATERAL (SELECT ce.granted FROM @extschema@.consent_events ce
							  WHERE ce.customer_id = m.customer_id AND ce.channel = m.channel AND ce.occurred_at <= t
							  ORDER BY ce.occurred_at DESC, ce.event_id DESC LIMIT 1) cn ON true
		  CROSS JOIN LATERAL @extschema@.decide_step(t, c.status, c.expires_at, false, e.signal_at, f.last_order_at,
				@extschema@._cart_state(e.cart_id, e.signal_at, f.cart_id, f.cart_updated_at, f.last_order_at),
				COALESCE(cn.granted, false), f.last_bounced_at, f.last_complained_at, f.consecutive_ignored,
				st.sunset_after, false, m.not_after, NULL, NULL, NULL,
				m.customer_id IN (SELECT key FROM pending), NULL, NULL,
				f.time_zone, st.shop_time_zone, st.quiet_start, st.quiet_end, st.unknown_zone_margin) d),
	settled AS (
		UPDATE @extschema@.outbox o
		   SET state = CASE WHEN k.decision = 'send' AND o.attempt >= max_attempts THEN 'dead'
							WHEN k.decision = 'send' THEN 'leased'
							WHEN k.decision = 'defer' THEN 'ready'
							WHEN k.reason = 'step_expired' THEN 'expired'
							ELSE 'cancelled' END,
			   attempt = CASE WHEN k.decision = 'send' AND o.attempt < max_attempts THEN o.attempt + 1
							  ELSE o.attempt END,
			   lease_until = CASE WHEN k.decision = 'send' THEN t + lease END,
			   leased_by = CASE WHEN k.decision = 'send' THEN consumer ELSE o.leased_by END,
			   not_before = CASE WHEN k.decision = 'defer' THEN k.defer_until ELSE o.not_before END,
			   not_after = CASE WHEN k.decision = 'defer'
								THEN GREATEST(o.not_after, k.defer_until + (o.not_after - o.not_before))
								ELSE o.not_after END,
			   last_error = CASE WHEN k.decision = 'send' AND o.attempt >= max_attempts
								 THEN format('lease expired %s times without an acknowledgement', o.attempt)
								 WHEN k.decision = 'skip' THEN k.reason
								 ELSE o.last_error END
		  FROM checked k
		 WHERE o.message_id = k.message_id
		RETURNING o.message_id, o.attempt, o.customer_id, o.channel, o.message_key, o.variables, o.idempotency_key,
				  o.not_after, o.lease_until, o.state, k.decision, k.reason, k.defer_until, k.stops_enrollment,
				  k.enrollment_id, k.campaign_id, k.step_no, k.facts),
	logged AS (
		INSERT INTO @extschema@.decision_log (enrollment_id, campaign_id, step_no, customer_id, channel, decided_at,
			stage, decision, reason, defer_until, message_id, facts)
		SELECT s.enrollment_id, s.campaign_id, s.step_no, s.customer_id, s.channel, t, 'claim',
			   s.decision, COALESCE(s.reason, CASE WHEN s.state = 'dead' THEN 'dead' END), s.defer_until, s.message_id, s.facts
		  FROM settled s
		 WHERE s.decision = 'skip' OR s.state = 'dead' OR (s.decision = 'defer' AND s.reason <> 'facts_pending')),
	stopped AS (
		UPDATE @extschema@.enrollment e
		   SET state = 'stopped', stop_reason = s.reason, next_due_at = NULL, next_step_no = NULL
		  FROM settled s
		 WHERE s.stops_enrollment AND e.enrollment_id = s.enrollment_id AND e.state = 'active'),
	-- a message held back now goes out later: the frequency cap counts from then
	capped AS (
		UPDATE @extschema@.contact_log cl
		   SET last_queued_at = GREATEST(cl.last_queued_at, s.defer_until)
		  FROM settled s
		 WHERE s.decision = 'defer' AND cl.customer_id = s.customer_id AND cl.channel = s.channel)
	SELECT s.message_id, s.attempt, s.customer_id, s.message_key, s.variables, s.idempotency_key,
		   s.not_after, s.lease_until
	  FROM settled s
	 WHERE s.state = 'leased'
	 ORDER BY s.message_id;
END
$$;

COMMENT ON FUNCTION @extschema@.claim_messages IS
'Leases up to batch_size due messages of one channel to a sender; stop rules are checked again first, in this transaction';

CREATE FUNCTION @extschema@.ack_message(message_id pg_catalog.int8, attempt pg_catalog.int4,
	provider_message_id pg_catalog.text DEFAULT NULL, at pg_catalog.timestamptz DEFAULT NULL)
RETURNS pg_catalog.bool
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	o @extschema@.outbox;
BEGIN
	UPDATE @extschema@.outbox x
	   SET state = 'sent', sent_at = COALESCE(at, clock_timestamp()), lease_until = NULL,
		   provider_message_id = ack_message.provider_message_id
	 WHERE x.message_id = ack_message.message_id AND x.attempt = ack_message.attempt AND x.state = 'leased'
	RETURNING * INTO o;
	IF FOUND THEN
		-- feeds messages_sent, consecutive_ignored and the sunset rule
		INSERT INTO @extschema@.engagement_events (customer_id, channel, event, message_id, occurred_at)
		VALUES (o.customer_id, o.channel, 'sent', o.message_id::pg_catalog.text, o.sent_at);
		RETURN true;
	END IF;
	SELECT * INTO o FROM @extschema@.outbox x WHERE x.message_id = ack_message.message_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'outbox message % does not exist', message_id USING ERRCODE = 'no_data_found';
	END IF;
	-- the same acknowledgement again is fine; a stale attempt changes nothing
	RETURN o.state = 'sent' AND o.attempt = ack_message.attempt;
END
$$;

COMMENT ON FUNCTION @extschema@.ack_message IS
'Marks a claimed message sent; false (and nothing changed) when the attempt is stale, i.e. the lease expired and it was claimed again';

CREATE FUNCTION @extschema@.ack_messages(message_ids pg_catalog.int8[], attempts pg_catalog.int4[],
	provider_message_ids pg_catalog.text[] DEFAULT NULL, at pg_catalog.timestamptz DEFAULT NULL)
RETURNS SETOF pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pg_catalog.cardinality(message_ids) IS DISTINCT FROM pg_catalog.cardinality(attempts)
	   OR (provider_message_ids IS NOT NULL
		   AND pg_catalog.cardinality(provider_message_ids) <> pg_catalog.cardinality(message_ids)) THEN
		RAISE EXCEPTION 'message_ids, attempts and provider_message_ids must have the same length'
			USING ERRCODE = 'array_subscript_error';
	END IF;
	RETURN QUERY
	WITH acked AS (
		UPDATE @extschema@.outbox x
		   SET state = 'sent', sent_at = COALESCE(at, clock_timestamp()), lease_until = NULL,
			   provider_message_id = a.provider_id
		  FROM ROWS FROM (pg_catalog.unnest(message_ids), pg_catalog.unnest(attempts),
						  pg_catalog.unnest(provider_message_ids)) AS a (id, attempt, provider_id)
		 WHERE x.message_id = a.id AND x.attempt = a.attempt AND x.state = 'leased'
		RETURNING x.message_id, x.customer_id, x.channel, x.sent_at),
	events AS (
		INSERT INTO @extschema@.engagement_events (customer_id, channel, event, message_id, occurred_at)
		SELECT k.customer_id, k.channel, 'sent', k.message_id::pg_catalog.text, k.sent_at FROM acked k)
	SELECT k.message_id FROM acked k;
END
$$;

COMMENT ON FUNCTION @extschema@.ack_messages IS
'ack_message() for a batch: returns the ids acknowledged now; stale attempts and unknown ids are left out';

CREATE FUNCTION @extschema@.fail_message(message_id pg_catalog.int8, attempt pg_catalog.int4,
	error pg_catalog.text, retry pg_catalog.bool DEFAULT true, at pg_catalog.timestamptz DEFAULT NULL)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	max_attempts pg_catalog.int4 := @extschema@.setting_value('outbox_max_attempts')::pg_catalog.int4;
	backoff pg_catalog.interval := @extschema@.setting_value('outbox_retry_after')::pg_catalog.interval;
	new_state pg_catalog.text;
BEGIN
	UPDATE @extschema@.outbox x
	   SET state = CASE WHEN COALESCE(retry, true) AND x.attempt < max_attempts THEN 'ready' ELSE 'dead' END,
		   not_before = CASE WHEN COALESCE(retry, true) AND x.attempt < max_attempts
							 THEN COALESCE(at, clock_timestamp()) + backoff * power(2, x.attempt - 1) ELSE x.not_before END,
		   lease_until = NULL, last_error = COALESCE(error, 'failed')
	 WHERE x.message_id = fail_message.message_id AND x.attempt = fail_message.attempt AND x.state = 'leased'
	RETURNING x.state INTO new_state;
	IF NOT FOUND THEN
		PERFORM FROM @extschema@.outbox x WHERE x.message_id = fail_message.message_id;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'outbox message % does not exist', message_id USING ERRCODE = 'no_data_found';
		END IF;
		RETURN NULL;	-- stale attempt: nothing changed
	END IF;
	RETURN new_state;
END
$$;

COMMENT ON FUNCTION @extschema@.fail_message IS
'Records a failed send: ready again after a doubling back-off, or dead after outbox_max_attempts or when retry is false; NULL for a stale attempt';

--------------------------------------------------------------------------------
-- Scheduling over pg_cron (optional: manual ticks work without it)
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.schedule_tick(schedule pg_catalog.text DEFAULT '* * * * *',
	job_name pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	name pg_catalog.text := COALESCE(job_name, 'segments-tick-' || current_database());
	command pg_catalog.text := 'CALL @extschema@.run_tick()';
	cron_db pg_catalog.text := current_setting('cron.database_name', true);
	jobid pg_catalog.int8;
BEGIN
	IF current_setting('shared_preload_libraries') !~ '(^|[\s,])"?pg_cron"?($|[\s,])' THEN
		RAISE EXCEPTION 'pg_cron is not loaded in this server'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'shared_preload_libraries does not include pg_cron.',
				  HINT = 'Add pg_cron to shared_preload_libraries, restart, CREATE EXTENSION pg_cron; or call segments.run_tick() from any scheduler.';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('pg_cron runs its jobs from database "%s" (cron.database_name).', COALESCE(cron_db, 'postgres')),
				  HINT = format('In database %s run: SELECT cron.schedule_in_database(%L, %L, %L, %L);',
								COALESCE(cron_db, 'postgres'), name, schedule, command, current_database());
	END IF;
	EXECUTE 'SELECT cron.schedule_in_database(job_name => $1, schedule => $2, command => $3, database => $4)'
	   INTO jobid USING name, schedule, command, current_database();
	RETURN jobid;
END
$$;

COMMENT ON FUNCTION @extschema@.schedule_tick IS
'Schedules CALL segments.run_tick() with pg_cron (default every minute) for this database; returns the job id';

CREATE FUNCTION @extschema@.unschedule_tick(job_name pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.bool
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	name pg_catalog.text := COALESCE(job_name, 'segments-tick-' || current_database());
	found_job pg_catalog.bool;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Unschedule from the cron database: SELECT cron.unschedule(%L);', name);
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)'
	   INTO found_job USING name;
	IF NOT found_job THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT cron.unschedule($1)' USING name;
	RETURN true;
END
$$;

COMMENT ON FUNCTION @extschema@.unschedule_tick IS 'Removes the pg_cron job of schedule_tick(); false when there was none';

--------------------------------------------------------------------------------
-- Explain: why a buyer did or did not get each step of a campaign
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.explain_campaign(customer_id pg_catalog.text, campaign_id pg_catalog.text)
RETURNS TABLE (enrollment_id pg_catalog.int8, signal_key pg_catalog.text, enrolled_at pg_catalog.timestamptz,
	enrollment_state pg_catalog.text, step_no pg_catalog.int4, channel pg_catalog.text,
	decided_at pg_catalog.timestamptz, stage pg_catalog.text, decision pg_catalog.text, reason pg_catalog.text,
	defer_until pg_catalog.timestamptz, message_state pg_catalog.text, facts pg_catalog.jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	c @extschema@.campaign;
	cust pg_catalog.text := customer_id;
	member_of pg_catalog.text[];
BEGIN
	SELECT * INTO c FROM @extschema@.campaign x WHERE x.campaign_id = explain_campaign.campaign_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign "%" does not exist', explain_campaign.campaign_id USING ERRCODE = 'undefined_object';
	END IF;
	RETURN QUERY
	SELECT e.enrollment_id, e.signal_key, e.enrolled_at, COALESCE(e.stop_reason, e.state), dl.step_no, dl.channel,
		   dl.decided_at, dl.stage, dl.decision, dl.reason, dl.defer_until, o.state, COALESCE(dl.facts, '{}')
	  FROM @extschema@.enrollment e
	  LEFT JOIN @extschema@.decision_log dl ON dl.enrollment_id = e.enrollment_id
	  LEFT JOIN @extschema@.outbox o ON o.message_id = dl.message_id
	 WHERE e.customer_id = cust AND e.campaign_id = c.campaign_id
	   AND (dl.decision_id IS NOT NULL OR e.state <> 'active')
	UNION ALL
	SELECT e.enrollment_id, e.signal_key, e.enrolled_at, e.state, e.next_step_no, s.channel::pg_catalog.text,
		   NULL, NULL, 'pending', 'due', e.next_due_at, NULL, '{}'::pg_catalog.jsonb
	  FROM @extschema@.enrollment e
	  JOIN @extschema@.campaign_step s ON s.campaign_id = e.campaign_id AND s.step_no = e.next_step_no
	 WHERE e.customer_id = cust AND e.campaign_id = c.campaign_id AND e.state = 'active'
	 ORDER BY 1, 7 NULLS LAST, 5;
	IF FOUND THEN
		RETURN;
	END IF;
	IF c.audience_mode = 'primary' THEN
		SELECT pg_catalog.array_agg(p.segment_id) INTO member_of
		  FROM @extschema@.customer_primary_segment p WHERE p.customer_id = cust;
	ELSE
		SELECT pg_catalog.array_agg(m.segment_id ORDER BY m.segment_id) INTO member_of
		  FROM @extschema@.segment_membership m WHERE m.customer_id = cust;
	END IF;
	RETURN QUERY SELECT NULL::pg_catalog.int8, NULL::pg_catalog.text, NULL::pg_catalog.timestamptz, 'not_enrolled',
		NULL::pg_catalog.int4, NULL::pg_catalog.text, NULL::pg_catalog.timestamptz, NULL::pg_catalog.text,
		'skip',
		CASE WHEN c.status <> 'active' THEN 'campaign_' || c.status
			 WHEN pg_catalog.cardinality(c.audience_segments) > 0
				  AND NOT COALESCE(member_of && c.audience_segments, false) THEN 'not_in_audience'
			 WHEN COALESCE(member_of && c.exclude_segments, false) THEN 'excluded_segment'
			 ELSE 'no_signal' END,
		NULL::pg_catalog.timestamptz, NULL::pg_catalog.text,
		jsonb_strip_nulls(jsonb_build_object('segments', COALESCE(member_of, '{}'), 'audience', c.audience_segments,
			'exclude', c.exclude_segments, 'signal', c.signal, 'signal_segment', c.signal_segment));
END
$$;

COMMENT ON FUNCTION @extschema@.explain_campaign IS
'For one buyer and campaign: every decision on every step (send, defer, skip) with its reason and facts, or why they were never enrolled';

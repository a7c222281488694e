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
BEGIN
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
			order_parts := order_parts || pg_catalog.format(
				'SELECT %s AS customer_id, %s AS placed_at, %s AS amount, %s AS state, '
				'COALESCE(%s, 0) AS refunded_amount, %s AS discounted, %s AS cost FROM %s t WHERE t.%I IS NOT NULL%s',
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
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
	SELECT customer_id,
		   pg_catalog.min(placed_at) FILTER (WHERE state = ''completed'') AS first_order_at,
		   pg_catalog.max(placed_at) FILTER (WHERE state = ''completed'') AS last_order_at,
		   pg_catalog.count(*) FILTER (WHERE state = ''completed'')::pg_catalog.int4 AS orders,
		   pg_catalog.count(*) FILTER (WHERE state = ''refunded'')::pg_catalog.int4 AS refunded_orders,
		   pg_catalog.count(*) FILTER (WHERE state = ''cancelled'')::pg_catalog.int4 AS cancelled_orders,
		   COALESCE(pg_catalog.sum(amount) FILTER (WHERE state = ''completed''), 0) AS gross_revenue,
		   COALESCE(pg_catalog.sum(refunded_amount) FILTER (WHERE state = ''completed''), 0) AS refunded_amount,
		   pg_catalog.count(*) FILTER (WHERE state = ''completed'' AND discounted)::pg_catalog.int4 AS discounted_orders,
		   pg_catalog.sum(amount - refunded_amount - cost) FILTER (WHERE state = ''completed'' AND cost IS NOT NULL) AS margin,
		   @extschema@.buying_cycle(placed_at) FILTER (WHERE state = ''completed'') AS cycle
	  FROM order_rows GROUP BY customer_id),
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


--------------------------------------------------------------------------------
-- 2. Segment evaluation
--
-- (changes to segment evaluation go here)
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 3. Campaigns
--
-- (campaigns go here)
--------------------------------------------------------------------------------


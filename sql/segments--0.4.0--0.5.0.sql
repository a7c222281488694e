/* segments 0.4.0 -> 0.5.0: reports, attribution, roles, erasure */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.5.0'" to load this file. \quit

/*
 * Data flow: shop tables -> customer facts -> scores -> segment membership
 *            -> campaign steps and stop rules -> outbox -> sender
 *            -> ENGAGEMENT AND ORDERS BACK -> REPORTS
 *
 * This release has these parts, kept in this order:
 *   1. customer facts and the tick: cheaper writes per changed customer
 *   2. attribution: orders of enrolled buyers, credited to the last message
 *   3. report views for BI tools
 *   4. erasure on request
 *   5. roles: reader, app, admin
 *   6. dashboard: one HTML page with SVG charts, made from the report views
 */

--------------------------------------------------------------------------------
-- 1. Customer facts and the tick
--
-- (changes to the facts layer and tick speed go here)
--------------------------------------------------------------------------------

-- Fewer indexes on customer_facts. An order changes a customer's orders,
-- net_revenue, last_order_at and next_change_at, so its facts row is
-- written as a non-HOT update with an entry in every index. The indexes on
-- net_revenue and orders (and margin) were read by one thing only: the
-- hourly breakpoint refresh, to find the customers next to a moved
-- breakpoint. For each of the ~1 000 customers of a busy minute they cost
-- an index entry on a page of its own (the values are spread over the whole
-- index), read and dirtied by the tick. The breakpoint refresh now finds
-- those customers in one sequential scan of the buyers, once an hour, next
-- to the scan that computes the breakpoints. Kept: the key,
-- next_change_at (every tick), last_order_at (the order_completed signal;
-- a new order's entry lands at the right end) and cart_updated_at.
DROP INDEX @extschema@.customer_facts_net_revenue;
DROP INDEX @extschema@.customer_facts_orders;
DROP INDEX @extschema@.customer_facts_margin;

-- The breakpoint ranges no longer have an index to use.
COMMENT ON FUNCTION @extschema@._score_measure_range(pg_catalog.text, pg_catalog.float8, pg_catalog.float8) IS
'Internal: a condition on customer_facts f that holds for the values of a measure between two breakpoints';

-- Recomputes every breakpoint. Where one moved that some rule can notice
-- (it compares a score with a value next to it, or uses the score in any
-- other way), the customers whose value lies between its old and new place
-- can change segment: they are queued for evaluation. Breakpoints no rule
-- reads move without queuing anyone. The customers of every measure are
-- found in one scan of the buyers (the measures are not indexed); a
-- customer near moved breakpoints of two measures is queued once for each,
-- as before. A rule that reads a percentile in any other way than against
-- a value makes all 99 of its breakpoints count: so that a buyer far from
-- every range does not test each of them, a binary search (width_bucket)
-- over the merged ranges, slightly widened, picks the candidates first
-- when a measure has more than 8 ranges; the exact conditions decide.
CREATE OR REPLACE FUNCTION @extschema@.refresh_score_breaks(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1			-- breakpoints go into the statement as text, exactly
AS $$
DECLARE
	m record;
	u record;
	computed pg_catalog.jsonb;
	new_breaks pg_catalog.float8[];
	buyer_count pg_catalog.int8;
	cond pg_catalog.text;
	ranges pg_catalog.int4;
	bounds pg_catalog.float8[];
	tol pg_catalog.float8;
	conds pg_catalog.text[] := '{}';
	queued pg_catalog.int8 := 0;
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
				SELECT pg_catalog.string_agg(@extschema@._score_measure_range(m.measure, LEAST(b.o, b.nw), GREATEST(b.o, b.nw)), ' OR '),
					   pg_catalog.count(*)
				  INTO cond, ranges
				  FROM ROWS FROM (pg_catalog.unnest(m.breaks), pg_catalog.unnest(new_breaks)) WITH ORDINALITY AS b(o, nw, k)
				 WHERE b.o IS DISTINCT FROM b.nw
				   AND (every_break OR b.k::pg_catalog.int4 = ANY (relevant));
				IF cond IS NOT NULL AND ranges <= 8 THEN
					-- a few ranges: testing them is cheaper than the search
					conds := conds || ('(' || cond || ')');
				ELSIF cond IS NOT NULL THEN
					-- the ranges widened past what _score_measure_range()
					-- allows (0.000001 on amounts, a millisecond on times, to
					-- the whole number on order counts) and past float8
					-- rounding, merged where they overlap, as the sorted
					-- bounds lo1, hi1, lo2, hi2, ...: a value is in one when
					-- width_bucket() over them is odd
					tol := CASE WHEN m.measure = 'rfm_recency' THEN 0.01 ELSE 0.00001 END;
					SELECT ARRAY(SELECT v.x
								   FROM (SELECT pg_catalog.min(w.lo) AS lo, pg_catalog.max(w.hi) AS hi
										   FROM (SELECT w.lo, w.hi, pg_catalog.count(*) FILTER (WHERE w.lo > w.prev_hi)
																	  OVER (ORDER BY w.lo, w.hi) AS island
												   FROM (SELECT r.lo, r.hi, pg_catalog.max(r.hi) OVER (ORDER BY r.lo, r.hi
															ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_hi
														   FROM (SELECT CASE WHEN m.measure IN ('orders_percentile', 'rfm_frequency')
																			 THEN pg_catalog.floor(LEAST(b.o, b.nw)) - 0.5
																			 ELSE LEAST(b.o, b.nw) - (tol + pg_catalog.abs(LEAST(b.o, b.nw)) * 1e-12) END AS lo,
																		CASE WHEN m.measure IN ('orders_percentile', 'rfm_frequency')
																			 THEN pg_catalog.ceil(GREATEST(b.o, b.nw)) + 0.5
																			 ELSE GREATEST(b.o, b.nw) + (tol + pg_catalog.abs(GREATEST(b.o, b.nw)) * 1e-12) END AS hi
																   FROM ROWS FROM (pg_catalog.unnest(m.breaks), pg_catalog.unnest(new_breaks))
																		WITH ORDINALITY AS b(o, nw, k)
																  WHERE b.o IS DISTINCT FROM b.nw
																	AND (every_break OR b.k::pg_catalog.int4 = ANY (relevant))) r) w) w
										  GROUP BY w.island) i
								  CROSS JOIN LATERAL (VALUES (1, i.lo), (2, i.hi)) v(n, x)
								  ORDER BY i.lo, v.n)
					  INTO bounds;
					conds := conds || pg_catalog.format('(pg_catalog.width_bucket(%s, %L::pg_catalog.float8[]) %% 2 = 1 AND (%s))',
						@extschema@._score_measure_expr(m.measure), bounds, cond);
				END IF;
			END IF;
		END IF;
	END LOOP;
	IF pg_catalog.cardinality(conds) > 0 THEN
		-- one row per customer and measure whose condition holds
		EXECUTE pg_catalog.format('INSERT INTO @extschema@.evaluation_queue (customer_id)
			SELECT s.customer_id
			  FROM (SELECT f.customer_id, ARRAY[%1$s] AS hits
					  FROM @extschema@.customer_facts f WHERE f.orders > 0 AND (%2$s)) s
			 CROSS JOIN LATERAL pg_catalog.unnest(s.hits) h(hit)
			 WHERE h.hit',
			pg_catalog.array_to_string(conds, ', '), pg_catalog.array_to_string(conds, ' OR '));
		GET DIAGNOSTICS queued = ROW_COUNT;
	END IF;
	UPDATE @extschema@.score_breaks sb
	   SET breaks = @extschema@._jsonb_float8_array(computed->sb.measure),
		   buyers = buyer_count, computed_at = as_of;
	RETURN queued;
END
$$;

COMMENT ON FUNCTION @extschema@.refresh_score_breaks(pg_catalog.timestamptz) IS
'Recomputes percentile and RFM breakpoints over all buyers; queues the customers near a moved breakpoint that some rule can notice (once per measure); returns how many rows it queued';

-- Writes computed facts for the given customers (all when keys is NULL),
-- touching only rows that really change. Returns rows written and removed.
-- Customers no source mentions any more are found as the keys the
-- computation returned no row for (almost always none), not by reading
-- every key's facts row again.
CREATE OR REPLACE FUNCTION @extschema@._write_facts(keys pg_catalog.text[], as_of pg_catalog.timestamptz,
	OUT written pg_catalog.int8, OUT removed pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_indexscan = off
AS $$
DECLARE
	cols pg_catalog.text := @extschema@._facts_columns();
BEGIN
	EXECUTE pg_catalog.format(
		'WITH computed AS (%s),
		 upserted AS (
			INSERT INTO @extschema@.customer_facts AS f (%s) SELECT * FROM computed
			ON CONFLICT (customer_id) DO UPDATE SET (%s) = (%s), refreshed_at = pg_catalog.now()
			WHERE (%s) IS DISTINCT FROM (%s)
			RETURNING 1),
		 gone AS (
			DELETE FROM @extschema@.customer_facts f
			 WHERE f.customer_id = ANY (ARRAY(SELECT k FROM pg_catalog.unnest($1) k
											  EXCEPT SELECT c.customer_id FROM computed c))
			RETURNING 1)
		 SELECT (SELECT pg_catalog.count(*) FROM upserted), (SELECT pg_catalog.count(*) FROM gone)',
		@extschema@._facts_sql(keys IS NOT NULL), cols, cols, @extschema@._facts_columns('excluded.'),
		@extschema@._facts_columns('f.'), @extschema@._facts_columns('excluded.'))
	INTO written, removed
	USING keys, as_of;
END
$$;

COMMENT ON FUNCTION @extschema@._write_facts(pg_catalog.text[], pg_catalog.timestamptz) IS
'Internal: writes the computed facts of the given customers (everyone when NULL) where they changed, removes those no source mentions; returns both counts';

-- the settings 0.4.0 gave it (CREATE OR REPLACE resets them): bitmap heap
-- scans with prefetch for the shop's orders, no JIT
DO $$
BEGIN
	-- platforms without posix_fadvise() accept only 0
	PERFORM pg_catalog.set_config('effective_io_concurrency', '64', true);
	ALTER FUNCTION @extschema@._write_facts(pg_catalog.text[], pg_catalog.timestamptz) SET effective_io_concurrency = 64;
EXCEPTION WHEN invalid_parameter_value THEN
	NULL;
END
$$;

-- The statement that evaluates every enabled segment for the customers in
-- $1 (all when NULL) as of $2, and writes only the differences. 0.5.0: a
-- tick writes the watch rows of its customers with a plain UPDATE and
-- INSERT instead of an upsert (see watch_keyed).
CREATE OR REPLACE FUNCTION @extschema@._evaluation_sql(keyed pg_catalog.bool)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
	rules pg_catalog.text;
	watches pg_catalog.text;
	-- a tick: the rows whose instant moved are updated in place (a join on
	-- the key; no speculative insert and no row lock per row as with ON
	-- CONFLICT), customers without a row are inserted, and only the keys
	-- left without an instant are looked up to be deleted
	watch_keyed pg_catalog.text := $w$watch_moved AS (
	UPDATE @extschema@.segment_watch w SET next_check_at = x.next_check_at
	  FROM watch x
	 WHERE w.customer_id = x.customer_id AND w.customer_id = ANY($1)
	   AND x.next_check_at IS NOT NULL AND w.next_check_at IS DISTINCT FROM x.next_check_at
	RETURNING 1),
watch_new AS (
	INSERT INTO @extschema@.segment_watch AS w (customer_id, next_check_at)
	SELECT x.customer_id, x.next_check_at FROM watch x
	 WHERE x.next_check_at IS NOT NULL
	   AND NOT EXISTS (SELECT FROM @extschema@.segment_watch o
						WHERE o.customer_id = x.customer_id AND o.customer_id = ANY($1))
	ON CONFLICT (customer_id) DO UPDATE SET next_check_at = excluded.next_check_at
	 WHERE w.next_check_at IS DISTINCT FROM excluded.next_check_at
	RETURNING 1),
watch_cleared AS (
	DELETE FROM @extschema@.segment_watch w
	 WHERE w.customer_id = ANY (ARRAY(SELECT k FROM pg_catalog.unnest($1) k
									  EXCEPT SELECT x.customer_id FROM watch x WHERE x.next_check_at IS NOT NULL))
	RETURNING 1),
$w$;
	-- everyone: one anti join against the whole table finds the few rows
	-- that changed, and only those go to the upsert
	watch_all pg_catalog.text := $w$watch_moved AS (SELECT 1 WHERE false),
watch_new AS (
	INSERT INTO @extschema@.segment_watch AS w (customer_id, next_check_at)
	SELECT x.customer_id, x.next_check_at FROM watch x
	 WHERE x.next_check_at IS NOT NULL
	   AND NOT EXISTS (SELECT FROM @extschema@.segment_watch o
						WHERE o.customer_id = x.customer_id AND o.next_check_at = x.next_check_at)
	ON CONFLICT (customer_id) DO UPDATE SET next_check_at = excluded.next_check_at
	 WHERE w.next_check_at IS DISTINCT FROM excluded.next_check_at
	RETURNING 1),
watch_cleared AS (
	DELETE FROM @extschema@.segment_watch w
	 WHERE NOT EXISTS (SELECT FROM watch x WHERE x.customer_id = w.customer_id AND x.next_check_at IS NOT NULL)
	RETURNING 1),
$w$;
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
%6$sfresh AS (
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
	   (SELECT pg_catalog.count(*) FROM watch_moved) + (SELECT pg_catalog.count(*) FROM watch_new)
	   + (SELECT pg_catalog.count(*) FROM watch_cleared)
$sql$,
		@extschema@._segment_facts_sql('$2'),
		CASE WHEN keyed THEN ' WHERE sf.customer_id = ANY($1)' ELSE '' END,
		COALESCE(rules, '''{}''::pg_catalog.text[]'),
		CASE WHEN keyed THEN ' AND m.customer_id = ANY($1)' ELSE '' END,
		COALESCE(watches, 'NULL::pg_catalog.timestamptz'),
		CASE WHEN keyed THEN watch_keyed ELSE watch_all END);
END
$$;

COMMENT ON FUNCTION @extschema@._evaluation_sql(pg_catalog.bool) IS
'Internal: the statement that evaluates every enabled segment for the customers in $1 (everyone when keyed is false) as of $2 and writes the differences';

-- the kept statements were made by the old generator
UPDATE @extschema@.segment_compiled_from SET keyed_sql = NULL, full_sql = NULL;



--------------------------------------------------------------------------------
-- 2. Attribution
--------------------------------------------------------------------------------

-- Attribution answers "which message earned this order?".  Orders live in
-- the shop's tables (any number of attached sources plus tracked_orders), so
-- the orders of buyers who were ever enrolled are copied into
-- campaign_orders by the tick, each with at most one credited message.  The
-- copy is recomputed per buyer whenever refresh_facts() sees the buyer
-- change (a new order, a refund, a click reported late), which is what makes
-- a refund reverse credited revenue and keeps every order credited once.

INSERT INTO @extschema@.setting_default (name, value, value_type, description, rebuilds_facts) VALUES
	('attribution_windows',
	 '{"email": {"click": "5 days", "open": "1 day"}, "sms": {"click": "5 days", "send": "1 day"}, '
	 '"telegram": {"click": "5 days", "send": "1 day"}, "push": {"click": "5 days", "open": "1 day"}}',
	 'pg_catalog.jsonb',
	 'Per channel, how long after a click, an open or a send an order is credited to that message (a touch without a window earns nothing)',
	 false),
	('lift_min_group', '100', 'pg_catalog.int4',
	 'Holdout lift is flagged too small to tell while the treatment or the holdout group has fewer enrollments than this',
	 false);

-- Checks a value of attribution_windows; returns it unchanged.
CREATE FUNCTION @extschema@._check_attribution_windows(windows pg_catalog.jsonb)
RETURNS pg_catalog.jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ch record;
	t record;
	win pg_catalog.interval;
BEGIN
	IF pg_catalog.jsonb_typeof(windows) IS DISTINCT FROM 'object' THEN
		RAISE EXCEPTION 'attribution windows must be a JSON object keyed by channel'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example {"email": {"click": "5 days", "open": "1 day"}, "sms": {"click": "5 days", "send": "1 day"}}.';
	END IF;
	FOR ch IN SELECT * FROM pg_catalog.jsonb_each(windows) LOOP
		IF ch.key NOT IN ('email', 'sms', 'telegram', 'push') OR pg_catalog.jsonb_typeof(ch.value) <> 'object' THEN
			RAISE EXCEPTION 'attribution windows: "%" is not a channel with an object of windows', ch.key
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Channels are email, sms, telegram and push; each maps click, open and send to an interval.';
		END IF;
		FOR t IN SELECT * FROM pg_catalog.jsonb_each(ch.value) LOOP
			IF t.key NOT IN ('click', 'open', 'send') OR pg_catalog.jsonb_typeof(t.value) <> 'string' THEN
				RAISE EXCEPTION 'attribution windows: "%" of channel % is not click, open or send with an interval', t.key, ch.key
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			win := (t.value #>> '{}')::pg_catalog.interval;
			IF win < '0'::pg_catalog.interval OR win > '365 days'::pg_catalog.interval THEN
				RAISE EXCEPTION 'attribution windows: % of channel % must be between 0 and 365 days', t.key, ch.key
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		END LOOP;
	END LOOP;
	RETURN windows;
END
$$;

-- One row per channel and touch with a window.
CREATE FUNCTION @extschema@._attribution_windows()
RETURNS TABLE (channel pg_catalog.text, touch pg_catalog.text, window_length pg_catalog.interval)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT c.key, t.key, (t.value #>> '{}')::pg_catalog.interval
	  FROM pg_catalog.jsonb_each(@extschema@.setting_value('attribution_windows')::pg_catalog.jsonb) c,
		   pg_catalog.jsonb_each(c.value) t
	 WHERE (t.value #>> '{}')::pg_catalog.interval > '0'::pg_catalog.interval;
END;

-- Settings get two hooks, so a release that adds a setting replaces a small
-- function instead of set_setting() and reset_setting() again:
--   _check_setting(name, value, type)  raises if the value is not allowed
--   _setting_changed(name)             what a new value sets off downstream
-- The checks are those of 0.4.0, plus attribution_windows.
CREATE FUNCTION @extschema@._check_setting(setting_name pg_catalog.text, new_value pg_catalog.text,
	value_type pg_catalog.regtype)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- the value must parse as its type (the cast raises the precise error)
	EXECUTE pg_catalog.format('SELECT %L::%s', new_value, value_type);
	IF setting_name = 'shop_time_zone' THEN
		PERFORM pg_catalog.now() AT TIME ZONE new_value;
	ELSIF value_type = 'pg_catalog.interval'::pg_catalog.regtype
		  AND new_value::pg_catalog.interval <= '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'setting "%" must be a positive interval', setting_name
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF value_type = 'pg_catalog.int4'::pg_catalog.regtype AND new_value::pg_catalog.int4 < 0 THEN
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
	ELSIF setting_name = 'attribution_windows' THEN
		PERFORM @extschema@._check_attribution_windows(new_value::pg_catalog.jsonb);
	END IF;
END
$$;

CREATE FUNCTION @extschema@._setting_changed(setting_name pg_catalog.text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF (SELECT d.rebuilds_facts FROM @extschema@.setting_default d WHERE d.name = setting_name) THEN
		-- facts were computed under the old value: the next refresh rebuilds them
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'settings');
	ELSIF setting_name = 'attribution_windows' THEN
		-- credit was given under the old windows: the next tick re-attributes everyone
		INSERT INTO @extschema@.attribution_queue (customer_id) VALUES (NULL);
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.set_setting(setting_name pg_catalog.text, new_value pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	vtype pg_catalog.regtype;
BEGIN
	SELECT d.value_type INTO vtype FROM @extschema@.setting_default d WHERE d.name = setting_name;
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
	PERFORM @extschema@._check_setting(setting_name, new_value, vtype);
	INSERT INTO @extschema@.setting AS s (name, value) VALUES (setting_name, new_value)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, changed_at = pg_catalog.now();
	PERFORM @extschema@._setting_changed(setting_name);
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
	IF FOUND THEN
		PERFORM @extschema@._setting_changed(setting_name);
	END IF;
	RETURN @extschema@.setting_value(setting_name);
END
$$;

CREATE TABLE @extschema@.campaign_orders (
	source pg_catalog.text NOT NULL,
	order_id pg_catalog.text NOT NULL,
	customer_id pg_catalog.text NOT NULL,
	placed_at pg_catalog.timestamptz NOT NULL,
	amount pg_catalog.numeric NOT NULL,
	refunded_amount pg_catalog.numeric NOT NULL DEFAULT 0,
	state pg_catalog.text NOT NULL CHECK (state IN ('completed', 'refunded', 'cancelled', 'other')),
	discounted pg_catalog.bool,
	cost pg_catalog.numeric,
	message_id pg_catalog.int8,
	campaign_id pg_catalog.text,
	step_no pg_catalog.int4,
	channel pg_catalog.text,
	touch pg_catalog.text CHECK (touch IN ('click', 'open', 'send')),
	touch_at pg_catalog.timestamptz,
	offer_percent pg_catalog.numeric,
	attributed_at pg_catalog.timestamptz NOT NULL,
	PRIMARY KEY (source, order_id),
	CHECK ((message_id IS NULL) = (touch IS NULL))
);
CREATE INDEX campaign_orders_customer ON @extschema@.campaign_orders (customer_id, placed_at);
CREATE INDEX campaign_orders_message ON @extschema@.campaign_orders (message_id) WHERE message_id IS NOT NULL;

COMMENT ON TABLE @extschema@.campaign_orders IS
'Orders of buyers who were ever enrolled in a campaign, placed after their first enrollment, each credited to at most one message (kept by pg_dump)';
COMMENT ON COLUMN @extschema@.campaign_orders.source IS 'The orders table the order came from (schema-qualified name)';
COMMENT ON COLUMN @extschema@.campaign_orders.state IS 'completed, refunded, cancelled or other (e.g. pending); only completed orders earn revenue';
COMMENT ON COLUMN @extschema@.campaign_orders.discounted IS 'The order used a discount (NULL: the orders table has no discount column)';
COMMENT ON COLUMN @extschema@.campaign_orders.message_id IS 'The credited message: the last one clicked, opened or sent within its channel''s window before the order';
COMMENT ON COLUMN @extschema@.campaign_orders.touch IS 'What earned the credit: click, open or send';
COMMENT ON COLUMN @extschema@.campaign_orders.offer_percent IS 'The discount the credited step offered, if any';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.campaign_orders', '');

-- Buyers whose orders or engagement changed since the last attribution;
-- NULL asks for every enrolled buyer.  Fed by _facts_refreshed().
CREATE TABLE @extschema@.attribution_queue (
	customer_id pg_catalog.text
);

COMMENT ON TABLE @extschema@.attribution_queue IS
'Enrolled buyers whose orders or engagement changed, waiting for the tick to attribute their orders (a NULL row asks for everyone)';

-- Attribution joins messages to their buyers' later orders by customer.
CREATE INDEX outbox_customer_sent ON @extschema@.outbox (customer_id, sent_at) WHERE state = 'sent';

-- The layers downstream of facts: segment evaluation, and attribution for
-- buyers who were ever enrolled (a semi-join on enrollment_customer, so a
-- shop without campaigns pays nothing).
CREATE OR REPLACE FUNCTION @extschema@._facts_refreshed(keys pg_catalog.text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.evaluation_queue (customer_id)
	SELECT k FROM pg_catalog.unnest(COALESCE(keys, ARRAY[NULL::pg_catalog.text])) k;
	IF keys IS NULL THEN
		INSERT INTO @extschema@.attribution_queue (customer_id) VALUES (NULL);
	ELSE
		INSERT INTO @extschema@.attribution_queue (customer_id)
		SELECT k FROM pg_catalog.unnest(keys) k
		 WHERE EXISTS (SELECT FROM @extschema@.enrollment e WHERE e.customer_id = k);
	END IF;
	PERFORM @extschema@._suppress_returning(keys);
END
$$;

-- Every order of every orders source, normalized (the same status mapping
-- as customer facts); keyed: only the customers in $1; since: only orders
-- placed at or after $3 (an index on (customer, placed_at) then reads only
-- the recent ones).
CREATE FUNCTION @extschema@._order_rows_sql(keyed pg_catalog.bool, since pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	c pg_catalog.jsonb;
	o pg_catalog.jsonb;
	parts pg_catalog.text[] := '{}';
BEGIN
	FOR s IN SELECT * FROM @extschema@.sources x WHERE x.kind = 'orders' ORDER BY x.builtin, x.relation::pg_catalog.oid LOOP
		c := s.columns;
		o := s.options;
		parts := parts || pg_catalog.format(
			'SELECT %L::pg_catalog.text AS source, %s AS order_id, %s AS customer_id, %s AS placed_at, '
			'COALESCE(%s, 0) AS amount, COALESCE(%s, 0) AS refunded_amount, %s AS state, %s AS discounted, %s AS cost '
			'FROM %s t WHERE t.%I IS NOT NULL AND t.%I IS NOT NULL AND t.%I IS NOT NULL%s',
			s.relation::pg_catalog.text,
			@extschema@._column_expr(s.relation, 't', c->>'order_id', 'text', o),
			@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
			@extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o),
			@extschema@._column_expr(s.relation, 't', c->>'amount', 'amount', o),
			@extschema@._column_expr(s.relation, 't', c->>'refunded_amount', 'amount', o),
			CASE WHEN c ? 'status' THEN pg_catalog.format(
				'CASE WHEN %1$s = ANY(%2$L::pg_catalog.text[]) THEN ''completed'' WHEN %1$s = ANY(%3$L::pg_catalog.text[]) THEN ''refunded'' '
				'WHEN %1$s = ANY(%4$L::pg_catalog.text[]) THEN ''cancelled'' ELSE ''other'' END',
				@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o),
				@extschema@._text_array(o->'completed'), @extschema@._text_array(o->'refunded'), @extschema@._text_array(o->'cancelled'))
				ELSE '''completed''' END,
			CASE WHEN c ? 'discount' THEN @extschema@._column_expr(s.relation, 't', c->>'discount', 'flag', o)
				 ELSE 'NULL::pg_catalog.bool' END,
			@extschema@._column_expr(s.relation, 't', c->>'cost', 'amount', o),
			s.relation, c->>'customer', c->>'placed_at', c->>'order_id',
			CASE WHEN keyed THEN pg_catalog.format(' AND t.%I = ANY(%s)', c->>'customer', @extschema@._keys_as(s.key_type, '$1'))
				 ELSE '' END
			|| CASE WHEN since THEN ' AND ' || @extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o) || ' >= $3'
				 ELSE '' END);
	END LOOP;
	RETURN COALESCE(NULLIF(pg_catalog.array_to_string(parts, ' UNION ALL '), ''),
		'SELECT NULL::pg_catalog.text AS source, NULL::pg_catalog.text AS order_id, NULL::pg_catalog.text AS customer_id, '
		'NULL::pg_catalog.timestamptz AS placed_at, NULL::pg_catalog.numeric AS amount, NULL::pg_catalog.numeric AS refunded_amount, '
		'NULL::pg_catalog.text AS state, NULL::pg_catalog.bool AS discounted, NULL::pg_catalog.numeric AS cost WHERE false');
END
$$;

-- Each engagement event (other than sent) with the campaign message it is
-- about: the message it names (our id or the provider's), else the latest
-- one sent to the buyer on that channel before the event.
CREATE VIEW @extschema@._engagement_messages AS
	SELECT ev.event_id, ev.customer_id, ev.channel, ev.event, ev.occurred_at, m.message_id, m.sent_at
	  FROM @extschema@.engagement_events ev
	 CROSS JOIN LATERAL (
		SELECT x.message_id, x.sent_at FROM @extschema@.outbox x
		 WHERE x.customer_id = ev.customer_id AND x.channel = ev.channel AND x.state = 'sent'
		   AND CASE WHEN ev.message_id IS NULL THEN x.sent_at <= ev.occurred_at
					ELSE ev.message_id IN (x.message_id::pg_catalog.text, x.provider_message_id) END
		 ORDER BY x.sent_at DESC, x.message_id DESC LIMIT 1) m
	 WHERE ev.event <> 'sent';

COMMENT ON VIEW @extschema@._engagement_messages IS
'Internal: each engagement event with the campaign message it belongs to';

-- Re-attributes the orders of the given buyers (NULL: every buyer ever
-- enrolled): their orders since their first enrollment's signal, each
-- credited to the latest touch (click, open, send) whose channel window
-- covers it; ties go to the click, then the open, then the newer message.
-- Writes only rows that changed.  Returns the rows written and removed.
CREATE FUNCTION @extschema@._attribute(keys pg_catalog.text[], as_of pg_catalog.timestamptz,
	OUT written pg_catalog.int8, OUT removed pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	earliest pg_catalog.timestamptz;
BEGIN
	IF keys IS NULL THEN
		keys := ARRAY(SELECT DISTINCT e.customer_id FROM @extschema@.enrollment e);
	END IF;
	-- an erased buyer's rows are frozen history under a pseudonym the shop's
	-- tables never hold: never recomputed (that would delete them)
	keys := ARRAY(SELECT k FROM pg_catalog.unnest(keys) k WHERE k NOT LIKE 'erased:%');
	SELECT pg_catalog.min(e.signal_at) INTO earliest FROM @extschema@.enrollment e WHERE e.customer_id = ANY (keys);
	IF earliest IS NULL THEN
		-- nobody of them was ever enrolled (erased meanwhile): drop what we had
		DELETE FROM @extschema@.campaign_orders c WHERE c.customer_id = ANY (keys);
		GET DIAGNOSTICS removed = ROW_COUNT;
		written := 0;
		RETURN;
	END IF;
	EXECUTE pg_catalog.format($q$
		WITH since AS (
			SELECT e.customer_id, pg_catalog.min(e.signal_at) AS since
			  FROM @extschema@.enrollment e WHERE e.customer_id = ANY ($1) GROUP BY 1),
		win AS (SELECT * FROM @extschema@._attribution_windows()),
		-- every touch of these buyers, once; each order then picks its
		-- best touch in one hash join (not a probe per order)
		touches AS MATERIALIZED (
			SELECT m.message_id, m.customer_id, m.campaign_id, m.step_no, m.channel,
				   'send'::pg_catalog.text AS touch, m.sent_at AS touch_at, w.window_length, 3 AS rank
			  FROM @extschema@.outbox m
			  JOIN win w ON w.channel = m.channel AND w.touch = 'send'
			 WHERE m.customer_id = ANY ($1) AND m.state = 'sent'
			UNION ALL
			SELECT m.message_id, m.customer_id, m.campaign_id, m.step_no, m.channel,
				   CASE em.event WHEN 'clicked' THEN 'click' ELSE 'open' END, em.occurred_at, w.window_length,
				   CASE em.event WHEN 'clicked' THEN 1 ELSE 2 END
			  FROM @extschema@._engagement_messages em
			  JOIN @extschema@.outbox m ON m.message_id = em.message_id
			  JOIN win w ON w.channel = m.channel
						AND w.touch = CASE em.event WHEN 'clicked' THEN 'click' ELSE 'open' END
			 WHERE em.customer_id = ANY ($1) AND em.event IN ('opened', 'clicked')),
		fresh AS (
			SELECT DISTINCT ON (o.source, o.order_id)
				   o.source, o.order_id, o.customer_id, o.placed_at, o.amount, o.refunded_amount, o.state,
				   o.discounted, o.cost, t.message_id, t.campaign_id, t.step_no, t.channel, t.touch, t.touch_at,
				   st.offer_percent
			  FROM (%s) o
			  -- strictly after the signal: the order that enrolled a buyer
			  -- (order_completed) is not one the campaign earned
			  JOIN since s ON s.customer_id = o.customer_id AND o.placed_at > s.since
			  LEFT JOIN touches t
				ON t.customer_id = o.customer_id AND t.touch_at <= o.placed_at
			   AND o.placed_at < t.touch_at + t.window_length
			  LEFT JOIN @extschema@.campaign_step st ON st.campaign_id = t.campaign_id AND st.step_no = t.step_no
			 ORDER BY o.source, o.order_id, t.touch_at DESC NULLS LAST, t.rank, t.message_id DESC),
		gone AS (
			DELETE FROM @extschema@.campaign_orders c
			 WHERE c.customer_id = ANY ($1)
			   AND NOT EXISTS (SELECT FROM fresh f WHERE f.source = c.source AND f.order_id = c.order_id)
			RETURNING 1),
		upserted AS (
			INSERT INTO @extschema@.campaign_orders AS c (source, order_id, customer_id, placed_at, amount,
				refunded_amount, state, discounted, cost, message_id, campaign_id, step_no, channel, touch,
				touch_at, offer_percent, attributed_at)
			SELECT f.*, $2 FROM fresh f
			ON CONFLICT (source, order_id) DO UPDATE
			   SET (customer_id, placed_at, amount, refunded_amount, state, discounted, cost, message_id,
					campaign_id, step_no, channel, touch, touch_at, offer_percent, attributed_at)
				 = (excluded.customer_id, excluded.placed_at, excluded.amount, excluded.refunded_amount,
					excluded.state, excluded.discounted, excluded.cost, excluded.message_id, excluded.campaign_id,
					excluded.step_no, excluded.channel, excluded.touch, excluded.touch_at, excluded.offer_percent,
					excluded.attributed_at)
			 WHERE (c.customer_id, c.placed_at, c.amount, c.refunded_amount, c.state, c.discounted, c.cost,
					c.message_id, c.touch, c.touch_at, c.offer_percent)
				   IS DISTINCT FROM
				   (excluded.customer_id, excluded.placed_at, excluded.amount, excluded.refunded_amount,
					excluded.state, excluded.discounted, excluded.cost, excluded.message_id, excluded.touch,
					excluded.touch_at, excluded.offer_percent)
			RETURNING 1)
		SELECT (SELECT pg_catalog.count(*) FROM upserted), (SELECT pg_catalog.count(*) FROM gone)$q$,
		@extschema@._order_rows_sql(true, true))
	INTO written, removed
	USING keys, as_of, earliest;
END
$$;

-- The tick's attribution stage: drains the queue.
CREATE FUNCTION @extschema@._attribute_queued(as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keys pg_catalog.text[];
	everyone pg_catalog.bool;
	a record;
BEGIN
	WITH drained AS (DELETE FROM @extschema@.attribution_queue RETURNING customer_id)
	SELECT pg_catalog.bool_or(d.customer_id IS NULL),
		   pg_catalog.array_agg(DISTINCT d.customer_id) FILTER (WHERE d.customer_id IS NOT NULL)
	  INTO everyone, keys FROM drained d;
	IF everyone IS NULL THEN
		RETURN 0;
	END IF;
	SELECT * INTO a FROM @extschema@._attribute(CASE WHEN everyone THEN NULL ELSE keys END, as_of);
	RETURN a.written + a.removed;
END
$$;

CREATE FUNCTION @extschema@.reattribute(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a record;
BEGIN
	-- a running tick finishes first (its newer rows would be overwritten)
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('segments.tick'));
	DELETE FROM @extschema@.attribution_queue;
	SELECT * INTO a FROM @extschema@._attribute(NULL, as_of);
	RETURN a.written + a.removed;
END
$$;

COMMENT ON FUNCTION @extschema@.reattribute(pg_catalog.timestamptz) IS
'Attributes the orders of every buyer ever enrolled again, from the current orders, messages and engagement; returns the rows changed';

ALTER TABLE @extschema@.tick_runs ADD COLUMN orders_attributed pg_catalog.int4;
COMMENT ON COLUMN @extschema@.tick_runs.orders_attributed IS 'campaign_orders rows written or removed by the attribution stage';

-- The tick as in 0.4.0, with attribution after enrollment (so the buyers
-- enrolled by this tick are attributed from their signal on).
CREATE OR REPLACE FUNCTION @extschema@._tick_work(run_id pg_catalog.int8, as_of pg_catalog.timestamptz,
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
	attributed pg_catalog.int8;
	last_enrollment pg_catalog.int8;
	attribution_error pg_catalog.text;
	ch pg_catalog.text;
	code pg_catalog.text;
BEGIN
	BEGIN
		SELECT t.watermark INTO since FROM @extschema@.tick_state t FOR UPDATE;
		SELECT * INTO fr FROM @extschema@.refresh_facts(as_of);
		SELECT * INTO ev FROM @extschema@.evaluate_segments(as_of);
		SELECT pg_catalog.max(e.enrollment_id) INTO last_enrollment FROM @extschema@.enrollment e;
		run_enrolled := @extschema@._enroll(as_of, since);
		-- buyers enrolled just now: their orders since the signal count for
		-- lift from the start (only this tick inserts enrollments, under the
		-- tick lock, in this transaction: ids above the old maximum are ours)
		INSERT INTO @extschema@.attribution_queue (customer_id)
		SELECT DISTINCT e.customer_id FROM @extschema@.enrollment e
		 WHERE e.enrollment_id > COALESCE(last_enrollment, 0);
		-- attribution reads the shop's orders tables: a surprise there must
		-- not stop messages; the queue stays for the next tick
		BEGIN
			attributed := @extschema@._attribute_queued(as_of);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS attribution_error = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
			attribution_error := 'attribution failed: ' || code || ': ' || attribution_error;
			RAISE WARNING 'segments tick %: %', run_id, attribution_error;
		END;
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
			   orders_attributed = attributed, error = attribution_error,
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




--------------------------------------------------------------------------------
-- 3. Report views
--------------------------------------------------------------------------------

-- Plain views for BI tools: stable names and types, one COMMENT per view and
-- column, no personal data (no customer ids, addresses or profile columns):
-- the reader role gets these and nothing else.  Days are the shop's days
-- (setting shop_time_zone).  Internal views (leading underscore) hold the
-- joins several reports share.

-- One row: the settings reports read (inlined, so readers need no access to
-- the settings tables).
CREATE VIEW @extschema@._report_settings AS
	SELECT pg_catalog.max(s.value) FILTER (WHERE s.name = 'shop_time_zone') AS time_zone,
		   pg_catalog.max(s.value) FILTER (WHERE s.name = 'attribution_windows')::pg_catalog.jsonb AS windows,
		   pg_catalog.max(s.value) FILTER (WHERE s.name = 'lift_min_group')::pg_catalog.int4 AS lift_min_group,
		   pg_catalog.max(s.value) FILTER (WHERE s.name = 'cart_abandon_after')::pg_catalog.interval AS cart_abandon_after,
		   pg_catalog.max(s.value) FILTER (WHERE s.name = 'checkout_abandon_after')::pg_catalog.interval AS checkout_abandon_after
	  FROM @extschema@.settings s;

COMMENT ON VIEW @extschema@._report_settings IS 'Internal: the settings the report views use, in one row';

-- Per campaign: how long after the signal an order still counts for lift:
-- the last step's delay plus the longest click window of its channels.
CREATE VIEW @extschema@._campaign_windows AS
	SELECT st.campaign_id,
		   pg_catalog.justify_hours(pg_catalog.max(st.delay)
			   + COALESCE(pg_catalog.max((r.windows -> st.channel ->> 'click')::pg_catalog.interval),
						  '0'::pg_catalog.interval)) AS conversion_window
	  FROM @extschema@.campaign_step st CROSS JOIN @extschema@._report_settings r
	 GROUP BY st.campaign_id;

COMMENT ON VIEW @extschema@._campaign_windows IS 'Internal: each campaign''s conversion window for holdout lift';

-- Every sent message with what came of it.
CREATE VIEW @extschema@._message_outcomes AS
	SELECT m.message_id, m.campaign_id, m.step_no, m.channel, m.customer_id, m.enrollment_id, m.sent_at,
		   (m.sent_at AT TIME ZONE r.time_zone)::pg_catalog.date AS day,
		   COALESCE(e.delivered, false) AS delivered, COALESCE(e.opened, false) AS opened,
		   COALESCE(e.clicked, false) AS clicked, COALESCE(e.complained, false) AS complained,
		   o.message_id IS NOT NULL AS opted_out,
		   COALESCE(c.orders, 0) AS credited_orders, COALESCE(c.revenue, 0) AS revenue,
		   COALESCE(c.refunded, 0) AS refunded, COALESCE(c.discount_cost, 0) AS discount_cost, c.margin
	  FROM @extschema@.outbox m
	 CROSS JOIN @extschema@._report_settings r
	  LEFT JOIN (SELECT em.message_id,
						pg_catalog.bool_or(em.event = 'delivered') AS delivered,
						pg_catalog.bool_or(em.event IN ('opened', 'clicked')) AS opened,
						pg_catalog.bool_or(em.event = 'clicked') AS clicked,
						pg_catalog.bool_or(em.event = 'complained') AS complained
				   FROM @extschema@._engagement_messages em GROUP BY em.message_id) e ON e.message_id = m.message_id
	  -- each consent withdrawal goes to the latest message on its channel
	  -- before it, if within the channel's click window (a probe per
	  -- withdrawal, not per message)
	  LEFT JOIN (SELECT DISTINCT lm.message_id
				   FROM @extschema@.consent_events ce
				  CROSS JOIN @extschema@._report_settings rs
				  CROSS JOIN LATERAL (
					SELECT x.message_id, x.sent_at FROM @extschema@.outbox x
					 WHERE x.customer_id = ce.customer_id AND x.channel = ce.channel AND x.state = 'sent'
					   AND x.sent_at <= ce.occurred_at
					 ORDER BY x.sent_at DESC, x.message_id DESC LIMIT 1) lm
				  WHERE NOT ce.granted AND ce.source IS DISTINCT FROM 'erased: imported again'
					AND ce.occurred_at < lm.sent_at + COALESCE((rs.windows -> ce.channel ->> 'click')::pg_catalog.interval,
															   '1 day'::pg_catalog.interval)) o
		ON o.message_id = m.message_id
	  LEFT JOIN (SELECT o.message_id,
						pg_catalog.count(*) FILTER (WHERE o.state = 'completed') AS orders,
						COALESCE(pg_catalog.sum(o.amount - o.refunded_amount) FILTER (WHERE o.state = 'completed'), 0) AS revenue,
						COALESCE(pg_catalog.sum(CASE WHEN o.state = 'completed' THEN o.refunded_amount
													 WHEN o.state = 'refunded' THEN o.amount ELSE 0 END), 0) AS refunded,
						COALESCE(pg_catalog.sum((o.amount - o.refunded_amount) * o.offer_percent / (100 - o.offer_percent))
							FILTER (WHERE o.state = 'completed' AND o.offer_percent < 100 AND o.discounted IS NOT false), 0) AS discount_cost,
						pg_catalog.sum(o.amount - o.refunded_amount - o.cost) FILTER (WHERE o.state = 'completed') AS margin
				   FROM @extschema@.campaign_orders o WHERE o.message_id IS NOT NULL GROUP BY o.message_id) c
		ON c.message_id = m.message_id
	 WHERE m.state = 'sent';

COMMENT ON VIEW @extschema@._message_outcomes IS 'Internal: every sent message with its engagement, opt-out and credited orders';

CREATE VIEW @extschema@.report_campaign_steps_daily AS
	SELECT x.campaign_id, x.step_no, x.channel, x.day,
		   pg_catalog.count(*) AS sent,
		   pg_catalog.count(*) FILTER (WHERE x.delivered) AS delivered,
		   pg_catalog.count(*) FILTER (WHERE x.opened) AS opened,
		   pg_catalog.count(*) FILTER (WHERE x.clicked) AS clicked,
		   pg_catalog.sum(x.credited_orders)::pg_catalog.int8 AS credited_orders,
		   pg_catalog.sum(x.revenue) AS revenue,
		   pg_catalog.sum(x.refunded) AS refunded,
		   pg_catalog.sum(x.revenue) / pg_catalog.count(DISTINCT x.customer_id) AS revenue_per_recipient,
		   (pg_catalog.count(DISTINCT x.customer_id) FILTER (WHERE x.credited_orders > 0))::pg_catalog.float8
			 / pg_catalog.count(DISTINCT x.customer_id) AS conversion_rate,
		   pg_catalog.sum(x.revenue) / NULLIF(pg_catalog.sum(x.credited_orders), 0) AS aov,
		   pg_catalog.sum(x.discount_cost) AS discount_cost,
		   pg_catalog.sum(x.margin) AS credited_margin,
		   pg_catalog.count(*) FILTER (WHERE x.opted_out) AS opt_outs,
		   pg_catalog.count(*) FILTER (WHERE x.complained) AS complaints
	  FROM @extschema@._message_outcomes x
	 GROUP BY x.campaign_id, x.step_no, x.channel, x.day;

CREATE VIEW @extschema@.report_decisions_daily AS
	SELECT (d.decided_at AT TIME ZONE r.time_zone)::pg_catalog.date AS day, d.campaign_id, d.step_no, d.channel,
		   d.stage, d.decision, COALESCE(d.reason, '') AS reason,
		   pg_catalog.count(*) AS decisions, pg_catalog.count(DISTINCT d.enrollment_id) AS enrollments
	  FROM @extschema@.decision_log d CROSS JOIN @extschema@._report_settings r
	 WHERE d.decision IN ('skip', 'defer')
	 GROUP BY 1, d.campaign_id, d.step_no, d.channel, d.stage, d.decision, COALESCE(d.reason, '');

CREATE VIEW @extschema@.report_campaigns AS
	SELECT c.campaign_id, c.title, c.signal, c.status, c.holdout_percent,
		   COALESCE(e.enrolled, 0) AS enrolled, COALESCE(e.holdout, 0) AS holdout,
		   COALESCE(m.recipients, 0) AS recipients, COALESCE(m.sent, 0) AS sent,
		   COALESCE(d.skipped, 0) AS skipped, COALESCE(d.deferred, 0) AS deferred,
		   COALESCE(m.delivered, 0) AS delivered, COALESCE(m.opened, 0) AS opened, COALESCE(m.clicked, 0) AS clicked,
		   COALESCE(m.credited_orders, 0) AS credited_orders, COALESCE(m.revenue, 0) AS revenue,
		   COALESCE(m.refunded, 0) AS refunded,
		   m.revenue / NULLIF(m.recipients, 0) AS revenue_per_recipient,
		   m.converted::pg_catalog.float8 / NULLIF(m.recipients, 0) AS conversion_rate,
		   m.revenue / NULLIF(m.credited_orders, 0) AS aov,
		   COALESCE(m.discount_cost, 0) AS discount_cost, m.margin AS credited_margin,
		   COALESCE(m.opt_outs, 0) AS opt_outs, COALESCE(m.complaints, 0) AS complaints
	  FROM @extschema@.campaign c
	  LEFT JOIN (SELECT x.campaign_id, pg_catalog.count(*) AS enrolled, pg_catalog.count(*) FILTER (WHERE x.holdout) AS holdout
				   FROM @extschema@.enrollment x GROUP BY 1) e ON e.campaign_id = c.campaign_id
	  LEFT JOIN (SELECT x.campaign_id, pg_catalog.count(DISTINCT x.customer_id) AS recipients, pg_catalog.count(*) AS sent,
						pg_catalog.count(*) FILTER (WHERE x.delivered) AS delivered,
						pg_catalog.count(*) FILTER (WHERE x.opened) AS opened,
						pg_catalog.count(*) FILTER (WHERE x.clicked) AS clicked,
						pg_catalog.sum(x.credited_orders)::pg_catalog.int8 AS credited_orders,
						pg_catalog.count(DISTINCT x.customer_id) FILTER (WHERE x.credited_orders > 0) AS converted,
						pg_catalog.sum(x.revenue) AS revenue, pg_catalog.sum(x.refunded) AS refunded,
						pg_catalog.sum(x.discount_cost) AS discount_cost, pg_catalog.sum(x.margin) AS margin,
						pg_catalog.count(*) FILTER (WHERE x.opted_out) AS opt_outs,
						pg_catalog.count(*) FILTER (WHERE x.complained) AS complaints
				   FROM @extschema@._message_outcomes x GROUP BY 1) m ON m.campaign_id = c.campaign_id
	  LEFT JOIN (SELECT x.campaign_id, pg_catalog.count(*) FILTER (WHERE x.decision = 'skip') AS skipped,
						pg_catalog.count(*) FILTER (WHERE x.decision = 'defer') AS deferred
				   FROM @extschema@.decision_log x GROUP BY 1) d ON d.campaign_id = c.campaign_id;

-- Holdout lift: every enrollment (treatment or holdout, sent or not) with
-- the completed orders its buyer placed within the campaign's conversion
-- window after the signal; the difference between the groups is what the
-- campaign caused.  95 % intervals: normal approximation for the difference
-- of two proportions, Welch for the difference of two means.
CREATE VIEW @extschema@._enrollment_outcomes AS
	SELECT e.enrollment_id, e.campaign_id, e.holdout, w.conversion_window,
		   COALESCE(o.orders, 0) > 0 AS converted, COALESCE(o.revenue, 0) AS revenue
	  FROM @extschema@.enrollment e
	  JOIN @extschema@._campaign_windows w ON w.campaign_id = e.campaign_id
	  LEFT JOIN LATERAL (
		SELECT pg_catalog.count(*) AS orders, pg_catalog.sum(co.amount - co.refunded_amount) AS revenue
		  FROM @extschema@.campaign_orders co
		 WHERE co.customer_id = e.customer_id AND co.state = 'completed'
		   AND co.placed_at > e.signal_at AND co.placed_at <= e.signal_at + w.conversion_window) o ON true;

COMMENT ON VIEW @extschema@._enrollment_outcomes IS 'Internal: each enrollment with its conversion and revenue in the conversion window';

CREATE VIEW @extschema@.report_holdout_lift AS
	WITH g AS (
		SELECT x.campaign_id, pg_catalog.max(x.conversion_window) AS conversion_window,
			   pg_catalog.count(*) FILTER (WHERE NOT x.holdout) AS nt,
			   pg_catalog.count(*) FILTER (WHERE x.holdout) AS nh,
			   pg_catalog.count(*) FILTER (WHERE NOT x.holdout AND x.converted) AS ct,
			   pg_catalog.count(*) FILTER (WHERE x.holdout AND x.converted) AS ch,
			   COALESCE(pg_catalog.sum(x.revenue) FILTER (WHERE NOT x.holdout), 0) AS rt,
			   COALESCE(pg_catalog.sum(x.revenue) FILTER (WHERE x.holdout), 0) AS rh,
			   COALESCE(pg_catalog.var_samp(x.revenue::pg_catalog.float8) FILTER (WHERE NOT x.holdout), 0) AS vt,
			   COALESCE(pg_catalog.var_samp(x.revenue::pg_catalog.float8) FILTER (WHERE x.holdout), 0) AS vh
		  FROM @extschema@._enrollment_outcomes x GROUP BY x.campaign_id),
	s AS (
		SELECT g.*, g.ct::pg_catalog.float8 / NULLIF(g.nt, 0) AS pt, g.ch::pg_catalog.float8 / NULLIF(g.nh, 0) AS ph,
			   g.rt / NULLIF(g.nt, 0) AS mt, g.rh / NULLIF(g.nh, 0) AS mh
		  FROM g),
	l AS (
		SELECT s.*, s.pt - s.ph AS dp,
			   1.959964 * pg_catalog.sqrt(s.pt * (1 - s.pt) / NULLIF(s.nt, 0) + s.ph * (1 - s.ph) / NULLIF(s.nh, 0)) AS ep,
			   s.mt - s.mh AS dm,
			   1.959964 * pg_catalog.sqrt(s.vt / NULLIF(s.nt, 0) + s.vh / NULLIF(s.nh, 0)) AS em
		  FROM s)
	SELECT l.campaign_id, l.conversion_window,
		   l.nt AS treatment_enrollments, l.nh AS holdout_enrollments,
		   l.ct AS treatment_conversions, l.ch AS holdout_conversions,
		   l.pt AS treatment_conversion_rate, l.ph AS holdout_conversion_rate,
		   l.dp AS conversion_lift, l.dp / NULLIF(l.ph, 0) AS conversion_lift_relative,
		   l.dp - l.ep AS conversion_lift_low, l.dp + l.ep AS conversion_lift_high,
		   l.rt AS treatment_revenue, l.rh AS holdout_revenue,
		   l.mt AS treatment_revenue_per_enrollment, l.mh AS holdout_revenue_per_enrollment,
		   l.dm AS revenue_lift, l.dm / NULLIF(l.mh, 0) AS revenue_lift_relative,
		   l.dm - l.em::pg_catalog.numeric AS revenue_lift_low, l.dm + l.em::pg_catalog.numeric AS revenue_lift_high,
		   l.dm * l.nt AS incremental_revenue,
		   (l.nt < r.lift_min_group OR l.nh < r.lift_min_group) AS too_small_to_tell,
		   COALESCE(l.nt >= r.lift_min_group AND l.nh >= r.lift_min_group
					AND (l.dp - l.ep > 0 OR l.dp + l.ep < 0), false) AS conversion_lift_significant
	  FROM l CROSS JOIN @extschema@._report_settings r;

CREATE VIEW @extschema@.report_segments AS
	WITH total AS (SELECT pg_catalog.count(*) AS customers FROM @extschema@.customer_facts),
	members AS (
		SELECT m.segment_id, pg_catalog.count(*) AS members,
			   pg_catalog.count(*) FILTER (WHERE f.orders > 0) AS buyers,
			   pg_catalog.count(*) FILTER (WHERE f.orders > 1) AS repeat_buyers,
			   pg_catalog.sum(f.net_revenue) AS revenue, pg_catalog.sum(f.orders) AS orders,
			   pg_catalog.count(o.customer_id) AS opted_out
		  FROM @extschema@.segment_membership m
		  JOIN @extschema@.customer_facts f ON f.customer_id = m.customer_id
		  -- one hashed set of everyone who ever withdrew consent, not a probe per membership
		  LEFT JOIN (SELECT DISTINCT ce.customer_id FROM @extschema@.consent_events ce
					  WHERE NOT ce.granted AND ce.source IS DISTINCT FROM 'erased: imported again') o
			ON o.customer_id = m.customer_id
		 GROUP BY m.segment_id)
	SELECT z.segment_id, z.title, z.kind, z.priority, z.enabled,
		   COALESCE(n.members, 0) AS members, z.primary_members,
		   COALESCE(n.members, 0)::pg_catalog.float8 / NULLIF(t.customers, 0) AS share,
		   COALESCE(n.revenue, 0) AS revenue, n.revenue / NULLIF(n.orders, 0) AS aov,
		   COALESCE(n.buyers, 0) AS buyers,
		   n.repeat_buyers::pg_catalog.float8 / NULLIF(n.buyers, 0) AS repeat_purchase_rate,
		   n.opted_out::pg_catalog.float8 / NULLIF(n.members, 0) AS opt_out_rate,
		   z.too_small, z.min_size
	  FROM @extschema@.segment_sizes z CROSS JOIN total t
	  LEFT JOIN members n ON n.segment_id = z.segment_id;

CREATE VIEW @extschema@.report_segment_flow_weekly AS
	SELECT pg_catalog.date_trunc('week', x.at AT TIME ZONE r.time_zone)::pg_catalog.date AS week,
		   x.segment_id AS from_segment, n.segment_id AS to_segment, pg_catalog.count(DISTINCT x.customer_id) AS customers
	  FROM @extschema@.segment_history x
	  JOIN @extschema@.segment_history n
		ON n.evaluation_id = x.evaluation_id AND n.customer_id = x.customer_id AND n.change = 'enter'
	 CROSS JOIN @extschema@._report_settings r
	 WHERE x.change = 'exit'
	 GROUP BY 1, 2, 3;

CREATE VIEW @extschema@.report_rfm_grid AS
	WITH cells AS (
		SELECT f.rfm_recency, f.rfm_frequency, pg_catalog.count(*) AS customers, pg_catalog.sum(f.net_revenue) AS revenue,
			   pg_catalog.avg(f.rfm_monetary)::pg_catalog.float8 AS monetary_score
		  FROM @extschema@.segment_facts f WHERE f.orders > 0 GROUP BY 1, 2)
	SELECT r.r AS recency_score, q.f AS frequency_score, COALESCE(c.customers, 0) AS customers,
		   COALESCE(c.customers, 0)::pg_catalog.float8 / NULLIF(pg_catalog.sum(c.customers) OVER (), 0) AS share,
		   COALESCE(c.revenue, 0) AS revenue, c.monetary_score
	  FROM pg_catalog.generate_series(1, 5) r (r)
	 CROSS JOIN pg_catalog.generate_series(1, 5) q (f)
	  LEFT JOIN cells c ON c.rfm_recency = r.r AND c.rfm_frequency = q.f;

-- Carts per day come from every carts source (the shop's tables and
-- tracked_carts): a function reading them as the extension's owner, which
-- returns counts only.
CREATE FUNCTION @extschema@.cart_funnel_daily()
RETURNS TABLE (day pg_catalog.date, carts_started pg_catalog.int8, checkouts_started pg_catalog.int8,
			   carts_converted pg_catalog.int8, carts_abandoned pg_catalog.int8, abandoned_value pg_catalog.numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	c pg_catalog.jsonb;
	o pg_catalog.jsonb;
	parts pg_catalog.text[] := '{}';
	r record;
BEGIN
	SELECT * INTO r FROM @extschema@._report_settings;
	FOR s IN SELECT * FROM @extschema@.sources x WHERE x.kind = 'carts' ORDER BY x.builtin, x.relation::pg_catalog.oid LOOP
		c := s.columns;
		o := s.options;
		parts := parts || pg_catalog.format(
			'SELECT %s AS created_at, %s AS updated_at, %s AS value, %s AS checkout, '
			'(%s IS NOT NULL OR %s = ANY(%L::pg_catalog.text[])) AS converted, '
			'(%s = ANY(%L::pg_catalog.text[]) OR COALESCE(%s, 0) <= 0) AS emptied FROM %s t WHERE t.%I IS NOT NULL',
			@extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o),
			@extschema@._column_expr(s.relation, 't', c->>'updated_at', 'time', o),
			@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
			CASE WHEN c ? 'stage' THEN pg_catalog.format('COALESCE(%s = ANY(%L::pg_catalog.text[]), false)',
				@extschema@._column_expr(s.relation, 't', c->>'stage', 'text', o),
				COALESCE(@extschema@._text_array(o->'checkout_stages'), '{checkout}')) ELSE 'false' END,
			@extschema@._column_expr(s.relation, 't', c->>'converted_order', 'raw', o),
			@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'converted'),
			@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'emptied'),
			@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
			s.relation, c->>'cart_id');
	END LOOP;
	IF pg_catalog.cardinality(parts) = 0 THEN
		RETURN;
	END IF;
	RETURN QUERY EXECUTE pg_catalog.format(
		'SELECT (k.created_at AT TIME ZONE $1)::pg_catalog.date, pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE k.checkout),
				pg_catalog.count(*) FILTER (WHERE k.converted),
				pg_catalog.count(*) FILTER (WHERE NOT k.converted AND NOT COALESCE(k.emptied, false) AND k.updated_at
					+ CASE WHEN k.checkout THEN $3 ELSE $2 END <= pg_catalog.now()),
				COALESCE(pg_catalog.sum(k.value) FILTER (WHERE NOT k.converted AND NOT COALESCE(k.emptied, false) AND k.updated_at
					+ CASE WHEN k.checkout THEN $3 ELSE $2 END <= pg_catalog.now()), 0)
		   FROM (%s) k GROUP BY 1', pg_catalog.array_to_string(parts, ' UNION ALL '))
	USING r.time_zone, r.cart_abandon_after, r.checkout_abandon_after;
END
$$;

COMMENT ON FUNCTION @extschema@.cart_funnel_daily() IS
'Carts and checkouts started per shop day across every carts source, with how many converted and how many were abandoned (counts only)';

-- Cart campaigns' enrollments with the credited orders of their messages.
CREATE VIEW @extschema@._cart_enrollments AS
	SELECT e.enrollment_id, e.campaign_id, e.holdout, e.signal_at,
		   (e.signal_at AT TIME ZONE r.time_zone)::pg_catalog.date AS day,
		   EXISTS (SELECT FROM @extschema@.outbox m WHERE m.enrollment_id = e.enrollment_id AND m.state = 'sent') AS messaged,
		   rec.step_no AS recovered_by_step, rec.channel AS recovered_by_channel, rec.value AS recovered_value
	  FROM @extschema@.enrollment e
	  JOIN @extschema@.campaign c ON c.campaign_id = e.campaign_id AND c.signal IN ('cart_abandoned', 'checkout_abandoned')
	 CROSS JOIN @extschema@._report_settings r
	  LEFT JOIN LATERAL (
		-- the first completed order credited to one of this enrollment's messages
		SELECT m.step_no, m.channel, co.amount - co.refunded_amount AS value
		  FROM @extschema@.outbox m
		  JOIN @extschema@.campaign_orders co ON co.message_id = m.message_id AND co.state = 'completed'
		 WHERE m.enrollment_id = e.enrollment_id
		 ORDER BY co.placed_at, co.order_id LIMIT 1) rec ON true;

COMMENT ON VIEW @extschema@._cart_enrollments IS 'Internal: cart campaign enrollments with the order that recovered the cart, if any';

CREATE VIEW @extschema@.report_cart_recovery_daily AS
	WITH f AS (SELECT * FROM @extschema@.cart_funnel_daily()),
	e AS (
		SELECT x.day, pg_catalog.count(*) AS carts_enrolled, pg_catalog.count(*) FILTER (WHERE x.holdout) AS carts_holdout,
			   pg_catalog.count(*) FILTER (WHERE x.messaged) AS carts_messaged,
			   pg_catalog.count(x.recovered_value) AS carts_recovered,
			   COALESCE(pg_catalog.sum(x.recovered_value), 0) AS recovered_value
		  FROM @extschema@._cart_enrollments x GROUP BY x.day)
	SELECT COALESCE(f.day, e.day) AS day,
		   COALESCE(f.carts_started, 0) AS carts_started, COALESCE(f.checkouts_started, 0) AS checkouts_started,
		   COALESCE(f.carts_converted, 0) AS carts_converted, COALESCE(f.carts_abandoned, 0) AS carts_abandoned,
		   COALESCE(f.abandoned_value, 0) AS abandoned_value,
		   COALESCE(e.carts_enrolled, 0) AS carts_enrolled, COALESCE(e.carts_holdout, 0) AS carts_holdout,
		   COALESCE(e.carts_messaged, 0) AS carts_messaged, COALESCE(e.carts_recovered, 0) AS carts_recovered,
		   COALESCE(e.recovered_value, 0) AS recovered_value,
		   e.carts_recovered::pg_catalog.float8 / NULLIF(e.carts_messaged, 0) AS recovery_rate
	  FROM f FULL JOIN e ON e.day = f.day;

CREATE VIEW @extschema@.report_cart_recovery_steps AS
	SELECT st.campaign_id, st.step_no, st.channel, sent.carts AS carts_messaged,
		   pg_catalog.count(x.recovered_value) AS carts_recovered,
		   COALESCE(pg_catalog.sum(x.recovered_value), 0) AS recovered_value,
		   pg_catalog.count(x.recovered_value)::pg_catalog.float8 / NULLIF(sent.carts, 0) AS recovery_rate
	  FROM @extschema@.campaign_step st
	  JOIN @extschema@.campaign c ON c.campaign_id = st.campaign_id AND c.signal IN ('cart_abandoned', 'checkout_abandoned')
	 CROSS JOIN LATERAL (SELECT pg_catalog.count(DISTINCT m.enrollment_id) AS carts FROM @extschema@.outbox m
						  WHERE m.campaign_id = st.campaign_id AND m.step_no = st.step_no AND m.state = 'sent') sent
	  LEFT JOIN @extschema@._cart_enrollments x ON x.campaign_id = st.campaign_id AND x.recovered_by_step = st.step_no
	 GROUP BY st.campaign_id, st.step_no, st.channel, sent.carts;

-- Comments on every report view and column: BI tools show them.
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT * FROM (VALUES
		('report_campaigns', NULL, 'Per campaign: enrollments, messages, engagement, credited orders and revenue, discount cost, opt-outs and complaints, all time'),
		('report_campaigns', 'campaign_id', 'The campaign'),
		('report_campaigns', 'title', 'The campaign''s title'),
		('report_campaigns', 'signal', 'What enrolls a buyer (segment_entered, cart_abandoned, ...)'),
		('report_campaigns', 'status', 'draft, active, paused or archived'),
		('report_campaigns', 'holdout_percent', 'Share of enrollments held out to measure lift'),
		('report_campaigns', 'enrolled', 'Enrollments, holdout included'),
		('report_campaigns', 'holdout', 'Enrollments in the holdout group (never messaged)'),
		('report_campaigns', 'recipients', 'Distinct buyers who were sent at least one message'),
		('report_campaigns', 'sent', 'Messages acknowledged as sent by a sender'),
		('report_campaigns', 'skipped', 'Step decisions that skipped a message (see report_decisions_daily for reasons)'),
		('report_campaigns', 'deferred', 'Step decisions that put a message off (quiet hours, frequency cap, ...)'),
		('report_campaigns', 'delivered', 'Sent messages with a delivered event'),
		('report_campaigns', 'opened', 'Sent messages opened (or clicked)'),
		('report_campaigns', 'clicked', 'Sent messages clicked'),
		('report_campaigns', 'credited_orders', 'Completed orders credited to the campaign''s messages (each order is credited once)'),
		('report_campaigns', 'revenue', 'Net revenue of credited orders: amount minus refunds; fully refunded orders count nothing'),
		('report_campaigns', 'refunded', 'Refunds on credited orders, already taken off revenue'),
		('report_campaigns', 'revenue_per_recipient', 'revenue / recipients'),
		('report_campaigns', 'conversion_rate', 'Recipients with a credited order / recipients'),
		('report_campaigns', 'aov', 'Average credited order value: revenue / credited_orders'),
		('report_campaigns', 'discount_cost', 'What the steps'' offers cost on credited orders: paid amount x offer / (100 - offer), for orders that used a discount'),
		('report_campaigns', 'credited_margin', 'Net revenue minus cost of credited orders with a known cost (NULL: no costs known); discounts are already in it'),
		('report_campaigns', 'opt_outs', 'Messages followed by a consent withdrawal on their channel: each withdrawal counts for the latest message before it, if within that channel''s click window (1 day without one)'),
		('report_campaigns', 'complaints', 'Messages marked as spam by the buyer'),
		('report_campaign_steps_daily', NULL, 'Per campaign, step, channel and shop day the messages were sent: messages and what they earned'),
		('report_campaign_steps_daily', 'campaign_id', 'The campaign'),
		('report_campaign_steps_daily', 'step_no', 'The step of the campaign'),
		('report_campaign_steps_daily', 'channel', 'email, sms, telegram or push'),
		('report_campaign_steps_daily', 'day', 'Shop day (shop_time_zone) the messages were sent; everything in the row is about those messages'),
		('report_campaign_steps_daily', 'sent', 'Messages sent'),
		('report_campaign_steps_daily', 'delivered', 'Of those, delivered'),
		('report_campaign_steps_daily', 'opened', 'Of those, opened or clicked'),
		('report_campaign_steps_daily', 'clicked', 'Of those, clicked'),
		('report_campaign_steps_daily', 'credited_orders', 'Completed orders credited to those messages'),
		('report_campaign_steps_daily', 'revenue', 'Net revenue of the credited orders'),
		('report_campaign_steps_daily', 'refunded', 'Refunds on the credited orders, already taken off revenue'),
		('report_campaign_steps_daily', 'revenue_per_recipient', 'revenue / distinct recipients'),
		('report_campaign_steps_daily', 'conversion_rate', 'Recipients with a credited order / recipients'),
		('report_campaign_steps_daily', 'aov', 'revenue / credited_orders'),
		('report_campaign_steps_daily', 'discount_cost', 'What the step''s offer cost on credited orders that used a discount'),
		('report_campaign_steps_daily', 'credited_margin', 'Net revenue minus cost of credited orders with a known cost'),
		('report_campaign_steps_daily', 'opt_outs', 'Messages followed by a consent withdrawal on their channel: each withdrawal counts for the latest message before it, if within that channel''s click window (1 day without one)'),
		('report_campaign_steps_daily', 'complaints', 'Messages marked as spam'),
		('report_decisions_daily', NULL, 'Skipped and deferred messages per shop day, campaign, step, stage and reason'),
		('report_decisions_daily', 'day', 'Shop day of the decision'),
		('report_decisions_daily', 'campaign_id', 'The campaign'),
		('report_decisions_daily', 'step_no', 'The step'),
		('report_decisions_daily', 'channel', 'The step''s channel'),
		('report_decisions_daily', 'stage', 'tick (deciding a due step) or claim (checked again when a sender claimed it)'),
		('report_decisions_daily', 'decision', 'skip or defer'),
		('report_decisions_daily', 'reason', 'Why: converted, no_consent, frequency_cap, quiet_hours, holdout, ... (doc/campaigns.md lists them)'),
		('report_decisions_daily', 'decisions', 'Number of decisions'),
		('report_decisions_daily', 'enrollments', 'Distinct enrollments they were about'),
		('report_holdout_lift', NULL, 'Per campaign: conversion and revenue per enrollment, treatment vs holdout, with the lift and its 95 % confidence interval'),
		('report_holdout_lift', 'campaign_id', 'The campaign'),
		('report_holdout_lift', 'conversion_window', 'Orders count when placed this long after the signal: the last step''s delay plus the click window'),
		('report_holdout_lift', 'treatment_enrollments', 'Enrollments not held out (messaged or not: intention to treat)'),
		('report_holdout_lift', 'holdout_enrollments', 'Enrollments held out'),
		('report_holdout_lift', 'treatment_conversions', 'Treatment enrollments with a completed order in the window'),
		('report_holdout_lift', 'holdout_conversions', 'Holdout enrollments with a completed order in the window'),
		('report_holdout_lift', 'treatment_conversion_rate', 'treatment_conversions / treatment_enrollments'),
		('report_holdout_lift', 'holdout_conversion_rate', 'holdout_conversions / holdout_enrollments'),
		('report_holdout_lift', 'conversion_lift', 'Absolute lift: treatment minus holdout conversion rate'),
		('report_holdout_lift', 'conversion_lift_relative', 'Relative lift: conversion_lift / holdout conversion rate'),
		('report_holdout_lift', 'conversion_lift_low', 'Lower end of the 95 % confidence interval of conversion_lift'),
		('report_holdout_lift', 'conversion_lift_high', 'Upper end of the 95 % confidence interval of conversion_lift'),
		('report_holdout_lift', 'treatment_revenue', 'Net revenue of treatment buyers in their windows'),
		('report_holdout_lift', 'holdout_revenue', 'Net revenue of holdout buyers in their windows'),
		('report_holdout_lift', 'treatment_revenue_per_enrollment', 'treatment_revenue / treatment_enrollments'),
		('report_holdout_lift', 'holdout_revenue_per_enrollment', 'holdout_revenue / holdout_enrollments'),
		('report_holdout_lift', 'revenue_lift', 'Treatment minus holdout revenue per enrollment'),
		('report_holdout_lift', 'revenue_lift_relative', 'revenue_lift / holdout revenue per enrollment'),
		('report_holdout_lift', 'revenue_lift_low', 'Lower end of the 95 % confidence interval of revenue_lift (Welch)'),
		('report_holdout_lift', 'revenue_lift_high', 'Upper end of the 95 % confidence interval of revenue_lift (Welch)'),
		('report_holdout_lift', 'incremental_revenue', 'Revenue the campaign caused: revenue_lift x treatment_enrollments'),
		('report_holdout_lift', 'too_small_to_tell', 'Either group has fewer enrollments than the setting lift_min_group'),
		('report_holdout_lift', 'conversion_lift_significant', 'Groups large enough and the 95 % interval of conversion_lift excludes zero'),
		('report_segments', NULL, 'Per segment: size, share of customers, revenue, AOV, repeat-purchase and opt-out rates'),
		('report_segments', 'segment_id', 'The segment'),
		('report_segments', 'title', 'The segment''s title'),
		('report_segments', 'kind', 'builtin or custom'),
		('report_segments', 'priority', 'Precedence for the primary segment (higher wins)'),
		('report_segments', 'enabled', 'Whether the segment is evaluated'),
		('report_segments', 'members', 'Customers in the segment now'),
		('report_segments', 'primary_members', 'Customers whose primary segment it is'),
		('report_segments', 'share', 'members / all customers'),
		('report_segments', 'revenue', 'Net revenue of the members, all time'),
		('report_segments', 'aov', 'Members'' net revenue / their completed orders'),
		('report_segments', 'buyers', 'Members with at least one completed order'),
		('report_segments', 'repeat_purchase_rate', 'Members with two or more completed orders / buyers'),
		('report_segments', 'opt_out_rate', 'Members who ever withdrew consent on a channel / members'),
		('report_segments', 'too_small', 'Fewer members than min_size: too small to measure'),
		('report_segments', 'min_size', 'The segment''s minimum size to measure'),
		('report_segment_flow_weekly', NULL, 'Customers moving from one segment to another per week: an exit and an enter seen by the same evaluation'),
		('report_segment_flow_weekly', 'week', 'Monday of the shop week'),
		('report_segment_flow_weekly', 'from_segment', 'The segment left'),
		('report_segment_flow_weekly', 'to_segment', 'The segment entered'),
		('report_segment_flow_weekly', 'customers', 'Distinct customers who made that move that week'),
		('report_rfm_grid', NULL, 'Buyers and revenue per RFM recency x frequency cell (scores 1..5, 5 best); all 25 cells'),
		('report_rfm_grid', 'recency_score', 'Recency score 1..5 (5: bought most recently)'),
		('report_rfm_grid', 'frequency_score', 'Frequency score 1..5 (5: most orders)'),
		('report_rfm_grid', 'customers', 'Buyers in the cell'),
		('report_rfm_grid', 'share', 'customers / all buyers'),
		('report_rfm_grid', 'revenue', 'Net revenue of the cell''s buyers'),
		('report_rfm_grid', 'monetary_score', 'Average monetary score 1..5 of the cell (NULL: empty cell)'),
		('report_cart_recovery_daily', NULL, 'Per shop day: carts started, converted and abandoned, abandoned carts enrolled in cart campaigns and recovered by a message'),
		('report_cart_recovery_daily', 'day', 'Shop day the cart was started (carts_*) or abandoned (enrolled and recovered)'),
		('report_cart_recovery_daily', 'carts_started', 'Carts and checkouts started that day, every carts source'),
		('report_cart_recovery_daily', 'checkouts_started', 'Of those, carts that reached checkout'),
		('report_cart_recovery_daily', 'carts_converted', 'Of those, carts that became an order'),
		('report_cart_recovery_daily', 'carts_abandoned', 'Of those, carts idle past cart_abandon_after / checkout_abandon_after, neither converted nor emptied'),
		('report_cart_recovery_daily', 'abandoned_value', 'Value of the abandoned carts'),
		('report_cart_recovery_daily', 'carts_enrolled', 'Abandoned carts enrolled in a cart campaign that day, holdout included'),
		('report_cart_recovery_daily', 'carts_holdout', 'Of those, held out'),
		('report_cart_recovery_daily', 'carts_messaged', 'Of those, sent at least one message'),
		('report_cart_recovery_daily', 'carts_recovered', 'Of those, followed by a completed order credited to one of its messages'),
		('report_cart_recovery_daily', 'recovered_value', 'Net value of the first credited order of each recovered cart'),
		('report_cart_recovery_daily', 'recovery_rate', 'carts_recovered / carts_messaged'),
		('report_cart_recovery_steps', NULL, 'Per cart campaign step and channel: carts messaged and carts recovered by that step'),
		('report_cart_recovery_steps', 'campaign_id', 'The cart or checkout campaign'),
		('report_cart_recovery_steps', 'step_no', 'The step'),
		('report_cart_recovery_steps', 'channel', 'The step''s channel'),
		('report_cart_recovery_steps', 'carts_messaged', 'Carts whose buyer was sent this step'),
		('report_cart_recovery_steps', 'carts_recovered', 'Carts whose recovering order was credited to this step''s message'),
		('report_cart_recovery_steps', 'recovered_value', 'Net value of those orders'),
		('report_cart_recovery_steps', 'recovery_rate', 'carts_recovered / carts_messaged')
	) AS v (view_name, column_name, comment)
	LOOP
		IF c.column_name IS NULL THEN
			EXECUTE pg_catalog.format('COMMENT ON VIEW @extschema@.%I IS %L', c.view_name, c.comment);
		ELSE
			EXECUTE pg_catalog.format('COMMENT ON COLUMN @extschema@.%I.%I IS %L', c.view_name, c.column_name, c.comment);
		END IF;
	END LOOP;
END
$$;




--------------------------------------------------------------------------------
-- 4. Erasure
--------------------------------------------------------------------------------

-- erase_customer() removes a person from everything of ours.  Transactional
-- rows (orders, messages, decisions, segment history, engagement) stay, under
-- a random pseudonym, so every report adds up as before; profiles, consent
-- grants and free text go.  A keyed hash of the id stays, so a person the
-- shop imports again is suppressed (consent withdrawn on every channel)
-- instead of marketed to.  The shop's own tables are the shop's: we never
-- write them, and erase_customer() says how many rows they still hold.

-- The key of the keyed hash, created by the first erasure (a restore brings
-- the dumped row; an install-time row would collide with it).  Stored as the
-- HMAC-SHA-256 inner and outer pads, so hashing is plain SQL.
CREATE TABLE @extschema@.erasure_key (
	singleton pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (singleton),
	inner_pad pg_catalog.bytea NOT NULL CHECK (pg_catalog.length(inner_pad) = 64),
	outer_pad pg_catalog.bytea NOT NULL CHECK (pg_catalog.length(outer_pad) = 64),
	created_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE @extschema@.erased_customers (
	customer_hash pg_catalog.text PRIMARY KEY,
	erased_at pg_catalog.timestamptz NOT NULL
);

COMMENT ON TABLE @extschema@.erasure_key IS
'The secret key of the keyed hash of erased customer ids (HMAC-SHA-256 pads); created by the first erasure, kept by pg_dump';
COMMENT ON TABLE @extschema@.erased_customers IS
'Keyed hashes of erased customer ids: a customer imported again with the same id is suppressed';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.erasure_key', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.erased_customers', '');

-- HMAC-SHA-256 of a customer id under the erasure key, hex; NULL before the
-- first erasure.
CREATE FUNCTION @extschema@._keyed_hash(customer_id pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN (SELECT pg_catalog.encode(pg_catalog.sha256(k.outer_pad OPERATOR(pg_catalog.||)
			pg_catalog.sha256(k.inner_pad OPERATOR(pg_catalog.||) pg_catalog.convert_to(customer_id, 'UTF8'))), 'hex')
		  FROM @extschema@.erasure_key k);

CREATE FUNCTION @extschema@._erasure_key_create()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k pg_catalog.bytea;
	ipad pg_catalog.bytea;
	opad pg_catalog.bytea;
BEGIN
	IF EXISTS (SELECT FROM @extschema@.erasure_key) THEN
		RETURN;
	END IF;
	-- 32 bytes from two random UUIDs (244 random bits), zero-padded to the
	-- SHA-256 block of 64 bytes
	k := pg_catalog.decode(pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text
		|| pg_catalog.gen_random_uuid()::pg_catalog.text, '-', ''), 'hex')
		 || pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
	ipad := k;
	opad := k;
	FOR i IN 0 .. 63 LOOP
		ipad := pg_catalog.set_byte(ipad, i, pg_catalog.get_byte(k, i) # 54);   -- 0x36
		opad := pg_catalog.set_byte(opad, i, pg_catalog.get_byte(k, i) # 92);   -- 0x5c
	END LOOP;
	INSERT INTO @extschema@.erasure_key (inner_pad, outer_pad) VALUES (ipad, opad) ON CONFLICT DO NOTHING;
END
$$;

-- Called with every refresh's keys (NULL: everyone): buyers whose id hashes
-- to an erased one get their consent withdrawn on every channel where the
-- latest event is a grant, and their facts written again at once, so the
-- same tick already sees them without consent.  Free when nobody was ever
-- erased.
CREATE FUNCTION @extschema@._suppress_returning(keys pg_catalog.text[])
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	suppressed pg_catalog.text[];
BEGIN
	IF NOT EXISTS (SELECT FROM @extschema@.erased_customers) THEN
		RETURN 0;
	END IF;
	WITH withdrawn AS (
		INSERT INTO @extschema@.consent_events (customer_id, channel, granted, occurred_at, source)
		-- stamped right after the grant it overrides, so it wins at any
		-- as-of time the grant counts at
		SELECT f.customer_id, ch, false, g.occurred_at + '1 microsecond'::pg_catalog.interval, 'erased: imported again'
		  FROM @extschema@.customer_facts f
		 CROSS JOIN pg_catalog.unnest(ARRAY['email', 'sms', 'telegram', 'push']) ch
		 CROSS JOIN LATERAL (SELECT ce.granted, ce.occurred_at FROM @extschema@.consent_events ce
							  WHERE ce.customer_id = f.customer_id AND ce.channel = ch
							  ORDER BY ce.occurred_at DESC, ce.event_id DESC LIMIT 1) g
		 WHERE (keys IS NULL OR f.customer_id = ANY (keys))
		   AND f.customer_id NOT LIKE 'erased:%'
		   AND g.granted
		   AND EXISTS (SELECT FROM @extschema@.erased_customers x WHERE x.customer_hash = @extschema@._keyed_hash(f.customer_id))
		RETURNING customer_id)
	SELECT pg_catalog.array_agg(DISTINCT w.customer_id) INTO suppressed FROM withdrawn w;
	IF suppressed IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM @extschema@._write_facts(suppressed, pg_catalog.now());
	RETURN pg_catalog.cardinality(suppressed);
END
$$;

CREATE FUNCTION @extschema@.is_erased(customer_id pg_catalog.text)
RETURNS pg_catalog.bool
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN EXISTS (SELECT FROM @extschema@.erased_customers x WHERE x.customer_hash = @extschema@._keyed_hash(customer_id));

COMMENT ON FUNCTION @extschema@.is_erased(pg_catalog.text) IS
'Whether this customer id was erased with erase_customer() (compared by keyed hash)';

CREATE FUNCTION @extschema@.erase_customer(customer_id pg_catalog.text, at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (table_name pg_catalog.text, action pg_catalog.text, rows_affected pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	id pg_catalog.text := @extschema@._require(customer_id, 'customer_id');
	pseudonym pg_catalog.text := 'erased:' || pg_catalog.gen_random_uuid()::pg_catalog.text;
	col record;
	n pg_catalog.int8;
	s record;
	shop_rows pg_catalog.int8 := 0;
BEGIN
	IF id LIKE 'erased:%' THEN
		RAISE EXCEPTION 'customer "%" is already an erased pseudonym', id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- a running tick finishes first; none starts until we commit
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('segments.tick'));
	PERFORM @extschema@._erasure_key_create();

	-- the profile and consent grants go; queued messages are cancelled
	DELETE FROM @extschema@.tracked_customers t WHERE t.customer_id = id;
	GET DIAGNOSTICS n = ROW_COUNT;
	table_name := 'tracked_customers'; action := 'deleted'; rows_affected := n; RETURN NEXT;
	DELETE FROM @extschema@.consent_events ce WHERE ce.customer_id = id AND ce.granted;
	GET DIAGNOSTICS n = ROW_COUNT;
	table_name := 'consent_events'; action := 'grants deleted'; rows_affected := n; RETURN NEXT;
	DELETE FROM @extschema@.customer_changes c WHERE c.key = id;
	UPDATE @extschema@.outbox o SET state = 'cancelled', lease_until = NULL, last_error = 'erased'
	 WHERE o.customer_id = id AND o.state IN ('ready', 'leased');
	UPDATE @extschema@.enrollment e SET state = 'stopped', stop_reason = 'erased', next_due_at = NULL, next_step_no = NULL
	 WHERE e.customer_id = id AND e.state = 'active';

	-- free text that may carry personal data
	-- engagement naming the provider's message id names ours instead, so it
	-- still counts for the message once the provider's id is gone
	UPDATE @extschema@.engagement_events ev SET message_id = o.message_id::pg_catalog.text
	  FROM @extschema@.outbox o
	 WHERE ev.customer_id = id AND o.customer_id = id AND ev.message_id = o.provider_message_id;
	UPDATE @extschema@.outbox o
	   SET variables = '{}', last_error = NULL, provider_message_id = NULL,
		   idempotency_key = o.campaign_id || ':' || o.step_no || ':' || pseudonym || ':' || o.enrollment_id
	 WHERE o.customer_id = id;
	UPDATE @extschema@.enrollment e SET signal_key = 'erased:' || e.enrollment_id, cart_id = NULL
	 WHERE e.customer_id = id;
	UPDATE @extschema@.decision_log d SET facts = '{}' WHERE d.customer_id = id;
	UPDATE @extschema@.consent_events ce SET source = NULL WHERE ce.customer_id = id;
	UPDATE @extschema@.wallet_events w SET reason = NULL WHERE w.customer_id = id;
	UPDATE @extschema@.tracked_carts t SET link = NULL WHERE t.customer_id = id;
	-- a personal code (a referral code) goes; that a code was used stays
	UPDATE @extschema@.tracked_orders t SET discount_code = 'erased'
	 WHERE t.customer_id = id AND t.discount_code <> '';
	-- error texts can quote a key
	UPDATE @extschema@.tick_runs r SET error = pg_catalog.replace(r.error, id, pseudonym)
	 WHERE pg_catalog.strpos(r.error, id) > 0;
	UPDATE @extschema@.segment_compiled c SET error = pg_catalog.replace(c.error, id, pseudonym)
	 WHERE pg_catalog.strpos(c.error, id) > 0;

	-- every customer reference of ours, in every table: to the pseudonym
	FOR col IN
		SELECT c.relname, a.attname
		  FROM pg_catalog.pg_class c
		  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		 WHERE c.relnamespace = '@extschema@'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
		   AND a.attname IN ('customer_id', 'referrer_id', 'referred_id', 'referred_by')
		   AND a.atttypid = 'pg_catalog.text'::pg_catalog.regtype
		 ORDER BY c.relname, a.attname
	LOOP
		EXECUTE pg_catalog.format('UPDATE @extschema@.%I SET %I = $2 WHERE %I = $1', col.relname, col.attname, col.attname)
		USING id, pseudonym;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n > 0 THEN
			table_name := col.relname; action := col.attname || ' pseudonymized'; rows_affected := n; RETURN NEXT;
		END IF;
	END LOOP;

	INSERT INTO @extschema@.erased_customers (customer_hash, erased_at)
	VALUES (@extschema@._keyed_hash(id), at) ON CONFLICT DO NOTHING;

	-- facts again from what is left: the pseudonym keeps the anonymous
	-- purchase history; the id itself only comes back if the shop's own
	-- tables still hold it (and is then suppressed)
	PERFORM @extschema@._write_facts(ARRAY[id, pseudonym], at);
	DELETE FROM @extschema@.customer_changes c WHERE c.key = id;
	IF EXISTS (SELECT FROM @extschema@.customer_facts f WHERE f.customer_id = id) THEN
		PERFORM @extschema@._facts_refreshed(ARRAY[id, pseudonym]);
	ELSE
		PERFORM @extschema@._facts_refreshed(ARRAY[pseudonym]);
	END IF;

	FOR s IN SELECT x.relation, x.columns, x.key_type FROM @extschema@.sources x WHERE NOT x.builtin AND x.columns ? 'customer' LOOP
		EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s t WHERE t.%I = ANY(%s)',
			s.relation, s.columns->>'customer', @extschema@._keys_as(s.key_type, '$1'))
		INTO n USING ARRAY[id];
		shop_rows := shop_rows + n;
	END LOOP;
	table_name := 'shop tables'; action := 'left alone: the shop must erase these itself'; rows_affected := shop_rows;
	RETURN NEXT;
	IF shop_rows > 0 THEN
		RAISE NOTICE 'customer "%": % row(s) remain in the shop''s own tables', id, shop_rows
			USING HINT = 'segments never writes the shop''s tables; erase the customer there too. Until then the customer stays suppressed.';
	END IF;
END
$$;

COMMENT ON FUNCTION @extschema@.erase_customer(pg_catalog.text, pg_catalog.timestamptz) IS
'Right to erasure: removes the customer''s personal data from every table of ours, keeps transactional rows under a random pseudonym (reports stay correct) and a keyed hash that suppresses the same id if imported again';




--------------------------------------------------------------------------------
-- 5. Roles
--------------------------------------------------------------------------------

-- What the tick, the reports and every definer function run over the shop's
-- tables is SQL we generate, executed with our privileges (pg_cron runs the
-- tick as the extension's owner, usually a superuser). Functions and
-- operators in it resolve through the pinned search_path, but casts are
-- global, and a domain's CHECK runs whenever a value is coerced to it: a
-- table owner who defines either for a mapped column's type would have their
-- code run as us. So a mapped column must be of a built-in type, an enum, or
-- an array or domain (without CHECK constraints) over those, and no cast
-- from or to any of them may call a function outside pg_catalog. Checked
-- when a table is attached (a trigger on sources) and whenever a CREATE CAST,
-- ALTER TABLE, ALTER DOMAIN or ALTER TYPE could break it (an event trigger
-- that refuses the DDL).
CREATE FUNCTION @extschema@._check_column_type(rel pg_catalog.regclass, col pg_catalog.text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t pg_catalog.oid;
	y record;
	seen pg_catalog.oid[] := '{}';
	bad pg_catalog.text;
BEGIN
	SELECT a.atttypid INTO t FROM pg_catalog.pg_attribute a
	 WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RETURN;   -- a missing column is reported where the SQL is generated
	END IF;
	LOOP
		seen := seen || t;
		SELECT x.typtype, x.typbasetype, x.typelem, x.typnamespace, x.typcategory, x.oid::pg_catalog.regtype AS name
		  INTO y FROM pg_catalog.pg_type x WHERE x.oid = t;
		IF y.typtype = 'd' THEN
			IF EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.contypid = t AND c.contype = 'c') THEN
				RAISE EXCEPTION 'column "%" of % has domain type % with a CHECK constraint', col, rel, y.name
					USING ERRCODE = 'insufficient_privilege',
						  DETAIL = 'segments reads attached tables with the tick''s privileges; the constraint would run with them.',
						  HINT = 'Map a column of a built-in type or an enum, or drop the constraint.';
			END IF;
			t := y.typbasetype;
		ELSIF y.typcategory = 'A' AND y.typelem <> 0 THEN
			t := y.typelem;
		ELSE
			EXIT;
		END IF;
	END LOOP;
	IF y.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace AND y.typtype <> 'e' THEN
		RAISE EXCEPTION 'column "%" of % has type %, which is neither built in nor an enum', col, rel, y.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'segments reads attached tables with the tick''s privileges; a type''s own functions would run with them.',
				  HINT = 'Map a column of a built-in type (text, integer, numeric, timestamptz, ...) or an enum.';
	END IF;
	SELECT pg_catalog.format('%s -> %s via %s', c.castsource::pg_catalog.regtype, c.casttarget::pg_catalog.regtype,
							 c.castfunc::pg_catalog.regprocedure)
	  INTO bad
	  FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc
	 WHERE (c.castsource = ANY (seen) OR c.casttarget = ANY (seen))
	   AND p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace
	 LIMIT 1;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'column "%" of % has a type with a user-defined cast (%)', col, rel, bad
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'segments reads attached tables with the tick''s privileges; the cast''s function would run with them.',
				  HINT = 'Drop the cast, or map a column of another type.';
	END IF;
END
$$;

-- Every mapped column of every attached table (or of one).
CREATE FUNCTION @extschema@._check_source_types(only_relation pg_catalog.regclass DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	c record;
	products pg_catalog.regclass;
BEGIN
	FOR s IN SELECT * FROM @extschema@.sources x
			  WHERE NOT x.builtin AND (only_relation IS NULL OR x.relation = only_relation) LOOP
		FOR c IN SELECT * FROM pg_catalog.jsonb_each_text(s.columns) LOOP
			PERFORM @extschema@._check_column_type(s.relation, c.value);
		END LOOP;
		products := pg_catalog.to_regclass(s.options->>'products');
		IF products IS NOT NULL THEN
			PERFORM @extschema@._check_column_type(products, s.options->>'product_key');
			PERFORM @extschema@._check_column_type(products, s.options->>'product_category');
		END IF;
	END LOOP;
END
$$;

CREATE FUNCTION @extschema@._check_attached_types()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_source_types(NEW.relation);
	RETURN NEW;
END
$$;

CREATE TRIGGER sources_check_types AFTER INSERT OR UPDATE ON @extschema@.sources
	FOR EACH ROW EXECUTE FUNCTION @extschema@._check_attached_types();

-- SECURITY DEFINER: it fires for every role's DDL, and must read sources.
CREATE FUNCTION @extschema@._guard_attached_types()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_source_types(NULL);
END
$$;

REVOKE ALL ON FUNCTION @extschema@._guard_attached_types() FROM PUBLIC;

CREATE EVENT TRIGGER segments_guard_attached_types ON ddl_command_end
	WHEN TAG IN ('CREATE CAST', 'ALTER TABLE', 'ALTER DOMAIN', 'ALTER TYPE')
	EXECUTE FUNCTION @extschema@._guard_attached_types();

-- Tables attached before 0.5.0 are checked now (an unsafe one fails the update).
SELECT @extschema@._check_source_types(NULL);

-- As definer functions, the schedule calls may only touch our own job: a
-- name of the form segments-tick[-...], and a job of that name must run our
-- command in this database.
CREATE FUNCTION @extschema@._check_tick_job(name pg_catalog.text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	other pg_catalog.bool;
BEGIN
	IF name IS NULL OR name OPERATOR(pg_catalog.!~) '^segments-tick(-[A-Za-z0-9_.-]{1,100})?$' THEN
		RAISE EXCEPTION 'job name "%" is not a segments tick job name', name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name starting with segments-tick-, or leave it out.';
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
		EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user
				   AND (command <> $2 OR database <> current_database()))'
		   INTO other USING name, 'CALL @extschema@.run_tick()';
		IF other THEN
			RAISE EXCEPTION 'pg_cron job "%" is not this database''s segments tick', name
				USING ERRCODE = 'insufficient_privilege',
					  HINT = 'Choose another name; segments only schedules and unschedules its own jobs.';
		END IF;
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.schedule_tick(schedule pg_catalog.text DEFAULT '* * * * *',
	job_name pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
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
	PERFORM @extschema@._check_tick_job(name);
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

CREATE OR REPLACE FUNCTION @extschema@.unschedule_tick(job_name pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.bool
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	name pg_catalog.text := COALESCE(job_name, 'segments-tick-' || current_database());
	found_job pg_catalog.bool;
BEGIN
	PERFORM @extschema@._check_tick_job(name);
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

-- Three roles, one per kind of user; grant them to login roles:
--   segments_reader  BI tools: the report views, nothing else (no personal data)
--   segments_app     the shop's app and senders: tracking calls and the outbox
--   segments_admin   staff: segments, campaigns, settings, the schedule,
--                    explanations and erasure; reads everything but the
--                    erasure key, and the reports
-- The app and admin APIs are SECURITY DEFINER functions (search_path
-- pinned, every name qualified) that only these roles may execute: the roles
-- never get table privileges, so they can do exactly what the API does.
-- Roles belong to the cluster: they are created once and survive DROP
-- EXTENSION (pg_dumpall --globals-only carries them).
-- LATER RELEASES: CREATE OR REPLACE FUNCTION resets a function to SECURITY
-- INVOKER (its grants stay), so a redefinition of any function listed below
-- must say SECURITY DEFINER again; the regression test roles counts them.
DO $$
DECLARE
	r pg_catalog.text;
BEGIN
	FOREACH r IN ARRAY ARRAY['segments_reader', 'segments_app', 'segments_admin'] LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$$;

COMMENT ON ROLE segments_reader IS 'segments: reads the report views (no personal data)';
COMMENT ON ROLE segments_app IS 'segments: tracking API and outbox (claim, ack, fail)';
COMMENT ON ROLE segments_admin IS 'segments: segments, campaigns, settings, schedule, explain, erasure';

GRANT USAGE ON SCHEMA @extschema@ TO segments_reader, segments_app, segments_admin;

-- reader: the report views and the function one of them calls
DO $$
DECLARE
	v pg_catalog.text;
BEGIN
	FOR v IN SELECT c.relname FROM pg_catalog.pg_class c
			  WHERE c.relnamespace = '@extschema@'::pg_catalog.regnamespace AND c.relkind = 'v'
				AND c.relname LIKE 'report\_%' ORDER BY 1 LOOP
		EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.%I TO segments_reader', v);
	END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION @extschema@.cart_funnel_daily() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.cart_funnel_daily() TO segments_reader, segments_admin;

-- admin reads everything of ours except the erasure key and hashes, and the reports
DO $$
DECLARE
	t pg_catalog.text;
BEGIN
	FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
			  WHERE c.relnamespace = '@extschema@'::pg_catalog.regnamespace AND c.relkind IN ('r', 'v', 'p')
				AND c.relname NOT IN ('erasure_key', 'erased_customers') ORDER BY 1 LOOP
		EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.%I TO segments_admin', t);
	END LOOP;
END
$$;

-- The APIs: definer rights, executable by their role only.
DO $$
DECLARE
	f record;
BEGIN
	FOR f IN SELECT p.oid::pg_catalog.regprocedure AS fn, p.prokind,
					CASE WHEN p.proname IN ('track_order', 'track_refund', 'track_order_status', 'track_order_line',
											'track_cart', 'track_cart_closed', 'track_customer', 'track_engagement',
											'track_consent', 'track_wallet', 'track_referral', 'track_stock',
											'track_restock_request', 'claim_messages', 'ack_message', 'ack_messages',
											'fail_message') THEN 'segments_app'
						 ELSE 'segments_admin' END AS grantee
			   FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = '@extschema@'::pg_catalog.regnamespace
				AND p.proname IN (
					-- app
					'track_order', 'track_refund', 'track_order_status', 'track_order_line', 'track_cart',
					'track_cart_closed', 'track_customer', 'track_engagement', 'track_consent', 'track_wallet',
					'track_referral', 'track_stock', 'track_restock_request',
					'claim_messages', 'ack_message', 'ack_messages', 'fail_message',
					-- admin
					'define_segment', 'define_percentile_segment', 'alter_segment', 'drop_segment',
					'rfm_group_map_customize', 'set_setting', 'reset_setting',
					'create_campaign', 'add_campaign_step', 'set_campaign_status', 'campaign_from_template',
					'schedule_tick', 'unschedule_tick', 'tick',
					'refresh_facts', 'rebuild_facts', 'verify_facts', 'refresh_score_breaks',
					'evaluate_segments', 'verify_segments', 'segments_as_of', 'reattribute',
					'explain_customer', 'explain_campaign', 'erase_customer', 'is_erased')
			  ORDER BY 1::pg_catalog.text
	LOOP
		EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER', f.fn);
		EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.fn);
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f.fn, f.grantee);
	END LOOP;
END
$$;

-- run_tick() commits between its stages, so it cannot have definer rights:
-- it stays with the owner and pg_cron (which runs it as the owner, through
-- schedule_tick()); admins run tick(), which holds the tick's lock.
REVOKE EXECUTE ON PROCEDURE @extschema@.run_tick(pg_catalog.timestamptz) FROM PUBLIC;
GRANT segments_reader TO segments_admin;




--------------------------------------------------------------------------------
-- 6. Dashboard
--
-- (dashboard_html() and its helpers go here)
--------------------------------------------------------------------------------


-- dashboard_html() returns one self-contained HTML page (inline CSS and SVG,
-- no script, no font, nothing fetched) with four charts and a table, drawn
-- in SQL from the report views and nothing else: whoever may read the
-- reports (segments_reader) may run it, with their own rights.  The page is
-- well-formed XML as well as HTML (every element closed, numeric character
-- references only), so a test can parse it with xpath().  Every text that
-- comes from data goes through _html_escape().  Chart builders resolve
-- operators with their pinned search_path (pg_catalog first); every operand
-- is of a built-in type from the report views.

CREATE FUNCTION @extschema@._html_escape(s pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
	s, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');

COMMENT ON FUNCTION @extschema@._html_escape(pg_catalog.text) IS
'Internal: text made safe for HTML and XML element content and quoted attribute values (& < > " and '' escaped)';

-- A label of at most n characters (an ellipsis marks the cut), escaped.
CREATE FUNCTION @extschema@._dashboard_label(s pg_catalog.text, n pg_catalog.int4)
RETURNS pg_catalog.text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF s IS NULL THEN
		RETURN '';
	ELSIF pg_catalog.length(s) > n THEN
		RETURN @extschema@._html_escape(pg_catalog.left(s, n - 1)) || '&#8230;';
	END IF;
	RETURN @extschema@._html_escape(s);
END
$$;

COMMENT ON FUNCTION @extschema@._dashboard_label(pg_catalog.text, pg_catalog.int4) IS
'Internal: a dashboard label cut to n characters with an ellipsis, HTML-escaped';

-- One chart: an <svg> with a stable id, an accessible name (<title> and
-- aria-label) and the given body, or the "no data yet" message.
CREATE FUNCTION @extschema@._dashboard_svg(id pg_catalog.text, width pg_catalog.int4, height pg_catalog.int4,
	label pg_catalog.text, body pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE PARALLEL SAFE   -- format() is stable
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.format(
		'<svg id="%1$s" class="chart" role="img" aria-label="%2$s" viewBox="0 0 %3$s %4$s" width="%3$s" height="%4$s">'
		'<title>%2$s</title>%5$s</svg>',
		@extschema@._html_escape(id), @extschema@._html_escape(label), width, height,
		COALESCE(body, pg_catalog.format('<text class="empty" x="%s" y="%s" text-anchor="middle">no data yet</text>',
										 width / 2, height / 2)));
END
$$;

COMMENT ON FUNCTION @extschema@._dashboard_svg(pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.text) IS
'Internal: an accessible SVG chart element around a body; a NULL body draws "no data yet"';

-- (a) Buyers per RFM recency x frequency cell: recency on x, frequency on y
-- (5, the best, at the right and the top), darker cells hold more buyers.
CREATE FUNCTION @extschema@._dashboard_rfm_grid()
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	-- left margin, top margin, cell size
	lm CONSTANT pg_catalog.int4 := 64;
	tm CONSTANT pg_catalog.int4 := 12;
	cs CONSTANT pg_catalog.int4 := 70;
	body pg_catalog.text;
BEGIN
	WITH g AS (
		SELECT r.recency_score AS x, r.frequency_score AS y, r.customers, r.revenue,
			   pg_catalog.max(r.customers) OVER () AS top, pg_catalog.sum(r.customers) OVER () AS total
		  FROM @extschema@.report_rfm_grid r
		 WHERE r.recency_score BETWEEN 1 AND 5 AND r.frequency_score BETWEEN 1 AND 5),
	c AS (
		-- lightness 97 % (no buyers) down to 32 % (the fullest cell)
		SELECT g.*, pg_catalog.round(97 - 65 * g.customers::pg_catalog.float8 / NULLIF(g.top, 0))::pg_catalog.int4 AS light
		  FROM g)
	SELECT pg_catalog.string_agg(pg_catalog.format(
			'<rect class="mark cell" x="%s" y="%s" width="%s" height="%s" fill="hsl(214,70%%,%s%%)" '
			'data-recency="%s" data-frequency="%s" data-customers="%s">'
			'<title>R%s F%s: %s buyers, revenue %s</title></rect>'
			'<text class="%s" x="%s" y="%s" text-anchor="middle">%s</text>',
			lm + (c.x - 1) * cs + 1, tm + (5 - c.y) * cs + 1, cs - 2, cs - 2, c.light,
			c.x, c.y, c.customers, c.x, c.y, c.customers, pg_catalog.round(c.revenue, 2),
			CASE WHEN c.light < 60 THEN 'value on-dark' ELSE 'value' END,
			lm + (c.x - 1) * cs + cs / 2, tm + (5 - c.y) * cs + cs / 2 + 5, c.customers),
			'' ORDER BY c.y DESC, c.x)
		   FILTER (WHERE c.total > 0)
	  INTO body
	  FROM c;
	IF body IS NOT NULL THEN
		-- axes: scores under the columns and left of the rows, and their names
		SELECT body || pg_catalog.string_agg(pg_catalog.format(
				'<text class="tick" x="%s" y="%s" text-anchor="middle">%s</text>'
				'<text class="tick" x="%s" y="%s" text-anchor="end">%s</text>',
				lm + (i - 1) * cs + cs / 2, tm + 5 * cs + 18, i,
				lm - 8, tm + (5 - i) * cs + cs / 2 + 4, i), '' ORDER BY i)
			|| pg_catalog.format('<text class="axis" x="%s" y="%s" text-anchor="middle">recency score (5: bought most recently) &#8594;</text>',
								 lm + 5 * cs / 2, tm + 5 * cs + 40)
			|| pg_catalog.format('<text class="axis" x="0" y="0" text-anchor="middle" transform="translate(%s,%s) rotate(-90)">frequency score (5: most orders) &#8594;</text>',
								 18, tm + 5 * cs / 2)
		  INTO body
		  FROM pg_catalog.generate_series(1, 5) i;
	END IF;
	RETURN @extschema@._dashboard_svg('rfm-grid', lm + 5 * cs + 12, tm + 5 * cs + 52,
		'RFM grid: buyers per recency and frequency score', body);
END
$$;

-- (b) Members per segment, the 15 largest (empty ones left out: the note
-- under the bars counts what is not shown); segments too small to measure
-- (fewer members than their min_size) are drawn hatched-grey and labelled.
CREATE FUNCTION @extschema@._dashboard_segment_sizes()
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lm CONSTANT pg_catalog.int4 := 200;   -- label column
	bw CONSTANT pg_catalog.int4 := 360;   -- longest bar
	rh CONSTANT pg_catalog.int4 := 26;    -- row height
	shown CONSTANT pg_catalog.int4 := 15;
	body pg_catalog.text;
	nrows pg_catalog.int4;
	more pg_catalog.int8;
BEGIN
	WITH s AS (
		SELECT r.segment_id, COALESCE(r.title, r.segment_id) AS title, r.members, r.share, r.too_small, r.min_size,
			   pg_catalog.row_number() OVER (ORDER BY r.members DESC, r.segment_id) AS n,
			   pg_catalog.count(*) OVER () AS segments, pg_catalog.sum(r.members) OVER () AS total
		  FROM @extschema@.report_segments r WHERE r.members > 0),
	t AS (
		SELECT s.*, pg_catalog.max(s.members) OVER () AS most,
			   pg_catalog.round((bw * s.members::pg_catalog.float8
								 / NULLIF(pg_catalog.max(s.members) OVER (), 0))::pg_catalog.numeric, 1) AS w,
			   12 + (s.n - 1) * rh AS y
		  FROM s WHERE s.n <= shown)
	SELECT pg_catalog.string_agg(pg_catalog.format(
			'<text class="label" x="%s" y="%s" text-anchor="end">%s</text>'
			'<rect class="mark bar%s" x="%s" y="%s" width="%s" height="%s" data-segment="%s" data-members="%s">'
			'<title>%s (%s): %s members, %s %% of customers%s</title></rect>'
			'<text class="value" x="%s" y="%s">%s%s</text>',
			lm - 8, t.y + 14, @extschema@._dashboard_label(t.title, 28),
			CASE WHEN t.too_small THEN ' too-small' ELSE '' END, lm, t.y, t.w, rh - 8,
			@extschema@._html_escape(t.segment_id), t.members,
			@extschema@._html_escape(t.title), @extschema@._html_escape(t.segment_id), t.members,
			COALESCE(pg_catalog.round((100 * t.share)::pg_catalog.numeric, 1), 0),
			CASE WHEN t.too_small THEN pg_catalog.format(', too small to measure (under %s)', t.min_size) ELSE '' END,
			lm + t.w + 6, t.y + 14, t.members,
			CASE WHEN t.too_small THEN ' &#183; too small' ELSE '' END),
			'' ORDER BY t.n) FILTER (WHERE t.total > 0),
		   pg_catalog.count(*)
	  INTO body, nrows
	  FROM t;
	more := (SELECT pg_catalog.count(*) FROM @extschema@.report_segments r) - nrows;
	IF body IS NOT NULL THEN
		body := body || pg_catalog.format(
			'<rect class="swatch too-small" x="%s" y="%s" width="14" height="10"/>'
			'<text class="note" x="%s" y="%s">too small to measure (fewer members than its min_size)%s</text>',
			lm, 12 + nrows * rh + 6, lm + 20, 12 + nrows * rh + 15,
			CASE WHEN more > 0 THEN pg_catalog.format('; %s more not shown', more) ELSE '' END);
	END IF;
	RETURN @extschema@._dashboard_svg('segment-sizes', lm + bw + 150, 12 + GREATEST(nrows, 3) * rh + 28,
		'Segment sizes: members of the largest segments', body);
END
$$;

-- (c) The cart-recovery funnel over every day of report_cart_recovery_daily:
-- carts started, abandoned, enrolled in a cart campaign, messaged,
-- recovered; each step with its share of the step before.
CREATE FUNCTION @extschema@._dashboard_cart_funnel()
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lm CONSTANT pg_catalog.int4 := 150;   -- label column
	bw CONSTANT pg_catalog.int4 := 420;   -- widest bar
	rh CONSTANT pg_catalog.int4 := 46;    -- row height
	body pg_catalog.text;
	recovered pg_catalog.numeric;
BEGIN
	WITH t AS (
		SELECT COALESCE(pg_catalog.sum(d.carts_started), 0) AS started, COALESCE(pg_catalog.sum(d.carts_abandoned), 0) AS abandoned,
			   COALESCE(pg_catalog.sum(d.carts_enrolled), 0) AS enrolled, COALESCE(pg_catalog.sum(d.carts_messaged), 0) AS messaged,
			   COALESCE(pg_catalog.sum(d.carts_recovered), 0) AS recovered, COALESCE(pg_catalog.sum(d.recovered_value), 0) AS value
		  FROM @extschema@.report_cart_recovery_daily d),
	s AS (
		SELECT v.n, v.stage, v.carts, v.hint, t.value,
			   pg_catalog.lag(v.carts) OVER (ORDER BY v.n) AS before,
			   pg_catalog.max(v.carts) OVER () AS most
		  FROM t CROSS JOIN LATERAL (VALUES
			(1, 'carts started', t.started, 'carts and checkouts started, every carts source'),
			(2, 'abandoned', t.abandoned, 'idle past cart_abandon_after / checkout_abandon_after and not converted'),
			(3, 'enrolled', t.enrolled, 'abandoned carts enrolled in a cart campaign, holdout included'),
			(4, 'messaged', t.messaged, 'enrolled carts sent at least one message'),
			(5, 'recovered', t.recovered, 'messaged carts followed by a credited order')) v (n, stage, carts, hint)),
	b AS (
		-- a stage with any carts stays visible however small
		SELECT s.*, GREATEST(pg_catalog.round((bw * s.carts::pg_catalog.float8 / NULLIF(s.most, 0))::pg_catalog.numeric, 1),
							 CASE WHEN s.carts > 0 THEN 2 ELSE 0 END) AS w,
			   12 + (s.n - 1) * rh AS y
		  FROM s)
	SELECT pg_catalog.string_agg(pg_catalog.format(
			'<text class="label" x="%s" y="%s" text-anchor="end">%s</text>'
			'<rect class="mark stage-%s" x="%s" y="%s" width="%s" height="%s" data-stage="%s" data-carts="%s">'
			'<title>%s: %s (%s)</title></rect>'
			'<text class="value" x="%s" y="%s">%s%s</text>',
			lm - 10, b.y + 22, b.stage,
			b.n, pg_catalog.round(lm + (bw - b.w) / 2, 1), b.y, b.w, rh - 10, pg_catalog.replace(b.stage, ' ', '_'), b.carts,
			b.stage, b.carts, b.hint,
			lm + bw + 10, b.y + 22, b.carts,
			CASE WHEN b.n = 1 THEN ''
				 WHEN b.before = 0 THEN ' (&#8211;)'
				 ELSE pg_catalog.format(' (%s %%)', pg_catalog.round(100.0 * b.carts / b.before, 1)) END),
			'' ORDER BY b.n) FILTER (WHERE b.most > 0),
		   pg_catalog.max(b.value)
	  INTO body, recovered
	  FROM b;
	IF body IS NOT NULL THEN
		body := body || pg_catalog.format(
			'<text class="note" x="%s" y="%s">percentages: share of the step before; recovered value %s</text>',
			lm, 12 + 5 * rh + 12, pg_catalog.round(recovered, 2));
	END IF;
	RETURN @extschema@._dashboard_svg('cart-funnel', lm + bw + 110, 12 + 5 * rh + 24,
		'Cart recovery funnel: carts started, abandoned, enrolled, messaged, recovered', body);
END
$$;

-- (d) Revenue per enrollment, treatment vs holdout, per campaign (the 12
-- with the most enrollments).  The whisker on the treatment bar is the 95 %
-- interval of the lift, drawn from the holdout's level: where the treatment
-- bar could be if the campaign's effect were at either end of its interval.
CREATE FUNCTION @extschema@._dashboard_campaign_lift()
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lm CONSTANT pg_catalog.int4 := 70;    -- axis labels
	tm CONSTANT pg_catalog.int4 := 34;    -- legend
	ph CONSTANT pg_catalog.int4 := 220;   -- plot height
	gw CONSTANT pg_catalog.int4 := 150;   -- one campaign's group
	shown CONSTANT pg_catalog.int4 := 12;
	body pg_catalog.text;
	groups pg_catalog.int4;
	ymin pg_catalog.numeric;
	ymax pg_catalog.numeric;
BEGIN
	-- the scale: zero, every bar and every whisker end
	SELECT pg_catalog.count(*),
		   LEAST(0, pg_catalog.min(h.treatment_revenue_per_enrollment), pg_catalog.min(h.holdout_revenue_per_enrollment),
				 pg_catalog.min(h.holdout_revenue_per_enrollment + h.revenue_lift_low)),
		   GREATEST(0, pg_catalog.max(h.treatment_revenue_per_enrollment), pg_catalog.max(h.holdout_revenue_per_enrollment),
					pg_catalog.max(h.holdout_revenue_per_enrollment + h.revenue_lift_high))
	  INTO groups, ymin, ymax
	  FROM (SELECT x.* FROM @extschema@.report_holdout_lift x
			 ORDER BY x.treatment_enrollments + x.holdout_enrollments DESC, x.campaign_id LIMIT shown) h;
	IF ymax = ymin THEN
		ymax := ymin + 1;   -- nothing earned yet: zero-height bars on a unit scale
	END IF;
	WITH k AS (
		SELECT h.campaign_id, COALESCE(c.title, h.campaign_id) AS title,
			   h.treatment_enrollments AS nt, h.holdout_enrollments AS nh,
			   h.treatment_revenue_per_enrollment AS mt, h.holdout_revenue_per_enrollment AS mh,
			   h.holdout_revenue_per_enrollment + h.revenue_lift_low AS lo,
			   h.holdout_revenue_per_enrollment + h.revenue_lift_high AS hi,
			   h.revenue_lift, h.revenue_lift_low, h.revenue_lift_high, h.too_small_to_tell,
			   pg_catalog.row_number() OVER (ORDER BY h.treatment_enrollments + h.holdout_enrollments DESC, h.campaign_id) AS n
		  FROM @extschema@.report_holdout_lift h
		  LEFT JOIN @extschema@.report_campaigns c ON c.campaign_id = h.campaign_id),
	g AS (
		-- y of a value: tm + ph * (ymax - v) / (ymax - ymin)
		SELECT k.*, lm + (k.n - 1) * gw + 20 AS x,
			   pg_catalog.round(tm + ph * (ymax - 0) / (ymax - ymin), 1) AS y0,
			   pg_catalog.round(tm + ph * (ymax - k.mt) / (ymax - ymin), 1) AS yt,
			   pg_catalog.round(tm + ph * (ymax - k.mh) / (ymax - ymin), 1) AS yh,
			   pg_catalog.round(tm + ph * (ymax - k.lo) / (ymax - ymin), 1) AS ylo,
			   pg_catalog.round(tm + ph * (ymax - k.hi) / (ymax - ymin), 1) AS yhi
		  FROM k WHERE k.n <= shown)
	SELECT pg_catalog.string_agg(
			-- treatment bar, its value, the whisker
			pg_catalog.format('<g class="campaign%s" data-campaign="%s">',
				CASE WHEN g.too_small_to_tell THEN ' too-small' ELSE '' END, @extschema@._html_escape(g.campaign_id))
			|| CASE WHEN g.mt IS NULL THEN pg_catalog.format(
				'<text class="note" x="%s" y="%s" text-anchor="middle">no treatment</text>', g.x + 25, g.y0 - 5)
			   ELSE pg_catalog.format(
				'<rect class="mark treatment" x="%s" y="%s" width="50" height="%s">'
				'<title>%s, treatment: %s per enrollment over %s enrollments</title></rect>'
				'<text class="value" x="%s" y="%s" text-anchor="middle">%s</text>',
				g.x, LEAST(g.yt, g.y0), pg_catalog.abs(g.y0 - g.yt),
				@extschema@._html_escape(g.title), pg_catalog.round(g.mt, 2), g.nt,
				g.x + 25, LEAST(g.yt, g.y0, COALESCE(g.yhi, g.yt)) - 5, pg_catalog.round(g.mt, 2)) END
			|| CASE WHEN g.lo IS NULL THEN '' ELSE pg_catalog.format(
				'<path class="interval" d="M%s %sH%sM%s %sV%sM%s %sH%s">'
				'<title>95 %% interval of the lift: %s to %s per enrollment</title></path>',
				g.x + 17, g.yhi, g.x + 33, g.x + 25, g.yhi, g.ylo, g.x + 17, g.ylo, g.x + 33,
				pg_catalog.round(g.revenue_lift_low, 2), pg_catalog.round(g.revenue_lift_high, 2)) END
			-- holdout bar and its value
			|| CASE WHEN g.mh IS NULL THEN pg_catalog.format(
				'<text class="note" x="%s" y="%s" text-anchor="middle">no holdout</text>', g.x + 83, g.y0 - 5)
			   ELSE pg_catalog.format(
				'<rect class="mark holdout" x="%s" y="%s" width="50" height="%s">'
				'<title>%s, holdout: %s per enrollment over %s enrollments</title></rect>'
				'<text class="value" x="%s" y="%s" text-anchor="middle">%s</text>',
				g.x + 58, LEAST(g.yh, g.y0), pg_catalog.abs(g.y0 - g.yh),
				@extschema@._html_escape(g.title), pg_catalog.round(g.mh, 2), g.nh,
				g.x + 83, LEAST(g.yh, g.y0) - 5, pg_catalog.round(g.mh, 2)) END
			-- under the group: the campaign, the verdict, the group sizes
			|| pg_catalog.format(
				'<text class="label" x="%s" y="%s" text-anchor="middle">%s</text>'
				'<text class="%s" x="%s" y="%s" text-anchor="middle">%s</text>'
				'<text class="note" x="%s" y="%s" text-anchor="middle">n = %s / %s</text></g>',
				g.x + 54, tm + ph + 18, @extschema@._dashboard_label(g.title, 20),
				CASE WHEN g.too_small_to_tell THEN 'verdict warn' ELSE 'verdict' END, g.x + 54, tm + ph + 34,
				CASE WHEN g.too_small_to_tell THEN 'too small to tell'
					 WHEN g.revenue_lift IS NULL THEN 'no lift measured'
					 ELSE pg_catalog.format('lift %s%s per enrollment', CASE WHEN g.revenue_lift >= 0 THEN '+' ELSE '' END,
											pg_catalog.round(g.revenue_lift, 2)) END,
				g.x + 54, tm + ph + 50, g.nt, g.nh),
			'' ORDER BY g.n)
	  INTO body
	  FROM g;
	IF body IS NOT NULL THEN
		-- axis: ticks at zero, the ends and half-way to them; legend
		SELECT pg_catalog.string_agg(pg_catalog.format(
				'<line class="%s" x1="%s" y1="%s" x2="%s" y2="%s"/><text class="tick" x="%s" y="%s" text-anchor="end">%s</text>',
				CASE WHEN v = 0 THEN 'zero' ELSE 'grid' END,
				lm, pg_catalog.round(tm + ph * (ymax - v) / (ymax - ymin), 1),
				lm + groups * gw + 20, pg_catalog.round(tm + ph * (ymax - v) / (ymax - ymin), 1),
				lm - 6, pg_catalog.round(tm + ph * (ymax - v) / (ymax - ymin), 1) + 4, pg_catalog.round(v, 2)), '' ORDER BY v)
			   || body
			   || pg_catalog.format(
				'<rect class="swatch treatment" x="%1$s" y="8" width="14" height="10"/><text class="note" x="%2$s" y="17">treatment</text>'
				'<rect class="swatch holdout" x="%3$s" y="8" width="14" height="10"/><text class="note" x="%4$s" y="17">holdout</text>'
				'<path class="interval" d="M%5$s 8V18M%6$s 13H%7$s M%8$s 8V18"/>'
				'<text class="note" x="%9$s" y="17">95 %% interval of the lift</text>'
				'<text class="axis" x="0" y="0" text-anchor="middle" transform="translate(14,%10$s) rotate(-90)">revenue per enrollment</text>',
				lm, lm + 18, lm + 100, lm + 118, lm + 190, lm + 190, lm + 204, lm + 204, lm + 212, tm + ph / 2)
		  INTO body
		  FROM (SELECT DISTINCT x.v FROM (VALUES (ymin), (ymin / 2), (0::pg_catalog.numeric), (ymax / 2), (ymax)) x (v)) t;
	END IF;
	RETURN @extschema@._dashboard_svg('campaign-lift', lm + GREATEST(groups, 3) * gw + 40, tm + ph + 62,
		'Campaign revenue per enrollment, treatment vs holdout, with the 95 % interval of the lift', body);
END
$$;

-- A table of report_campaigns.
CREATE FUNCTION @extschema@._dashboard_campaign_table()
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	body pg_catalog.text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.format(
			'<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class="n">%s</td><td class="n">%s</td><td class="n">%s</td>'
			'<td class="n">%s</td><td class="n">%s</td><td class="n">%s</td><td class="n">%s</td><td class="n">%s</td></tr>',
			@extschema@._html_escape(c.campaign_id), @extschema@._html_escape(c.title), @extschema@._html_escape(c.signal),
			@extschema@._html_escape(c.status), c.enrolled, c.holdout, c.sent, c.clicked, c.credited_orders,
			pg_catalog.round(c.revenue, 2),
			COALESCE(pg_catalog.round((100 * c.conversion_rate)::pg_catalog.numeric, 1) || ' %', '&#8211;'),
			c.opt_outs), '' ORDER BY c.campaign_id)
	  INTO body
	  FROM @extschema@.report_campaigns c;
	RETURN '<table id="campaigns"><thead><tr><th>campaign</th><th>title</th><th>signal</th><th>status</th>'
		'<th class="n">enrolled</th><th class="n">holdout</th><th class="n">sent</th><th class="n">clicked</th>'
		'<th class="n">credited orders</th><th class="n">revenue</th><th class="n">conversion</th><th class="n">opt-outs</th>'
		'</tr></thead><tbody>'
		|| COALESCE(body, '<tr><td class="empty" colspan="12">no data yet: no campaigns</td></tr>')
		|| '</tbody></table>';
END
$$;

CREATE FUNCTION @extschema@.dashboard_html(title pg_catalog.text DEFAULT 'segments dashboard')
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t pg_catalog.text := @extschema@._html_escape(COALESCE(dashboard_html.title, 'segments dashboard'));
BEGIN
	RETURN '<!DOCTYPE html>' || E'\n'
		|| '<html lang="en"><head><meta charset="utf-8"/>'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
		|| '<meta name="generator" content="segments ' || @extschema@._html_escape(
			(SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'segments')) || '"/>'
		|| '<title>' || t || '</title><style>'
		|| 'body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f6f9;color:#1e293b}'
		|| 'header{padding:18px 28px;background:#1e293b;color:#f8fafc}header h1{margin:0;font-size:22px}'
		|| 'header p{margin:4px 0 0;color:#cbd5e1;font-size:13px}'
		|| 'main{display:flex;flex-wrap:wrap;gap:18px;padding:18px 28px}'
		|| 'section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:14px 18px;flex:1 1 520px;overflow-x:auto}'
		|| 'section.wide{flex-basis:100%}h2{margin:0 0 2px;font-size:16px}section p{margin:0 0 10px;color:#64748b;font-size:12.5px}'
		|| 'svg.chart{display:block;max-width:100%;height:auto}svg text{font-size:12px;fill:#334155}'
		|| 'svg text.value{font-weight:600}svg text.on-dark{fill:#fff}svg text.tick,svg text.note{fill:#64748b;font-size:11px}'
		|| 'svg text.axis{fill:#475569;font-size:12px}svg text.empty{fill:#94a3b8;font-size:18px}'
		|| 'svg text.warn{fill:#b45309;font-weight:600}svg text.verdict{font-size:11.5px}'
		|| 'rect.bar{fill:#3b82f6}rect.too-small{fill:#cbd5e1;stroke:#64748b;stroke-dasharray:3 2}'
		|| 'rect.stage-1{fill:#94a3b8}rect.stage-2{fill:#f59e0b}rect.stage-3{fill:#a78bfa}rect.stage-4{fill:#60a5fa}rect.stage-5{fill:#10b981}'
		|| 'rect.treatment{fill:#2563eb}rect.holdout{fill:#94a3b8}g.too-small rect.mark{opacity:.55}'
		|| 'rect.cell{stroke:#fff}path.interval{stroke:#0f172a;stroke-width:1.5;fill:none}'
		|| 'line.grid{stroke:#e2e8f0}line.zero{stroke:#475569}'
		|| 'table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:5px 8px;border-bottom:1px solid #e2e8f0;text-align:left}'
		|| 'th{background:#f1f5f9;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.empty{color:#94a3b8}'
		|| '</style></head><body>'
		|| '<header><h1>' || t || '</h1><p>Made ' || pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
		|| ' UTC from the report views of schema segments</p></header><main>'
		|| '<section id="rfm"><h2>RFM grid</h2><p>Buyers per recency &#215; frequency score (5 is best); darker cells hold more buyers. '
		|| 'From report_rfm_grid.</p>' || @extschema@._dashboard_rfm_grid() || '</section>'
		|| '<section id="segments"><h2>Segment sizes</h2><p>Members of the 15 largest segments; grey dashed bars are too small '
		|| 'to measure. From report_segments.</p>' || @extschema@._dashboard_segment_sizes() || '</section>'
		|| '<section id="carts"><h2>Cart recovery</h2><p>All days of report_cart_recovery_daily: carts started, abandoned, '
		|| 'enrolled in a cart campaign, messaged and recovered by a credited order.</p>'
		|| @extschema@._dashboard_cart_funnel() || '</section>'
		|| '<section id="lift"><h2>Campaign revenue vs holdout</h2><p>Revenue per enrollment in the conversion window, '
		|| 'treatment vs holdout; the whisker is the 95 % interval of the lift. From report_holdout_lift.</p>'
		|| @extschema@._dashboard_campaign_lift() || '</section>'
		|| '<section id="campaigns-table" class="wide"><h2>Campaigns</h2><p>All time, from report_campaigns.</p>'
		|| @extschema@._dashboard_campaign_table() || '</section>'
		|| '</main></body></html>' || E'\n';
END
$$;

COMMENT ON FUNCTION @extschema@._dashboard_rfm_grid() IS 'Internal: the dashboard''s RFM grid heat map (svg#rfm-grid)';
COMMENT ON FUNCTION @extschema@._dashboard_segment_sizes() IS 'Internal: the dashboard''s segment sizes bars (svg#segment-sizes)';
COMMENT ON FUNCTION @extschema@._dashboard_cart_funnel() IS 'Internal: the dashboard''s cart-recovery funnel (svg#cart-funnel)';
COMMENT ON FUNCTION @extschema@._dashboard_campaign_lift() IS
'Internal: the dashboard''s revenue per enrollment, treatment vs holdout, per campaign (svg#campaign-lift)';
COMMENT ON FUNCTION @extschema@._dashboard_campaign_table() IS 'Internal: the dashboard''s table of report_campaigns';
COMMENT ON FUNCTION @extschema@.dashboard_html(pg_catalog.text) IS
'One self-contained HTML page (inline CSS and SVG, nothing fetched) with the RFM grid, segment sizes, cart-recovery funnel and campaign lift charts and a campaigns table, drawn from the report views; runs with the caller''s rights';

-- Readers of the reports may draw them; nobody else.
REVOKE EXECUTE ON FUNCTION @extschema@.dashboard_html(pg_catalog.text), @extschema@._dashboard_rfm_grid(),
	@extschema@._dashboard_segment_sizes(), @extschema@._dashboard_cart_funnel(),
	@extschema@._dashboard_campaign_lift(), @extschema@._dashboard_campaign_table() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dashboard_html(pg_catalog.text), @extschema@._dashboard_rfm_grid(),
	@extschema@._dashboard_segment_sizes(), @extschema@._dashboard_cart_funnel(),
	@extschema@._dashboard_campaign_lift(), @extschema@._dashboard_campaign_table() TO segments_reader, segments_admin;

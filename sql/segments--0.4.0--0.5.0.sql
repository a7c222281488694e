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



--------------------------------------------------------------------------------
-- 3. Report views
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 4. Erasure
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 5. Roles
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 6. Dashboard
--
-- (dashboard_html() and its helpers go here)
--------------------------------------------------------------------------------


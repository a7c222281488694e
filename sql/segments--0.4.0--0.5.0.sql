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
-- as before.
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
	cond pg_catalog.text;
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
				SELECT pg_catalog.string_agg(@extschema@._score_measure_range(m.measure, LEAST(b.o, b.nw), GREATEST(b.o, b.nw)), ' OR ')
				  INTO cond
				  FROM ROWS FROM (pg_catalog.unnest(m.breaks), pg_catalog.unnest(new_breaks)) WITH ORDINALITY AS b(o, nw, k)
				 WHERE b.o IS DISTINCT FROM b.nw
				   AND (every_break OR b.k::pg_catalog.int4 = ANY (relevant));
				IF cond IS NOT NULL THEN
					conds := conds || ('(' || cond || ')');
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


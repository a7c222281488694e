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
-- compilation alone would cost more than the whole statement.
CREATE FUNCTION @extschema@._evaluate_keyed(keys pg_catalog.text[], as_of pg_catalog.timestamptz,
	evaluation_id pg_catalog.int8,
	OUT customers pg_catalog.int8, OUT entered pg_catalog.int8, OUT exited pg_catalog.int8,
	OUT watch_changes pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
SET jit = off
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


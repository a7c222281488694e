/* segments 0.1.0: scores — tie-exact quantiles, RFM, recency, buying cycle */

\echo Use "CREATE EXTENSION segments" to load this file. \quit

/*
 * Data flow of the whole extension, kept in this order in every script:
 *   shop tables -> customer facts -> SCORES -> segment membership ->
 *   campaign steps and stop rules -> outbox -> sender -> engagement -> reports
 * This release ships the scoring kernel.
 */

--------------------------------------------------------------------------------
-- Scores 1: value_counts, the state of the tie-exact quantile aggregates.
-- Sorted distinct float8 values with their counts: exact, small for tie-heavy
-- data (order counts), and a concrete type with text I/O so that parallel
-- query and Citus can move it between processes and nodes.
--------------------------------------------------------------------------------

CREATE TYPE @extschema@.value_counts;

CREATE FUNCTION @extschema@.value_counts_in(pg_catalog.cstring)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_value_counts_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.value_counts_out(@extschema@.value_counts)
RETURNS pg_catalog.cstring
AS 'MODULE_PATHNAME', 'segments_value_counts_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.value_counts_recv(pg_catalog.internal)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_value_counts_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.value_counts_send(@extschema@.value_counts)
RETURNS pg_catalog.bytea
AS 'MODULE_PATHNAME', 'segments_value_counts_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE @extschema@.value_counts (
	INPUT = @extschema@.value_counts_in,
	OUTPUT = @extschema@.value_counts_out,
	RECEIVE = @extschema@.value_counts_recv,
	SEND = @extschema@.value_counts_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = double,
	STORAGE = extended
);

COMMENT ON TYPE @extschema@.value_counts IS
'State of the tie-exact quantile aggregates: sorted distinct values with their counts';

-- Aggregate support. The transition function is not strict: it must create
-- the state on the first row and skip NULL values itself.
CREATE FUNCTION @extschema@.ntile_breaks_accum(@extschema@.value_counts, pg_catalog.float8, pg_catalog.int4)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_ntile_breaks_accum'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION @extschema@.ntile_breaks_accum(@extschema@.value_counts, pg_catalog.float8, pg_catalog.int4, pg_catalog.bool)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_ntile_breaks_accum'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION @extschema@.value_counts_combine(@extschema@.value_counts, @extschema@.value_counts)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_value_counts_combine'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION @extschema@.ntile_breaks_final(@extschema@.value_counts)
RETURNS pg_catalog.float8[]
AS 'MODULE_PATHNAME', 'segments_ntile_breaks_final'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE @extschema@.ntile_breaks(value pg_catalog.float8, buckets pg_catalog.int4) (
	SFUNC = @extschema@.ntile_breaks_accum,
	STYPE = @extschema@.value_counts,
	COMBINEFUNC = @extschema@.value_counts_combine,
	FINALFUNC = @extschema@.ntile_breaks_final,
	PARALLEL = SAFE
);

CREATE AGGREGATE @extschema@.ntile_breaks(value pg_catalog.float8, buckets pg_catalog.int4, higher_is_better pg_catalog.bool) (
	SFUNC = @extschema@.ntile_breaks_accum,
	STYPE = @extschema@.value_counts,
	COMBINEFUNC = @extschema@.value_counts_combine,
	FINALFUNC = @extschema@.ntile_breaks_final,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE @extschema@.ntile_breaks(pg_catalog.float8, pg_catalog.int4) IS
'Tie-exact breakpoints splitting the values into N score buckets (higher value scores higher); equal values always share a bucket';
COMMENT ON AGGREGATE @extschema@.ntile_breaks(pg_catalog.float8, pg_catalog.int4, pg_catalog.bool) IS
'Tie-exact breakpoints splitting the values into N score buckets; higher_is_better = false scores lower values higher (recency in days)';

CREATE FUNCTION @extschema@.ntile_score(value pg_catalog.float8, breaks pg_catalog.float8[], higher_is_better pg_catalog.bool DEFAULT true)
RETURNS pg_catalog.int4
AS 'MODULE_PATHNAME', 'segments_ntile_score'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.ntile_score(pg_catalog.float8, pg_catalog.float8[], pg_catalog.bool) IS
'Score 1..N of a value against breakpoints from ntile_breaks() computed with the same direction';

--------------------------------------------------------------------------------
-- Scores 2: the buying cycle, a customer's own median gap between orders.
--------------------------------------------------------------------------------

CREATE TYPE @extschema@.buying_cycle_stats AS (
	median_gap_days pg_catalog.float8,
	gap_count pg_catalog.int4
);

COMMENT ON TYPE @extschema@.buying_cycle_stats IS
'Result of buying_cycle(): median days between consecutive orders and how many gaps it was taken over';

CREATE FUNCTION @extschema@.buying_cycle_accum(@extschema@.value_counts, pg_catalog.timestamptz)
RETURNS @extschema@.value_counts
AS 'MODULE_PATHNAME', 'segments_buying_cycle_accum'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

CREATE FUNCTION @extschema@.buying_cycle_final(@extschema@.value_counts)
RETURNS @extschema@.buying_cycle_stats
AS 'MODULE_PATHNAME', 'segments_buying_cycle_final'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;  -- no orders: (NULL, 0), not NULL

CREATE AGGREGATE @extschema@.buying_cycle(order_time pg_catalog.timestamptz) (
	SFUNC = @extschema@.buying_cycle_accum,
	STYPE = @extschema@.value_counts,
	COMBINEFUNC = @extschema@.value_counts_combine,
	FINALFUNC = @extschema@.buying_cycle_final,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE @extschema@.buying_cycle(pg_catalog.timestamptz) IS
'A customer''s buying cycle: median days between consecutive order times, and the number of gaps';

--------------------------------------------------------------------------------
-- Scores 3: recency in days and owner-set recency bands.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.recency_days(last_order_at pg_catalog.timestamptz, as_of pg_catalog.timestamptz)
RETURNS pg_catalog.int4
AS 'MODULE_PATHNAME', 'segments_recency_days'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.recency_days(pg_catalog.timestamptz, pg_catalog.timestamptz) IS
'Whole days (24-hour periods) from the last order to as_of; 0 when the order is at or after as_of';

CREATE FUNCTION @extschema@.recency_bucket(last_order_at pg_catalog.timestamptz, as_of pg_catalog.timestamptz,
	band_edges pg_catalog.int4[] DEFAULT '{30,60,90,180,365}')
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'segments_recency_bucket'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.recency_bucket(pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4[]) IS
'Label of the recency band (e.g. ''31-60'', ''366+'') that the days since the last order fall in';

CREATE FUNCTION @extschema@.recency_bucket_labels(band_edges pg_catalog.int4[] DEFAULT '{30,60,90,180,365}')
RETURNS pg_catalog.text[]
AS 'MODULE_PATHNAME', 'segments_recency_bucket_labels'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.recency_bucket_labels(pg_catalog.int4[]) IS
'Every label recency_bucket() can return for these band edges, most recent band first';

--------------------------------------------------------------------------------
-- Scores 4: RFM cells and named groups.
-- Groups are placed on the R x (F+M)/2 grid. Our defaults live in
-- rfm_group_default (not dumped: CREATE EXTENSION writes them); the owner's
-- own map lives in rfm_group_map (dumped whole). A non-empty owner map
-- replaces the defaults entirely, so the effective map is never a mixture.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.rfm_cell(recency_score pg_catalog.int4, frequency_score pg_catalog.int4, monetary_score pg_catalog.int4)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'segments_rfm_cell'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.rfm_cell(pg_catalog.int4, pg_catalog.int4, pg_catalog.int4) IS
'The RFM cell of three 1..5 scores, e.g. ''543''';

CREATE TABLE @extschema@.rfm_group_default (
	group_name pg_catalog.text PRIMARY KEY,
	position pg_catalog.int4 NOT NULL UNIQUE,
	r_min pg_catalog.int4 NOT NULL CHECK (r_min BETWEEN 1 AND 5),
	r_max pg_catalog.int4 NOT NULL CHECK (r_max BETWEEN 1 AND 5),
	fm_min pg_catalog.numeric(2,1) NOT NULL CHECK (fm_min BETWEEN 1 AND 5),
	fm_max pg_catalog.numeric(2,1) NOT NULL CHECK (fm_max BETWEEN 1 AND 5),
	description pg_catalog.text NOT NULL,
	CHECK (r_min <= r_max),
	CHECK (fm_min <= fm_max)
);

COMMENT ON TABLE @extschema@.rfm_group_default IS
'The built-in RFM group map (Shopify-compatible names on the R x (F+M)/2 grid); used while rfm_group_map is empty';

INSERT INTO @extschema@.rfm_group_default
	(group_name, position, r_min, r_max, fm_min, fm_max, description) VALUES
	('champions',        1, 5, 5, 4.0, 5.0, 'Very recent purchase, many orders, the most spend'),
	('loyal',            2, 3, 4, 4.0, 5.0, 'Recent purchase, many orders, the most spend'),
	('active',           3, 4, 5, 2.0, 3.5, 'Recent purchase, some orders, moderate spend'),
	('new',              4, 5, 5, 1.0, 1.5, 'Very recent purchase, few orders, low spend'),
	('promising',        5, 3, 4, 1.0, 1.5, 'Fairly recent purchase, few orders, low spend'),
	('needs_attention',  6, 3, 3, 2.0, 3.5, 'Middling recency, some orders, moderate spend'),
	('at_risk',          7, 2, 2, 3.0, 5.0, 'No recent purchase, strong history of orders and spend'),
	('almost_lost',      8, 2, 2, 1.0, 2.5, 'No recent purchase, few orders, lower spend'),
	('previously_loyal', 9, 1, 1, 3.0, 5.0, 'Long without a purchase, strong history of orders and spend'),
	('dormant',         10, 1, 1, 1.0, 2.5, 'Long without a purchase, few orders, low spend');

CREATE TABLE @extschema@.rfm_group_map (LIKE @extschema@.rfm_group_default INCLUDING ALL);

COMMENT ON TABLE @extschema@.rfm_group_map IS
'The shop''s own RFM group map; when it has rows it replaces rfm_group_default. Start from the defaults with rfm_group_map_customize()';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.rfm_group_map', '');

CREATE VIEW @extschema@.rfm_groups AS
	SELECT m.group_name, m.position, m.r_min, m.r_max, m.fm_min, m.fm_max, m.description,
		   'owner'::pg_catalog.text AS source
	  FROM @extschema@.rfm_group_map m
	UNION ALL
	SELECT d.group_name, d.position, d.r_min, d.r_max, d.fm_min, d.fm_max, d.description,
		   'default'::pg_catalog.text
	  FROM @extschema@.rfm_group_default d
	 WHERE NOT EXISTS (SELECT FROM @extschema@.rfm_group_map);

COMMENT ON VIEW @extschema@.rfm_groups IS
'The RFM group map in force: the owner''s map when it has rows, otherwise the defaults. First matching position wins';

CREATE FUNCTION @extschema@.rfm_group(recency_score pg_catalog.int4, frequency_score pg_catalog.int4, monetary_score pg_catalog.int4)
RETURNS pg_catalog.text
AS 'MODULE_PATHNAME', 'segments_rfm_group'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.rfm_group(pg_catalog.int4, pg_catalog.int4, pg_catalog.int4) IS
'Named RFM group of three 1..5 scores from the map in force (view rfm_groups); ''prospects'' when all scores are NULL (no orders); NULL for a cell no group covers';

CREATE FUNCTION @extschema@.rfm_group_map_customize()
RETURNS pg_catalog.int4
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	copied pg_catalog.int4;
BEGIN
	-- serialize concurrent customizations: the loser sees the winner's rows
	LOCK TABLE @extschema@.rfm_group_map IN SHARE ROW EXCLUSIVE MODE;
	IF EXISTS (SELECT FROM @extschema@.rfm_group_map) THEN
		RAISE EXCEPTION 'the RFM group map is already customized'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Edit segments.rfm_group_map directly, or empty it to go back to the defaults.';
	END IF;
	INSERT INTO @extschema@.rfm_group_map
		SELECT d.* FROM @extschema@.rfm_group_default d;
	GET DIAGNOSTICS copied = ROW_COUNT;
	RETURN copied;
END
$$;

COMMENT ON FUNCTION @extschema@.rfm_group_map_customize() IS
'Copies the default RFM group map into rfm_group_map so the owner can edit it; returns the number of groups copied';

CREATE VIEW @extschema@.rfm_group_cells AS
	SELECT r.r AS recency_score, f.f AS frequency_score, m.m AS monetary_score,
		   @extschema@.rfm_cell(r.r, f.f, m.m) AS cell,
		   @extschema@.rfm_group(r.r, f.f, m.m) AS group_name
	  FROM pg_catalog.generate_series(5, 1, -1) AS r(r),
		   pg_catalog.generate_series(5, 1, -1) AS f(f),
		   pg_catalog.generate_series(5, 1, -1) AS m(m);

COMMENT ON VIEW @extschema@.rfm_group_cells IS
'All 125 RFM cells with the group each one maps to under the map in force; a NULL group_name is a gap in the owner''s map';

-- Scoring helpers and the RFM map are not personal data: anyone may use
-- them. Tables holding customer data get no PUBLIC grants.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON @extschema@.rfm_groups, @extschema@.rfm_group_cells, @extschema@.rfm_group_default TO PUBLIC;

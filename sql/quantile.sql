--
-- quantile: the value_counts type, the tie-exact ntile_breaks() /
-- ntile_score() pair and buying_cycle().
--
-- Tie rule under test (ascending): score(v) = 1 + floor(B * L(v) / N), with
-- L(v) the number of values strictly below v; descending mirrors it with the
-- number of values strictly above v.
--
CREATE SCHEMA vc_test;

-- Aggregates that expose the raw state, and ones that combine states given
-- as text the way Citus does on its coordinator.
CREATE AGGREGATE vc_test.ntile_state(float8, int4, bool) (
	SFUNC = segments.ntile_breaks_accum, STYPE = segments.value_counts,
	COMBINEFUNC = segments.value_counts_combine, PARALLEL = SAFE);
CREATE AGGREGATE vc_test.cycle_state(timestamptz) (
	SFUNC = segments.buying_cycle_accum, STYPE = segments.value_counts,
	COMBINEFUNC = segments.value_counts_combine, PARALLEL = SAFE);
CREATE AGGREGATE vc_test.merge_states(segments.value_counts) (
	SFUNC = segments.value_counts_combine, STYPE = segments.value_counts);
CREATE AGGREGATE vc_test.merge_breaks(segments.value_counts) (
	SFUNC = segments.value_counts_combine, STYPE = segments.value_counts,
	FINALFUNC = segments.ntile_breaks_final);
CREATE AGGREGATE vc_test.merge_cycle(segments.value_counts) (
	SFUNC = segments.value_counts_combine, STYPE = segments.value_counts,
	FINALFUNC = segments.buying_cycle_final);

-- text input, or the SQLSTATE and detail of the error it raises
CREATE FUNCTION vc_test.try_in(t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	d text;
BEGIN
	RETURN t::segments.value_counts::text;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || d;
END
$$;

-- Binary input: wrap the payload in a one-row COPY BINARY stream and feed
-- it to value_counts_recv through COPY FROM PROGRAM (printf with octal
-- escapes: no temporary file).
CREATE TABLE vc_test.recv_buf (v segments.value_counts);
CREATE FUNCTION vc_test.try_recv(payload bytea) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	stream bytea := '\x5047434f50590aff0d0a00'::bytea || '\x0000000000000000'::bytea
		|| '\x0001'::bytea || int4send(length(payload)) || payload || '\xffff'::bytea;
	octal text;
	result text;
	d text;
BEGIN
	SELECT string_agg('\' || (get_byte(stream, i) / 64)::text
						  || (get_byte(stream, i) / 8 % 8)::text
						  || (get_byte(stream, i) % 8)::text, '' ORDER BY i)
	  INTO octal FROM generate_series(0, length(stream) - 1) i;
	TRUNCATE vc_test.recv_buf;
	EXECUTE format('COPY vc_test.recv_buf FROM PROGRAM %L WITH (FORMAT binary)',
				   'printf ''' || octal || '''');
	SELECT v::text INTO result FROM vc_test.recv_buf;
	RETURN result;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || d;
END
$$;

--
-- 1. Ties: a shop where 60 % of the customers ordered once.
--
CREATE TABLE vc_test.shop AS
SELECT i AS customer,
	   CASE WHEN i <= 600 THEN 1 WHEN i <= 850 THEN 2 WHEN i <= 950 THEN 3
			ELSE 4 + i % 7 END::float8 AS orders
  FROM generate_series(1, 1000) i;

SELECT segments.ntile_breaks(orders, 5) FROM vc_test.shop;

-- every one-order customer gets F = 1, and the counts per score follow
SELECT segments.ntile_score(orders, b) AS f, min(orders), max(orders), count(*)
  FROM vc_test.shop, (SELECT segments.ntile_breaks(orders, 5) AS b FROM vc_test.shop) x
 GROUP BY 1 ORDER BY 1;

-- the same ten customers scaled down, with their scores
SELECT v, segments.ntile_score(v, b) AS score
  FROM (VALUES (1), (1), (1), (1), (1), (1), (2), (2), (3), (5)) s(v),
	   (SELECT segments.ntile_breaks(v, 5) AS b
		  FROM (VALUES (1), (1), (1), (1), (1), (1), (2), (2), (3), (5)) s(v)) x
 GROUP BY 1, 2 ORDER BY 1;
SELECT segments.ntile_breaks(v, 5)
  FROM (VALUES (1), (1), (1), (1), (1), (1), (2), (2), (3), (5)) s(v);

-- descending (fewer days since the last order is better)
SELECT segments.ntile_breaks(v, 5, false)
  FROM (VALUES (1), (1), (1), (1), (1), (1), (2), (2), (3), (5)) s(v);
SELECT v, segments.ntile_score(v, b, false) AS score
  FROM (VALUES (1), (2), (3), (5)) s(v),
	   (SELECT segments.ntile_breaks(v, 5, false) AS b
		  FROM (VALUES (1), (1), (1), (1), (1), (1), (2), (2), (3), (5)) s(v)) x
 ORDER BY 1;

--
-- 2. The oracle: for every data set, bucket count and direction,
-- ntile_score(v, ntile_breaks(...)) = 1 + floor(B * (rank() - 1) / N).
--
CREATE TABLE vc_test.data AS
SELECT 'ties' AS ds, ((i * 7919) % 1000) / 10.0::float8 AS v
  FROM generate_series(1, 5000) i
UNION ALL SELECT 'ties', NULL FROM generate_series(1, 50)
UNION ALL
SELECT 'sqrt', floor(sqrt(i)) FROM generate_series(1, 3000) i
UNION ALL
SELECT 'one_order_shop', orders FROM vc_test.shop
UNION ALL
SELECT 'squares_mod', ((i::bigint * i) % 10007 - 5000)::float8
  FROM generate_series(1, 12000) i
UNION ALL
SELECT 'three_values', (i % 3)::float8 FROM generate_series(1, 100) i
UNION ALL
SELECT 'reciprocals', 1.0 / i FROM generate_series(1, 6000) i
UNION ALL
SELECT 'top_heavy', CASE WHEN i <= 100 THEN i ELSE 1000 END::float8
  FROM generate_series(1, 1000) i
UNION ALL
SELECT 'single', 42 FROM generate_series(1, 7);

WITH params AS (
	SELECT b, hib FROM unnest(ARRAY[1, 2, 3, 4, 5, 7, 10, 100, 1000]) b,
					   (VALUES (true), (false)) h(hib)),
brk AS (
	SELECT ds, b, hib, segments.ntile_breaks(v, b, hib) AS breaks
	  FROM vc_test.data, params
	 GROUP BY ds, b, hib),
scored AS (
	SELECT d.ds, p.b, p.hib, d.v,
		   CASE WHEN p.hib
				THEN rank() OVER (PARTITION BY d.ds, p.b, p.hib ORDER BY d.v)
				ELSE rank() OVER (PARTITION BY d.ds, p.b, p.hib ORDER BY d.v DESC)
		   END AS rk,
		   count(*) OVER (PARTITION BY d.ds, p.b, p.hib) AS n
	  FROM vc_test.data d, params p
	 WHERE d.v IS NOT NULL)
SELECT s.ds, s.hib, count(*) AS checked,
	   count(*) FILTER (WHERE segments.ntile_score(s.v, k.breaks, s.hib)
						 <> 1 + (s.b * (s.rk - 1) / s.n)::int) AS mismatches
  FROM scored s JOIN brk k USING (ds, b, hib)
 GROUP BY s.ds, s.hib
 ORDER BY 1, 2;

-- the 2-argument overload is the ascending one
SELECT ds, segments.ntile_breaks(v, 4) = segments.ntile_breaks(v, 4, true) AS same
  FROM vc_test.data GROUP BY ds ORDER BY ds;

-- breaks are non-decreasing (ascending) / non-increasing (descending)
SELECT ds, segments.ntile_breaks(v, 10), segments.ntile_breaks(v, 10, false)
  FROM vc_test.data WHERE ds IN ('sqrt', 'three_values', 'top_heavy')
 GROUP BY ds ORDER BY ds;

-- the running (window) form calls the final function again and again
SELECT i, segments.ntile_breaks(v, 3) OVER (ORDER BY i)
  FROM (VALUES (1, 5.0), (2, 1.0), (3, 3.0), (4, 3.0), (5, NULL), (6, 2.0)) s(i, v)
 ORDER BY i;

-- a moving frame restarts the aggregate
SELECT i, segments.ntile_breaks(v, 2) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
  FROM (VALUES (1, 5.0), (2, 1.0), (3, 3.0), (4, 3.0), (5, NULL), (6, 2.0)) s(i, v)
 ORDER BY i;

--
-- 3. Edge cases.
--
-- NULLs are ignored; no rows or only NULLs give NULL
SELECT segments.ntile_breaks(v, 3)
  FROM (VALUES (NULL), (1.0), (NULL), (2.0), (3.0), (NULL)) s(v);
SELECT segments.ntile_breaks(v, 3) IS NULL AS is_null
  FROM (VALUES (1.0)) s(v) WHERE false;
SELECT segments.ntile_breaks(NULL::float8, 3) IS NULL AS is_null
  FROM generate_series(1, 3);
-- one value, all equal: nobody gets above score 1; the breaks sit one ulp
-- above (ascending) or below (descending) the value
SELECT segments.ntile_breaks(7, 4), segments.ntile_breaks(7, 4, false);
SELECT segments.ntile_breaks(7, 4) FROM generate_series(1, 5);
SELECT segments.ntile_score(7, segments.ntile_breaks(7, 4)),
	   segments.ntile_score(7, segments.ntile_breaks(7, 4, false), false);
-- negative zero is zero
SELECT segments.ntile_breaks(v, 2) FROM (VALUES (-0.0::float8), (0.0), (1.0)) s(v);
-- one bucket: no breaks, everybody scores 1
SELECT segments.ntile_breaks(v, 1) FROM generate_series(1, 5) v;
SELECT segments.ntile_score(3, '{}'), segments.ntile_score(3, '{}', false);
-- more buckets than values
SELECT segments.ntile_breaks(v, 6) FROM generate_series(1, 3) v;
-- extremes of float8
SELECT segments.ntile_breaks(v, 2)
  FROM (VALUES (-1.7976931348623157e308::float8), (5e-324), (1.7976931348623157e308)) s(v);
SELECT segments.ntile_breaks(1.7976931348623157e308::float8, 2);

-- errors
SELECT segments.ntile_breaks(v, 5) FROM (VALUES (1.0), ('NaN')) s(v);
SELECT segments.ntile_breaks(v, 5) FROM (VALUES (1.0), ('Infinity')) s(v);
SELECT segments.ntile_breaks(v, 5, false) FROM (VALUES ('-Infinity'::float8)) s(v);
SELECT segments.ntile_breaks(v, 0) FROM (VALUES (1.0)) s(v);
SELECT segments.ntile_breaks(v, -3) FROM (VALUES (1.0)) s(v);
SELECT segments.ntile_breaks(v, 1001) FROM (VALUES (1.0)) s(v);
SELECT segments.ntile_breaks(v, NULL) FROM (VALUES (1.0)) s(v);
SELECT segments.ntile_breaks(v, 5, NULL) FROM (VALUES (1.0)) s(v);
SELECT segments.ntile_breaks(v, b) FROM (VALUES (1.0, 5), (2.0, 4)) s(v, b);
SELECT segments.ntile_breaks(v, 5, v < 2) FROM (VALUES (1.0), (2.0)) s(v);
-- a bad bucket count fails even on NULL values
SELECT segments.ntile_breaks(NULL::float8, 0);
-- the support functions only run inside aggregates
SELECT segments.ntile_breaks_accum(NULL, 1.0, 5);
SELECT segments.value_counts_combine(NULL, NULL);
SELECT segments.buying_cycle_accum(NULL, now());

-- ntile_score() checks its arguments
SELECT segments.ntile_score('NaN', '{1,2}');
SELECT segments.ntile_score('Infinity', '{1,2}');
SELECT segments.ntile_score(1, '{1,NaN}');
SELECT segments.ntile_score(1, '{1,Infinity}');
SELECT segments.ntile_score(1, '{1,NULL,3}');
SELECT segments.ntile_score(1, '{{1,2},{3,4}}');
SELECT segments.ntile_score(1, '{3,2,1}');
SELECT segments.ntile_score(1, '{1,2,3}', false);
-- equal breaks are fine in both directions; NULL arguments give NULL
SELECT segments.ntile_score(2, '{2,2}'), segments.ntile_score(2, '{2,2}', false);
SELECT segments.ntile_score(NULL, '{1}'), segments.ntile_score(1, NULL),
	   segments.ntile_score(1, '{1}', NULL);
-- binary search at the boundaries
SELECT v, segments.ntile_score(v, '{10,20,20,30}') AS asc_score,
	   segments.ntile_score(v, '{30,20,20,10}', false) AS desc_score
  FROM unnest(ARRAY[-1, 9.99, 10, 15, 20, 29, 30, 31]::float8[]) v ORDER BY v;

--
-- 4. Text I/O.
--
SELECT vc_test.ntile_state(v, 5, true)
  FROM (VALUES (3.5), (1), (2), (1), (-0.0), (0), (NULL), (1e-7), (-2.25)) s(v);
SELECT vc_test.ntile_state(v, 3, false) FROM generate_series(1, 4) v;
SELECT vc_test.cycle_state(t)
  FROM (VALUES ('2000-01-01 00:00:00+00'::timestamptz), ('2000-01-02 00:00:00+00'),
			   ('2000-01-01 00:00:00+00')) s(t);
-- exact round trip, independent of extra_float_digits
SELECT x::text::segments.value_counts::text = x::text AS round_trip,
	   length(x::text) AS len
  FROM (SELECT vc_test.ntile_state(v, 7, true) AS x FROM vc_test.data) s;
SELECT x::text::segments.value_counts::text = x::text AS round_trip
  FROM (SELECT vc_test.ntile_state(sqrt(i) * 1e-3 - 0.1, 7, false) AS x
		  FROM generate_series(1, 20000) i) s;
SET extra_float_digits = -15;
SELECT 'v1;ntile;b5;asc;5e-324:1,0.1:1,0.30000000000000004:2,1e+300:1'::segments.value_counts;
RESET extra_float_digits;
SELECT 'v1;ntile;b5;asc;-1.5:2,0.1:1,123456789012345680000:3'::segments.value_counts;
SELECT 'v1;ntile;b1000;desc;'::segments.value_counts;
SELECT 'v1;cycle;-9007199254740992:1,9007199254740992:1'::segments.value_counts;
SELECT '-0:1'::text, 'v1;ntile;b2;asc;-0:1'::segments.value_counts;

-- malformed input
SELECT t, vc_test.try_in(t) FROM (VALUES
	(''),
	('v1'),
	('v2;ntile;b5;asc;1:1'),
	('v1;ntile;b5;asc;1:1,'),
	('v1;ntile;b5;asc;2:1,1:1'),
	('v1;ntile;b5;asc;1:1,1:2'),
	('v1;ntile;b5;asc;1:0'),
	('v1;ntile;b5;asc;1:-1'),
	('v1;ntile;b5;asc;1:1 '),
	(' v1;ntile;b5;asc;1:1'),
	('v1;ntile;b5;asc;1:1;'),
	('v1;ntile;b5;asc;1:1x'),
	('v1;ntile;b5;asc;abc'),
	('v1;ntile;b5;asc;NaN:1'),
	('v1;ntile;b5;asc;Infinity:1'),
	('v1;ntile;b5;asc;-inf:1'),
	('v1;ntile;b5;asc;0x10:1'),
	('v1;ntile;b5;asc;.5:1'),
	('v1;ntile;b5;asc;1.:1'),
	('v1;ntile;b5;asc;1e:1'),
	('v1;ntile;b5;asc;+1:1'),
	('v1;ntile;b5;asc;1e999:1'),
	('v1;ntile;b5;asc;1e-999:1'),
	('v1;ntile;b5;asc;1:99999999999999999999'),
	('v1;ntile;b5;asc;1:9223372036854775807,2:1'),
	('v1;ntile;b5;asc;1:9223372036854775807'),
	('v1;ntile;b0;asc;'),
	('v1;ntile;b1001;asc;'),
	('v1;ntile;b99999999999999999999;asc;'),
	('v1;ntile;5;asc;'),
	('v1;ntile;b5;up;'),
	('v1;ntile;b5;asc'),
	('v1;other;'),
	('v1;cycle;1.5:1'),
	('v1;cycle;9007199254740994:1'),
	('v1;cycle;b5;asc;1:1'),
	('v99999999999;cycle;'),
	('v1;ntile;b5;asc;1:1,,2:1')
) s(t);

--
-- 5. Binary I/O.
--
SELECT segments.value_counts_send('v1;ntile;b5;asc;1:600,2:200,3.5:1');
SELECT length(segments.value_counts_send('v1;ntile;b5;asc;1:600,2:200,3.5:1'));
SELECT segments.value_counts_send('v1;cycle;');
-- send compacts too: the same bytes for a state with an unsorted tail
SELECT segments.value_counts_send(vc_test.ntile_state(v, 5, true))
	 = segments.value_counts_send(vc_test.ntile_state(v, 5, true)::text::segments.value_counts) AS same
  FROM (VALUES (3.0), (1), (2), (1)) s(v);
-- round trips through value_counts_recv
SELECT vc_test.try_recv(segments.value_counts_send(x)) = x::text AS round_trip
  FROM (VALUES ('v1;ntile;b5;asc;1:600,2:200,3.5:1'::segments.value_counts),
			   ('v1;ntile;b1000;desc;-1e-300:1,5e-324:7'),
			   ('v1;cycle;'),
			   ('v1;cycle;-86400000000:1,0:3')) s(x);
-- (1000 pairs: the printf command must stay under the kernel's 128 kB limit)
SELECT vc_test.try_recv(segments.value_counts_send(vc_test.ntile_state(v, 9, false)))
	 = vc_test.ntile_state(v, 9, false)::text AS round_trip
  FROM vc_test.data WHERE ds = 'ties';
-- malformed binary input
SELECT n, vc_test.try_recv(b) FROM (VALUES
	(1, ''::bytea),
	(2, '\x02'::bytea),
	(3, '\x010100'::bytea),
	(4, '\x01030000000000000000000000'::bytea),
	(5, '\x01010200000005' || int4send(0)),
	(6, '\x01010000000000' || int4send(0)),
	(7, '\x010100' || int4send(1001) || int4send(0)),
	(8, '\x01020100000000' || int4send(0)),
	(9, '\x01020000000005' || int4send(0)),
	(10, '\x01010000000005' || int4send(2) || float8send(1) || int8send(1)),
	(11, '\x01010000000005' || int4send(-1)),
	(12, '\x01010000000005' || int4send(1) || float8send(1) || int8send(1) || '\x00'::bytea),
	(13, '\x01010000000005' || int4send(1) || float8send('NaN') || int8send(1)),
	(14, '\x01010000000005' || int4send(1) || float8send('-Infinity') || int8send(1)),
	(15, '\x01010000000005' || int4send(2) || float8send(2) || int8send(1) || float8send(1) || int8send(1)),
	(16, '\x01010000000005' || int4send(2) || float8send(1) || int8send(1) || float8send(1) || int8send(1)),
	(17, '\x01010000000005' || int4send(1) || float8send(1) || int8send(0)),
	(18, '\x01010000000005' || int4send(1) || float8send(1) || int8send(-5)),
	(19, '\x01010000000005' || int4send(2) || float8send(1) || int8send(9223372036854775807)
									 || float8send(2) || int8send(1)),
	(20, '\x01020000000000' || int4send(1) || float8send(0.5) || int8send(1)),
	(21, '\x01010000000005' || int4send(2) || float8send('-0') || int8send(1) || float8send(1) || int8send(2)),
	(22, '\x01010000000005' || int4send(2147483647))
) s(n, b) ORDER BY n;

--
-- 6. Combining states (parallel query, Citus), and states as INITCOND.
--
SELECT vc_test.merge_states(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:3,4:1'), (NULL), ('v1;ntile;b5;asc;2:2,4:5,9:1'),
			   ('v1;ntile;b5;asc;')) v(s);
SELECT vc_test.merge_breaks(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:3,4:1'), ('v1;ntile;b5;asc;2:2,4:5,9:1')) v(s);
SELECT segments.ntile_breaks(v, 5)
  FROM (VALUES (1), (1), (1), (4), (2), (2), (4), (4), (4), (4), (4), (9)) s(v);
SELECT vc_test.merge_breaks(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;')) v(s);
SELECT vc_test.merge_states(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:3'), ('v1;ntile;b4;asc;1:3')) v(s);
SELECT vc_test.merge_states(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:3'), ('v1;ntile;b5;desc;1:3')) v(s);
SELECT vc_test.merge_states(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:3'), ('v1;cycle;1:3')) v(s);
SELECT vc_test.merge_states(s::segments.value_counts)
  FROM (VALUES ('v1;ntile;b5;asc;1:9223372036854775807'), ('v1;ntile;b5;asc;2:1')) v(s);
-- a big state merged with a copy of itself doubles every count
SELECT vc_test.merge_states(x)::text
		 = (SELECT vc_test.ntile_state(i, 3, true)::text
			  FROM generate_series(1, 10000) i, (VALUES (1), (2)) two(n)) AS doubled
  FROM (SELECT vc_test.ntile_state(i, 3, true) AS x FROM generate_series(1, 10000) i) s,
	   (VALUES (1), (2)) two(n);
SELECT vc_test.merge_breaks(x) FROM (SELECT vc_test.ntile_state(i, 3, true) AS x
										FROM generate_series(1, 10000) i) s,
									(VALUES (1), (2)) two(n);
SELECT vc_test.merge_cycle(s::segments.value_counts)
  FROM (VALUES ('v1;cycle;0:1,86400000000:2'), ('v1;cycle;172800000000:1')) v(s);

-- final functions called directly on stored states (compacting a copy,
-- never the stored tuple)
CREATE TABLE vc_test.stored AS
SELECT vc_test.ntile_state(v, 3, true) AS s FROM (VALUES (3.0), (1), (2), (1)) x(v)
UNION ALL
SELECT vc_test.cycle_state(t) FROM (VALUES ('2000-01-03 00:00+00'::timestamptz),
										   ('2000-01-01 00:00+00'), ('2000-01-02 12:00+00')) x(t);
SELECT s, segments.ntile_breaks_final(s) FROM vc_test.stored WHERE s::text LIKE '%ntile%';
SELECT s, segments.buying_cycle_final(s) FROM vc_test.stored WHERE s::text LIKE '%cycle%';
SELECT s, segments.ntile_breaks_final(s) FROM vc_test.stored WHERE s::text LIKE '%ntile%';
SELECT segments.ntile_breaks_final(s) FROM vc_test.stored WHERE s::text LIKE '%cycle%';
SELECT segments.buying_cycle_final(s) FROM vc_test.stored WHERE s::text LIKE '%ntile%';

-- a prior state as INITCOND; its settings must match the calls
CREATE AGGREGATE vc_test.breaks_with_prior(float8, int4) (
	SFUNC = segments.ntile_breaks_accum, STYPE = segments.value_counts,
	FINALFUNC = segments.ntile_breaks_final, INITCOND = 'v1;ntile;b2;asc;100:5');
SELECT vc_test.breaks_with_prior(v, 2) FROM generate_series(1, 5) v;
SELECT vc_test.breaks_with_prior(v, 2) FROM generate_series(1, 5000) v;
SELECT vc_test.breaks_with_prior(v, 2) FROM generate_series(1, 5) v WHERE false;
SELECT vc_test.breaks_with_prior(v, 3) FROM generate_series(1, 5) v;
CREATE AGGREGATE vc_test.mixed_up(float8, int4) (
	SFUNC = segments.ntile_breaks_accum, STYPE = segments.value_counts,
	FINALFUNC = segments.ntile_breaks_final, INITCOND = 'v1;cycle;');
SELECT vc_test.mixed_up(v, 2) FROM generate_series(1, 5) v;

--
-- 7. Parallel query: the state crosses from workers to the leader.
--
CREATE TABLE vc_test.par AS
SELECT i, ((i::bigint * i) % 10007)::float8 AS v, (i % 13)::float8 AS w
  FROM generate_series(1, 60000) i;
ANALYZE vc_test.par;
CREATE TABLE vc_test.serial AS
SELECT segments.ntile_breaks(v, 5) AS a, segments.ntile_breaks(w, 4, false) AS b,
	   vc_test.ntile_state(v, 7, true)::text AS c,
	   segments.ntile_breaks(v, 5) FILTER (WHERE i <= 50) AS d,
	   segments.ntile_breaks(v, 5) FILTER (WHERE i < 0) AS e
  FROM vc_test.par;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET force_parallel_mode = regress;
EXPLAIN (COSTS OFF)
SELECT segments.ntile_breaks(v, 5), segments.ntile_breaks(w, 4, false),
	   vc_test.ntile_state(v, 7, true)::text
  FROM vc_test.par;
SELECT s.a = p.a AS a, s.b = p.b AS b, s.c = p.c AS c,
	   s.d = p.d AS d, p.e IS NULL AND s.e IS NULL AS e
  FROM vc_test.serial s,
	   (SELECT segments.ntile_breaks(v, 5) AS a, segments.ntile_breaks(w, 4, false) AS b,
			   vc_test.ntile_state(v, 7, true)::text AS c,
			   segments.ntile_breaks(v, 5) FILTER (WHERE i <= 50) AS d,
			   segments.ntile_breaks(v, 5) FILTER (WHERE i < 0) AS e
		  FROM vc_test.par) p;
-- only the first block has matching rows: the other participants send NULL
EXPLAIN (COSTS OFF)
SELECT segments.ntile_breaks(v, 5) FROM vc_test.par WHERE i <= 50;
SELECT segments.ntile_breaks(v, 5) = (SELECT d FROM vc_test.serial) AS same
  FROM vc_test.par WHERE i <= 50;
SELECT segments.ntile_breaks(v, 5) FROM vc_test.par WHERE i < 0;
-- per-group states in a parallel hash aggregate
SELECT count(*) AS groups,
	   count(*) FILTER (WHERE b = (SELECT segments.ntile_breaks(v, 3) FROM vc_test.par p2
									 WHERE p2.i % 5 = g.k)) AS same
  FROM (SELECT i % 5 AS k, segments.ntile_breaks(v, 3) AS b
		  FROM vc_test.par GROUP BY i % 5) g;
RESET force_parallel_mode;
RESET max_parallel_workers_per_gather;
RESET min_parallel_table_scan_size;
RESET parallel_tuple_cost;
RESET parallel_setup_cost;

--
-- 8. buying_cycle(): the median gap between consecutive orders, in days.
--
SET timezone = 'UTC';
-- two gaps (10 and 20 days): the mean of the middle two
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-01-01'::timestamptz), ('2024-01-11'), ('2024-01-31')) s(t);
-- three gaps (1, 2 and 7 days), given out of order
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-01-11'::timestamptz), ('2024-01-01'), ('2024-01-04'), ('2024-01-02')) s(t);
-- duplicates are gaps of 0: gaps 0, 0, 5
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-03-01'::timestamptz), ('2024-03-01'), ('2024-03-06'), ('2024-03-01')) s(t);
-- fractions of a day; NULLs are ignored
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-01-01 00:00'::timestamptz), (NULL), ('2024-01-01 06:00'),
			   ('2024-01-02 06:00'), (NULL)) s(t);
-- one order: no gap
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-01-01'::timestamptz), (NULL)) s(t);
-- no orders at all: no median, zero gaps
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES (NULL::timestamptz)) s(t);
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('2024-01-01'::timestamptz)) s(t) WHERE false;
-- the range limit: 2^53 microseconds around 2000-01-01, that is from
-- 1714-07-29 00:12:25.259008 to 2285-06-04 23:47:34.740992 UTC
SELECT (segments.buying_cycle(t)).*
  FROM (VALUES ('1714-07-29 00:12:25.259008'::timestamptz), ('2285-06-04 23:47:34.740992')) s(t);
SELECT segments.buying_cycle(t) FROM (VALUES ('1714-07-29 00:12:25.259007'::timestamptz)) s(t);
SELECT segments.buying_cycle(t) FROM (VALUES ('2285-06-04 23:47:34.740993'::timestamptz)) s(t);
SELECT segments.buying_cycle(t) FROM (VALUES ('infinity'::timestamptz)) s(t);
SELECT segments.buying_cycle(t) FROM (VALUES ('-infinity'::timestamptz)) s(t);
-- many customers against an SQL oracle (lag + percentile_cont)
CREATE TABLE vc_test.orders AS
SELECT c AS customer,
	   '2023-01-01'::timestamptz + ((c * 37 + k * k * (c % 5 + 1)) % 400) * interval '1 day'
		   + ((c * k) % 7) * interval '3 hours' AS ordered_at
  FROM generate_series(1, 300) c, generate_series(1, 1 + c % 9) k;
WITH gaps AS (
	SELECT customer,
		   extract(epoch FROM ordered_at - lag(ordered_at) OVER (PARTITION BY customer ORDER BY ordered_at))
			   / 86400 AS gap
	  FROM vc_test.orders),
oracle AS (
	SELECT customer, percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median,
		   count(gap)::int AS n
	  FROM gaps GROUP BY customer),
ours AS (
	SELECT customer, (segments.buying_cycle(ordered_at)).*
	  FROM vc_test.orders GROUP BY customer)
SELECT count(*) AS customers,
	   count(*) FILTER (WHERE o.n = 0) AS one_order,
	   count(*) FILTER (WHERE o.n <> u.gap_count
						   OR abs(o.median - u.median_gap_days) > 1e-9
						   OR (o.median IS NULL) <> (u.median_gap_days IS NULL)) AS mismatches
  FROM oracle o JOIN ours u USING (customer);
RESET timezone;

SET client_min_messages = warning;
DROP SCHEMA vc_test CASCADE;
RESET client_min_messages;

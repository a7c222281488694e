-- rule_compile(): an owner's boolean rule, checked on the server's parse
-- tree against a target relation, deparsed schema-qualified; the columns it
-- reads and the day counts at which time columns change it.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET TimeZone = 'UTC';

-- a small facts relation: a table and the view rules are written against
CREATE TABLE rule_facts (
	customer_id text PRIMARY KEY,
	orders int4 NOT NULL,
	net_revenue numeric NOT NULL,
	median_gap_days float8,
	name text,
	categories text[],
	consent_telegram bool NOT NULL,
	last_order_at timestamptz,
	days_since_last_order int4,
	cart_idle_minutes int4
);
CREATE VIEW rule_view AS SELECT * FROM rule_facts;
INSERT INTO rule_facts VALUES
	('c1', 3, 250.00, 20, 'Anna', '{coffee,tea}', true, '2024-04-01', 75, NULL),
	('c2', 1, 10, NULL, 'bob', '{tea}', false, '2024-06-10', 5, 90),
	('c3', 0, 0, NULL, NULL, NULL, false, NULL, NULL, NULL),
	('c4', 6, 1000, 30, 'A', '{coffee}', true, '2023-12-24', 174, 30);

-- Runs a stored (compiled) rule the way the evaluator does: pasted into a
-- query over the facts as f, under the pinned search_path.
CREATE FUNCTION rule_matches(expression text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result text;
BEGIN
	EXECUTE format('SELECT string_agg(f.customer_id, '','' ORDER BY f.customer_id) FROM public.rule_view f WHERE %s',
				   expression) INTO result;
	RETURN coalesce(result, '-');
END
$$;

-- SQLSTATE and message of a compile, '00000' when the rule is accepted.
CREATE FUNCTION rule_try(rule text, target regclass DEFAULT 'rule_view',
	time_columns text[] DEFAULT '{}', OUT code text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
	SELECT '00000', 'accepted: ' || c.expression INTO code, message
	  FROM segments.rule_compile(rule, target, time_columns) c;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
END
$$;

--------------------------------------------------------------------------------
-- Valid rules: what is stored, the columns read, and who matches when the
-- stored form runs.
--------------------------------------------------------------------------------
CREATE TABLE rule_valid (n int PRIMARY KEY, rule text NOT NULL);
INSERT INTO rule_valid VALUES
	(1, 'orders >= 2 AND days_since_last_order > 45 AND consent_telegram'),
	(2, 'f.orders > 0 AND f.net_revenue >= 100.50'),
	(3, 'days_since_last_order BETWEEN 30 AND 60 OR days_since_last_order NOT BETWEEN 1 AND 100'),
	(4, $r$name IN ('Anna', 'bob') AND orders NOT IN (0, 2)$r$),
	(5, $r$CASE WHEN orders > 5 THEN 'vip' WHEN orders > 1 THEN 'repeat' ELSE 'new' END = 'repeat'$r$),
	(6, $r$CASE name WHEN 'A' THEN true ELSE consent_telegram END$r$),
	(7, 'COALESCE(median_gap_days, 0) < 25'),
	(8, $r$'coffee' = ANY(categories)$r$),
	(9, $r$categories @> '{coffee}' AND categories && ARRAY['tea', 'juice']$r$),
	(10, $r$NULLIF(name, 'bob') IS NOT NULL$r$),
	(11, 'GREATEST(orders, 1) > 1 AND LEAST(net_revenue, 500) >= 250'),
	(12, $r$lower(name) LIKE 'a%' OR name ~* '^B' OR name COLLATE "C" < 'B'$r$),
	(13, $r$last_order_at >= '2024-01-01' AND EXTRACT(month FROM last_order_at) = 4$r$),
	(14, $r$last_order_at::date < '2024-01-01' AND net_revenue::text <> '0'$r$),
	(15, 'ARRAY[orders, 1]::numeric[] @> ARRAY[6::numeric]'),
	(16, 'consent_telegram IS TRUE AND name IS NOT NULL AND median_gap_days IS DISTINCT FROM 20'),
	(17, $r$segments.recency_days(last_order_at, '2024-06-15') > 60$r$),
	(18, $r$age('2024-06-15', last_order_at) < '30 days' AND num_nulls(name, categories) = 0$r$),
	(19, 'NULL'),
	(20, 'true -- ) OR true'),
	(21, 'orders > 1 /* ) OR (SELECT true) = true */'),
	(22, '$$bob$$ = name'),
	(23, $r$U&'\0041' = name OR E'\x41\x6e\x6e\x61' = name$r$),
	(24, $r$name = U&'\0027) OR true; DROP TABLE rule_facts; --'$r$),
	(25, $r$name <> E'\x27) OR (SELECT true) --'$r$),
	(26, $r$name = 'Zoë' OR starts_with(name, 'An')$r$);

\x on
SELECT v.n, v.rule, c.expression, c.columns, rule_matches(c.expression) AS matches
  FROM rule_valid v, segments.rule_compile(v.rule, 'rule_view') c
 ORDER BY v.n;
\x off

-- the stored form compiles to itself (the evaluator recompiles it), also
-- against the table instead of the view
SELECT v.n
  FROM rule_valid v,
	   segments.rule_compile(v.rule, 'rule_view') c,
	   segments.rule_compile(c.expression, 'rule_facts') again
 WHERE again.expression IS DISTINCT FROM c.expression
	OR again.columns IS DISTINCT FROM c.columns;

-- the stored form does not depend on the caller's search_path
SET search_path = segments, public;
SELECT expression FROM segments.rule_compile('recency_days(last_order_at, ''2024-06-15'') > 60', 'public.rule_view');
RESET search_path;

-- constants are stored in a form that reads back the same under any
-- DateStyle, IntervalStyle and extra_float_digits the evaluator may have
SET DateStyle = 'German, DMY';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = 0;
SELECT expression FROM segments.rule_compile($r$last_order_at::date < '01.02.2024'
	AND age('15.06.2024', last_order_at) < '1 2:00:00'
	AND median_gap_days <> '1.0000000000000002'::float8$r$, 'rule_view');
RESET DateStyle;
RESET IntervalStyle;
RESET extra_float_digits;

--------------------------------------------------------------------------------
-- Time windows: comparisons of a time column with a constant change at c
-- and c + 1 as the column grows by one a day (clipped at 0).
--------------------------------------------------------------------------------
SELECT t.rule, c.time_windows, c.columns
  FROM (VALUES
	('days_since_last_order > 45'),
	('45 < days_since_last_order'),
	('days_since_last_order >= 45 AND orders >= 2'),
	('days_since_last_order BETWEEN 30 AND 60'),
	('days_since_last_order = 30'),
	('days_since_last_order IS DISTINCT FROM 10'),
	('days_since_last_order IN (7, 14)'),
	($r$days_since_last_order = ANY ('{90,-3}')$r$),
	('days_since_last_order > 45.5'),
	('days_since_last_order > 45.7::int4'),
	($r$days_since_last_order > '45'$r$),
	('days_since_last_order::numeric > 2147483647.5'),
	($r$days_since_last_order < 'Infinity'::float8$r$),
	('days_since_last_order > NULL'),
	('NOT (days_since_last_order <= 14) AND cart_idle_minutes >= 60'),
	('CASE WHEN days_since_last_order < 7 THEN consent_telegram ELSE false END'),
	('days_since_last_order > median_gap_days * 1.5'),
	('days_since_last_order + 1 > 45'),
	('orders > 45')) AS t(rule),
	   segments.rule_compile(t.rule, 'rule_view', '{days_since_last_order,cart_idle_minutes}') c;

-- a time column must be a column of the target
SELECT * FROM rule_try('true', 'rule_view', '{days_since_last_ordr}');
SELECT * FROM rule_try('true', 'rule_view', '{ctid}');
SELECT * FROM rule_try('true', 'rule_view', '{NULL}');

--------------------------------------------------------------------------------
-- Everything below is refused, and nothing of it runs: a look-alike that ran
-- would raise "... executed" instead, pg_sleep(10) would trip the timeout,
-- set_config() would leave its setting behind.
--------------------------------------------------------------------------------
CREATE ROLE regress_rules_evil;
CREATE SCHEMA evil AUTHORIZATION regress_rules_evil;
GRANT CREATE ON SCHEMA public TO regress_rules_evil;
SET ROLE regress_rules_evil;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql IMMUTABLE
	AS $$BEGIN RAISE EXCEPTION 'evil.lower executed'; END$$;
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE plpgsql IMMUTABLE
	AS $$BEGIN RAISE EXCEPTION 'public.lower executed'; END$$;
CREATE FUNCTION evil.texteq(text, text) RETURNS bool LANGUAGE plpgsql IMMUTABLE
	AS $$BEGIN RAISE EXCEPTION 'evil.texteq executed'; END$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
CREATE OPERATOR evil.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_catalog.texteq);
CREATE TYPE evil.mood AS ENUM ('happy');
CREATE DOMAIN evil.checked AS int4 CHECK (evil.lower(VALUE::text) IS NOT NULL);
CREATE COLLATION evil.c FROM "C";
RESET ROLE;
CREATE SEQUENCE rule_seq;
CREATE FUNCTION segments.rules_canary(text) RETURNS bool LANGUAGE plpgsql IMMUTABLE
	AS $$BEGIN RAISE EXCEPTION 'segments.rules_canary executed'; END$$;
SET statement_timeout = '5s';

SELECT t.rule, e.code, e.message
  FROM (VALUES
	-- stacked statements and clauses
	('true; DROP TABLE rule_facts'),
	('true); DROP TABLE rule_facts; --'),
	('true AND false) OR (true'),
	('true UNION SELECT false'),
	('true FROM pg_class'),
	('true WHERE false'),
	('DISTINCT true'),
	('true LIMIT 1'),
	('true AS ok'),
	('true, false'),
	-- subqueries
	('(SELECT 1) = 1'),
	('EXISTS (SELECT 1 FROM pg_authid)'),
	('orders IN (SELECT 1)'),
	('ARRAY(SELECT relname FROM pg_class) IS NOT NULL'),
	-- functions reading files, settings, server state, the catalogs, the clock
	('pg_sleep(10) IS NULL'),
	($r$set_config('rules.canary', 'set', false) IS NOT NULL$r$),
	($r$pg_read_file('/etc/passwd') <> ''$r$),
	($r$pg_read_binary_file('/etc/passwd') IS NOT NULL$r$),
	($r$pg_ls_dir('.') IS NOT NULL$r$),
	($r$current_setting('is_superuser') = 'on'$r$),
	($r$query_to_xml('DROP TABLE rule_facts', true, true, '') IS NOT NULL$r$),
	($r$has_table_privilege('rule_facts', 'SELECT')$r$),
	($r$version() <> ''$r$),
	('txid_current() > 0'),
	('pg_backend_pid() > 0'),
	('inet_client_addr() IS NULL'),
	('obj_description(1) IS NULL'),
	($r$to_regclass('pg_class') IS NOT NULL$r$),
	('now() > last_order_at'),
	($r$age(last_order_at) > '30 days'$r$),
	('CURRENT_DATE > last_order_at'),
	($r$current_user = 'postgres'$r$),
	-- volatile, set-returning, aggregate, window, plumbing
	('random() < 0.5'),
	($r$nextval('rule_seq') > 0$r$),
	('generate_series(1, 2) > 1'),
	($r$unnest(categories) = 'tea'$r$),
	('count(*) > 1'),
	('max(orders) > 1'),
	('row_number() OVER () > 1'),
	($r$textin('abc') = 'abc'$r$),
	-- object identifier types
	($r$'pg_class'::regclass IS NOT NULL$r$),
	('1::regclass::oid > 0'),
	('name::regclass IS NOT NULL'),
	($r$'{pg_class}'::regclass[] IS NOT NULL$r$),
	-- rows, columns and relations other than the target's user columns
	('f IS NOT NULL'),
	('f.* IS NOT NULL'),
	('*'),
	('ROW(orders, name) IS NOT NULL'),
	($r$pg_class.relname = 'x'$r$),
	('rule_facts.orders > 1'),
	('xmin IS NOT NULL'),
	('$1 > 0'),
	-- other expressions off the list
	($r$categories[1] = 'coffee'$r$),
	('xmlelement(name a) IS NOT NULL'),
	($r$make_interval(days => orders) > '1 day'$r$),
	-- objects outside pg_catalog and segments
	($r$evil.lower(name) = 'x'$r$),
	($r$name OPERATOR(evil.===) 'x'$r$),
	($r$'happy'::evil.mood IS NOT NULL$r$),
	('orders::evil.checked > 0'),
	($r$name COLLATE evil.c = 'x'$r$),
	($r$segments.setting_value('shop_time_zone') = 'UTC'$r$),
	('segments.rules_canary(name)'),
	($r$segments.rule_compile('true', 'rule_facts') IS NOT NULL$r$),
	-- backslashes: a stored rule must read the same with standard_conforming_strings off
	($r$name ~ '^\d'$r$),
	($r$name = E'\\'$r$),
	-- not a boolean, nothing at all
	('orders + 1'),
	('name'),
	(''),
	('   '),
	('-- nothing'),
	('/* */')) AS t(rule),
	   rule_try(t.rule) e;

-- a system column exists on the table (views have none)
SELECT * FROM rule_try('ctid IS NOT NULL', 'rule_facts');
SELECT * FROM rule_try('f.xmin IS NOT NULL', 'rule_facts');

-- search_path cannot smuggle a look-alike in: with evil or public first,
-- lower() and = resolve to the planted objects, and those are refused
SET search_path = evil, pg_catalog;
SELECT * FROM public.rule_try('lower(name) IS NOT NULL', 'public.rule_view');
SELECT * FROM public.rule_try($r$name = 'x'$r$, 'public.rule_view');
SET search_path = public, pg_catalog;
SELECT * FROM rule_try('lower(name) IS NOT NULL');
RESET search_path;
SELECT * FROM rule_try('lower(name) IS NOT NULL');

-- the settings set_config() would have made are not there
SELECT current_setting('rules.canary', true) AS canary;
RESET statement_timeout;

--------------------------------------------------------------------------------
-- Size and depth
--------------------------------------------------------------------------------
SELECT t.label, octet_length(t.rule) AS bytes, e.code, left(e.message, 60) AS message
  FROM (VALUES
	('10000 bytes', 'true' || repeat(' ', 9996)),
	('10001 bytes', 'true' || repeat(' ', 9997)),
	('20000 bytes', 'true' || repeat(' ', 19996)),
	('10000-deep parentheses', repeat('(', 10000) || 'true' || repeat(')', 10000)),
	('4998-deep parentheses', repeat('(', 4998) || 'true' || repeat(')', 4998)),
	('NOT x 99', repeat('NOT ', 99) || 'true'),
	('NOT x 100', repeat('NOT ', 100) || 'true'),
	('NOT x 2499', repeat('NOT ', 2499) || 'true'),
	('unary minus x 4990 on 1 (the parser folds it)', repeat('- ', 4990) || '1 > 0'),
	('unary minus x 4990 on a column', repeat('- ', 4990) || 'orders > 0'),
	('orders + 1 x 150', 'orders' || repeat(' + 1', 150) || ' > 0'),
	('CASE x 40', repeat('CASE WHEN orders > 1 THEN ', 40) || 'true' || repeat(' END', 40)),
	('600 ANDs', 'orders > 0' || repeat(' AND orders > 0', 600))) AS t(label, rule),
	   rule_try(t.rule) e;

--------------------------------------------------------------------------------
-- Encoding: text that is invalid in the server encoding cannot be built in
-- SQL (every conversion checks), so rule_compile()'s own check is a second
-- line; this fails before rule_compile() is called.
--------------------------------------------------------------------------------
SELECT * FROM segments.rule_compile(convert_from('\xff'::bytea, 'UTF8'), 'rule_view');

--------------------------------------------------------------------------------
-- The target
--------------------------------------------------------------------------------
SELECT * FROM rule_try('true', 'rule_seq');
SELECT * FROM rule_try('true', 'rule_facts_pkey');
GRANT USAGE ON SCHEMA segments TO regress_rules_evil;
SET ROLE regress_rules_evil;
SELECT * FROM rule_try('orders > 1', 'rule_view');
RESET ROLE;
GRANT SELECT ON rule_view TO regress_rules_evil;
SET ROLE regress_rules_evil;
SELECT * FROM rule_try('orders > 1', 'rule_view');
RESET ROLE;

-- errors point into the rule
SELECT * FROM segments.rule_compile('orders > 1 AND pg_sleep(10) IS NULL', 'rule_view');
SELECT * FROM segments.rule_compile('orders > 1 AND ordrs < 5', 'rule_view');

-- Thresholds: every comparison of a time column with something that does
-- not move with time, deparsed, so the evaluator knows when each customer's
-- answer can change (also for thresholds made of other facts).
SELECT threshold_columns, threshold_exprs
  FROM segments.rule_compile('days_since_last_order > median_gap_days * 2 AND cart_idle_minutes >= 30
	OR days_since_last_order BETWEEN 10 AND 20 OR days_since_last_order IN (7, 14)
	OR days_since_last_order + 1 > 45',
	'rule_view', '{days_since_last_order,cart_idle_minutes}');

--------------------------------------------------------------------------------
-- Clean up
--------------------------------------------------------------------------------
DROP FUNCTION segments.rules_canary(text);
DROP SEQUENCE rule_seq;
DROP TABLE rule_valid;
DROP FUNCTION rule_try(text, regclass, text[]);
DROP FUNCTION rule_matches(text);
DROP VIEW rule_view;
DROP TABLE rule_facts;
DROP FUNCTION public.lower(text);
DROP SCHEMA evil CASCADE;
REVOKE CREATE ON SCHEMA public FROM regress_rules_evil;
REVOKE USAGE ON SCHEMA segments FROM regress_rules_evil;
DROP ROLE regress_rules_evil;


-- rfm_cell(), rfm_group() and the RFM group map
\pset null '(null)'

-- cells: one digit per score, R F M
SELECT segments.rfm_cell(5, 4, 3) AS c543, segments.rfm_cell(1, 1, 1) AS c111,
       segments.rfm_cell(5, 5, 5) AS c555, segments.rfm_cell(1, 5, 2) AS c152;
-- STRICT: no cell without all three scores
SELECT segments.rfm_cell(NULL, 1, 1) AS no_cell;
-- scores outside 1..5 are errors
SELECT segments.rfm_cell(0, 1, 1);
SELECT segments.rfm_cell(1, 6, 1);
SELECT segments.rfm_cell(1, 1, -1);

-- The default map.  Every one of the 125 cells belongs to exactly one group
-- (fm = (f + m) / 2):
--   r = 5: new fm 1-1.5, active fm 2-3.5, champions fm 4-5
--   r = 4: promising fm 1-1.5, active fm 2-3.5, loyal fm 4-5
--   r = 3: promising fm 1-1.5, needs_attention fm 2-3.5, loyal fm 4-5
--   r = 2: almost_lost fm 1-2.5, at_risk fm 3-5
--   r = 1: dormant fm 1-2.5, previously_loyal fm 3-5
SELECT * FROM segments.rfm_group_cells;
-- cells per group: f + m = 2..10 has 1,2,3,4,5,4,3,2,1 (f, m) pairs, so
-- fm 1-1.5 is 3 pairs, 2-3.5 is 16, 4-5 is 6, 1-2.5 is 10 and 3-5 is 15
SELECT g.position, c.group_name, count(*) AS cells
  FROM segments.rfm_group_cells c
  LEFT JOIN segments.rfm_groups g USING (group_name)
 GROUP BY g.position, c.group_name
 ORDER BY g.position;

-- no orders at all: a prospect
SELECT segments.rfm_group(NULL, NULL, NULL) AS no_orders;
-- some scores missing: NULL, not a guessed group
SELECT segments.rfm_group(5, NULL, 3) AS no_frequency, segments.rfm_group(NULL, 5, 5) AS no_recency;
-- scores outside 1..5 are errors, also next to a missing score
SELECT segments.rfm_group(0, 3, 3);
SELECT segments.rfm_group(6, 3, 3);
SELECT segments.rfm_group(3, 0, 3);
SELECT segments.rfm_group(3, 3, 6);
SELECT segments.rfm_group(6, NULL, NULL);

-- the owner's map: copy the defaults, then edit them
SELECT segments.rfm_group_map_customize() AS groups_copied;
SELECT source, count(*) AS groups FROM segments.rfm_groups GROUP BY source;
UPDATE segments.rfm_group_map SET group_name = 'superfans' WHERE group_name = 'champions';
-- a new statement reads the edited map
SELECT segments.rfm_group(5, 5, 5) AS g555, segments.rfm_group(5, 4, 4) AS g544,
       segments.rfm_group(5, 3, 4) AS g534;
-- customizing twice is refused
SELECT segments.rfm_group_map_customize();

-- PL/pgSQL keeps a simple expression's fn_extra for the whole transaction;
-- the map still follows edits made between two evaluations of it
DO $$
DECLARE
	g text;
BEGIN
	FOR i IN 1..3 LOOP
		g := segments.rfm_group(5, 5, 5);
		RAISE NOTICE 'pass %: %', i, g;
		IF i = 1 THEN
			UPDATE segments.rfm_group_map SET group_name = 'superstars' WHERE group_name = 'superfans';
		END IF;
	END LOOP;
END
$$;

-- a gap in the owner's map: those cells have no group (NULL), the rest keep theirs
DELETE FROM segments.rfm_group_map WHERE group_name = 'dormant';
SELECT cell FROM segments.rfm_group_cells WHERE group_name IS NULL ORDER BY cell;
SELECT segments.rfm_group(1, 1, 1) AS gap, segments.rfm_group(1, 3, 3) AS previously_loyal;

-- overlapping rows: the first by position wins
UPDATE segments.rfm_group_map SET r_min = 1, r_max = 5, fm_min = 1.0, fm_max = 5.0
 WHERE group_name = 'previously_loyal';
SELECT group_name, count(*) AS cells
  FROM segments.rfm_group_cells GROUP BY group_name ORDER BY group_name;
UPDATE segments.rfm_group_map SET r_min = 1, r_max = 1, fm_min = 3.0, fm_max = 5.0
 WHERE group_name = 'previously_loyal';

-- a row that covers none of the values 1, 1.5, ..., 5 is an error, not skipped
UPDATE segments.rfm_group_map SET fm_min = 1.1, fm_max = 1.4 WHERE group_name = 'new';
SELECT segments.rfm_group(5, 1, 1);
-- NULLs, prospects and range errors never read the map
SELECT segments.rfm_group(NULL, NULL, NULL) AS no_orders, segments.rfm_group(5, NULL, 1) AS partial;
UPDATE segments.rfm_group_map SET fm_min = 1.0, fm_max = 1.5 WHERE group_name = 'new';
SELECT segments.rfm_group(5, 1, 1) AS g511;

-- an empty owner map means the defaults again
DELETE FROM segments.rfm_group_map;
SELECT source, count(*) AS groups FROM segments.rfm_groups GROUP BY source;
SELECT segments.rfm_group(5, 5, 5) AS g555, segments.rfm_group(1, 1, 1) AS g111;
SELECT count(*) AS cells, count(group_name) AS with_group, count(DISTINCT group_name) AS groups
  FROM segments.rfm_group_cells;

-- search_path cannot substitute the map: rfm_group() reads segments.rfm_groups
-- by its full name, even with a look-alike view ahead of pg_catalog
CREATE SCHEMA evil;
CREATE VIEW evil.rfm_groups AS
	SELECT 'pwned'::text AS group_name, 1 AS position, 1 AS r_min, 5 AS r_max,
		   1.0::numeric AS fm_min, 5.0::numeric AS fm_max;
SET search_path = evil, public;
SELECT segments.rfm_group(5, 5, 5) AS g555, segments.rfm_group(1, 1, 1) AS g111;
SET search_path = evil, pg_catalog, public;
SELECT segments.rfm_group(5, 5, 5) AS g555, segments.rfm_group(1, 1, 1) AS g111;
RESET search_path;
DROP SCHEMA evil CASCADE;

-- over a table, in parallel workers too: each worker reads the map itself
CREATE TABLE rfm_scores AS
	SELECT i AS customer_id,
		   CASE WHEN i % 50 = 0 THEN NULL ELSE 1 + i % 5 END AS r,
		   CASE WHEN i % 50 = 0 THEN NULL ELSE 1 + (i / 5) % 5 END AS f,
		   CASE WHEN i % 50 = 0 THEN NULL ELSE 1 + (i / 25) % 5 END AS m
	  FROM generate_series(1, 10000) AS i;
ANALYZE rfm_scores;
SELECT segments.rfm_group(r, f, m) AS group_name, count(*) AS customers
  FROM rfm_scores GROUP BY 1 ORDER BY 1;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF)
SELECT count(*) FILTER (WHERE segments.rfm_group(r, f, m) = 'champions') AS champions,
	   count(*) FILTER (WHERE segments.rfm_group(r, f, m) = 'prospects') AS prospects,
	   count(segments.rfm_group(r, f, m)) AS grouped
  FROM rfm_scores;
SELECT count(*) FILTER (WHERE segments.rfm_group(r, f, m) = 'champions') AS champions,
	   count(*) FILTER (WHERE segments.rfm_group(r, f, m) = 'prospects') AS prospects,
	   count(segments.rfm_group(r, f, m)) AS grouped
  FROM rfm_scores;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
DROP TABLE rfm_scores;

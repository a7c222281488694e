-- recency_days(), recency_bucket() and recency_bucket_labels()
--
-- A day is a 24-hour period of absolute time (timestamptz difference in
-- microseconds / 86,400,000,000), so the results never depend on TimeZone
-- once the inputs are timestamptz values.
SET TimeZone = 'UTC';
\pset null '(null)'

-- every boundary of the default bands {30,60,90,180,365}
SELECT d AS days_before,
       segments.recency_days(t0 - d * interval '1 day', t0) AS days,
       segments.recency_bucket(t0 - d * interval '1 day', t0) AS bucket
  FROM (VALUES (0), (1), (30), (31), (60), (61), (90), (91),
               (180), (181), (365), (366), (1000)) AS v(d),
       (SELECT timestamptz '2024-06-15 12:00:00+00' AS t0) AS t
 ORDER BY d;

-- whole periods only: one microsecond short of 31 days is still 30 days
SELECT segments.recency_days('2024-05-15 12:00:00.000001+00', '2024-06-15 12:00:00+00') AS days,
       segments.recency_bucket('2024-05-15 12:00:00.000001+00', '2024-06-15 12:00:00+00') AS bucket;
SELECT segments.recency_days('2024-05-15 12:00:00+00', '2024-06-15 12:00:00+00') AS days,
       segments.recency_bucket('2024-05-15 12:00:00+00', '2024-06-15 12:00:00+00') AS bucket;
SELECT segments.recency_days('2024-06-14 12:00:00.000001+00', '2024-06-15 12:00:00+00') AS almost_a_day;

-- exactly at as_of, and an order after as_of (app server clock skew): 0
SELECT segments.recency_days('2024-06-15 12:00+00', '2024-06-15 12:00+00') AS same_instant,
       segments.recency_days('2024-06-15 12:00:05+00', '2024-06-15 12:00+00') AS five_seconds_ahead,
       segments.recency_bucket('2024-06-15 12:00:05+00', '2024-06-15 12:00+00') AS bucket_ahead,
       segments.recency_days('2025-01-01 00:00+00', '2024-06-15 12:00+00') AS months_ahead;

-- the extremes of timestamptz: the difference overflows int64 microseconds
-- but not the result (24 Nov 4714 BC to 31 Dec 294276 AD is 109,203,527
-- days and a bit)
SELECT segments.recency_days('4714-11-24 00:00:00+00 BC', '294276-12-31 23:59:59.999999+00') AS widest,
       segments.recency_bucket('4714-11-24 00:00:00+00 BC', '294276-12-31 23:59:59.999999+00') AS bucket;

-- DST: days are 24-hour periods, not calendar days.  Berlin springs forward
-- on 2024-03-31, so noon to noon across it is 23 hours: still 0 days.  It
-- falls back on 2024-10-27, so 10:00 to 09:30 the next day is 24.5 hours:
-- already 1 day.
SET TimeZone = 'Europe/Berlin';
SELECT last_order_at, as_of, as_of - last_order_at AS elapsed,
       segments.recency_days(last_order_at, as_of) AS days
  FROM (VALUES (timestamptz '2024-03-30 12:00', timestamptz '2024-03-31 12:00'),
               (timestamptz '2024-03-30 12:00', timestamptz '2024-03-31 13:00'),
               (timestamptz '2024-10-26 10:00', timestamptz '2024-10-27 09:30'),
               (timestamptz '2024-10-26 10:00', timestamptz '2024-10-27 08:59:59')) AS v(last_order_at, as_of);

-- timestamp without time zone arguments go through the implicit cast to
-- timestamptz, which reads them in the session TimeZone: the same wall
-- clock times are 23 hours apart in Berlin and 24 hours apart in UTC
SELECT segments.recency_days(timestamp '2024-03-30 12:00', timestamp '2024-03-31 12:00') AS berlin_days;
SET TimeZone = 'UTC';
SELECT segments.recency_days(timestamp '2024-03-30 12:00', timestamp '2024-03-31 12:00') AS utc_days;

-- custom edges; the first band may be the single day 0
SELECT d,
       segments.recency_bucket(t0 - d * interval '1 day', t0, '{7,14}') AS weekly,
       segments.recency_bucket(t0 - d * interval '1 day', t0, '{0,1}') AS today_yesterday,
       segments.recency_bucket(t0 - d * interval '1 day', t0, '{10}') AS one_edge
  FROM (VALUES (0), (1), (2), (7), (8), (10), (11), (14), (15)) AS v(d),
       (SELECT timestamptz '2024-06-15 12:00:00+00' AS t0) AS t
 ORDER BY d;

-- edges that change from row to row (the cache follows the array contents)
SELECT edges, segments.recency_bucket('2024-05-01 00:00+00', '2024-06-15 00:00+00', edges) AS bucket
  FROM (VALUES (1, '{30,60}'::int4[]), (2, '{50,60}'), (3, '{30,60}'), (4, '{10,20,44}'),
               (5, '{10,20,45}'), (6, '[0:1]={30,60}')) AS v(n, edges)
 ORDER BY n;

-- labels, most recent band first
SELECT segments.recency_bucket_labels() AS default_labels;
SELECT segments.recency_bucket_labels('{7,14}') AS weekly,
       segments.recency_bucket_labels('{0}') AS zero_edge,
       segments.recency_bucket_labels('{2147483647}') AS largest_edge;
-- every label recency_bucket() returns is among them
SELECT count(*) AS days_checked,
       bool_and(segments.recency_bucket(t0 - d * interval '1 day', t0)
                = ANY (segments.recency_bucket_labels())) AS all_listed
  FROM generate_series(0, 400) AS d,
       (SELECT timestamptz '2024-06-15 12:00:00+00' AS t0) AS t;
-- up to 100 edges are allowed
SELECT array_length(segments.recency_bucket_labels(array_agg(i)), 1) AS labels_of_100_edges
  FROM generate_series(1, 100) AS i;

-- invalid edges, each with its own detail; both functions check alike
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{30,NULL,90}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{60,30}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{30,30}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{-1,30}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', '{{30,60},{90,180}}');
SELECT segments.recency_bucket('2024-05-01+00', '2024-06-15+00', array_agg(i))
  FROM generate_series(1, 101) AS i;
SELECT segments.recency_bucket_labels('{30,NULL,90}');
SELECT segments.recency_bucket_labels('{60,30}');
SELECT segments.recency_bucket_labels('{}');
SELECT segments.recency_bucket_labels('{{30,60},{90,180}}');
SELECT segments.recency_bucket_labels(array_agg(i)) FROM generate_series(1, 101) AS i;
-- a bad array after good ones in the same query still fails
SELECT n, segments.recency_bucket('2024-05-01+00', '2024-06-15+00', edges)
  FROM (VALUES (1, '{30,60}'::int4[]), (2, '{60,30}')) AS v(n, edges)
 ORDER BY n;

-- infinite timestamps are errors, not a huge or a zero recency
SELECT segments.recency_days('infinity', '2024-06-15+00');
SELECT segments.recency_days('-infinity', '2024-06-15+00');
SELECT segments.recency_days('2024-06-15+00', 'infinity');
SELECT segments.recency_bucket('-infinity', '2024-06-15+00');
SELECT segments.recency_bucket('2024-06-15+00', '-infinity');

-- STRICT: a customer without orders has no recency
SELECT segments.recency_days(NULL, '2024-06-15+00') AS days,
       segments.recency_bucket(NULL, '2024-06-15+00') AS bucket,
       segments.recency_bucket('2024-06-15+00', '2024-06-15+00', NULL) AS no_edges,
       segments.recency_bucket_labels(NULL) AS no_labels;

RESET TimeZone;

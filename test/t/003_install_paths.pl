# Every released version installs, and updating from the oldest version
# to the newest gives the same catalog as a fresh install of the newest.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('paths');
$node->init;
$node->start;

my @versions = split /\n/, $node->safe_psql('postgres', q{
	SELECT version FROM pg_available_extension_versions
	 WHERE name = 'segments' ORDER BY string_to_array(version, '.')::int[]});
ok(@versions >= 1, 'at least one version available: ' . join(', ', @versions));
my ($oldest, $newest) = ($versions[0], $versions[-1]);
is($node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'segments'"),
	$newest, 'default version is the newest');

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE updated');
$node->safe_psql('fresh', 'CREATE EXTENSION segments');
$node->safe_psql('updated', "CREATE EXTENSION segments VERSION '$oldest'");
$node->safe_psql('updated', 'ALTER EXTENSION segments UPDATE');
is($node->safe_psql('updated',
	"SELECT extversion FROM pg_extension WHERE extname = 'segments'"),
	$newest, "updated from $oldest to $newest");

# Compare every member object of the extension, with its full definition.
# (pg_dump skips extension members, so it cannot be used for this.)
my $catalog = q{
	SELECT pg_describe_object(d.classid, d.objid, 0) || ' => ' ||
		   COALESCE(CASE d.classid
			 WHEN 'pg_proc'::regclass THEN CASE WHEN (SELECT prokind FROM pg_proc WHERE oid = d.objid) = 'a' THEN (SELECT aggtransfn::text || ' ' || aggcombinefn::text || ' ' || aggfinalfn::text || ' ' || aggtranstype::regtype::text FROM pg_aggregate WHERE aggfnoid = d.objid) ELSE pg_get_functiondef(d.objid) END
			 WHEN 'pg_class'::regclass THEN (
				SELECT c.relkind::text || ' ' || string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
						|| CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
						|| COALESCE(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attnum)
						|| COALESCE(' view ' || pg_get_viewdef(c.oid), '')
						|| COALESCE((SELECT ' ' || string_agg(pg_get_constraintdef(k.oid), '; ' ORDER BY pg_get_constraintdef(k.oid))
							  FROM pg_constraint k WHERE k.conrelid = c.oid), '')
						|| COALESCE((SELECT ' ' || string_agg(regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \S+ ', 'INDEX '), '; ' ORDER BY 1)
							  FROM pg_index i WHERE i.indrelid = c.oid), '')
						|| COALESCE((SELECT ' ' || string_agg(pg_get_triggerdef(t.oid), '; ' ORDER BY t.tgname)
							  FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '')
				  FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
				  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
				 WHERE c.oid = d.objid GROUP BY c.oid, c.relkind)
			 WHEN 'pg_type'::regclass THEN format_type(d.objid, NULL)
			 END, '')
	  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	 WHERE e.extname = 'segments' AND d.deptype = 'e'
	 ORDER BY 1};
my $fresh = $node->safe_psql('fresh', $catalog);
my $updated = $node->safe_psql('updated', $catalog);
ok(length($fresh) > 1000, 'the catalog listing covers the extension\'s objects');
is($updated, $fresh, 'updated schema is identical to a fresh install, object by object');
is($node->safe_psql('updated', 'SELECT count(*) FROM segments.rfm_group_default'),
	$node->safe_psql('fresh', 'SELECT count(*) FROM segments.rfm_group_default'),
	'built-in rows are the same');

# Both answer the same.
my $probe = q{SELECT segments.rfm_cell(5,5,4) || segments.rfm_group(5,5,4)
	|| (SELECT segments.ntile_breaks(g, 5)::text FROM generate_series(1, 100) g)};
is($node->safe_psql('updated', $probe), $node->safe_psql('fresh', $probe),
	'updated and fresh installs compute the same');

# DROP EXTENSION leaves no function, type or relation of ours behind.
$node->safe_psql('fresh', 'DROP EXTENSION segments');
is($node->safe_psql('fresh', q{
	SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			 WHERE n.nspname = 'segments')
		 + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
			 WHERE n.nspname = 'segments')
		 + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
			 WHERE n.nspname = 'segments')}),
	'0', 'DROP EXTENSION removes every object of ours');

$node->stop;
done_testing();

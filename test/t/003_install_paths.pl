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

# Compare the schema of both databases, object by object.
my @dump_cmd = ('pg_dump', '--schema-only', '--no-owner', '--schema=segments');
my ($fresh, $updated, $err);
IPC::Run::run([ @dump_cmd, '-d', $node->connstr('fresh') ], '>', \$fresh, '2>', \$err)
  or die "pg_dump fresh: $err";
IPC::Run::run([ @dump_cmd, '-d', $node->connstr('updated') ], '>', \$updated, '2>', \$err)
  or die "pg_dump updated: $err";
is($updated, $fresh, 'updated schema is identical to a fresh install');

# Both answer the same.
my $probe = q{SELECT segments.rfm_cell(5,4,3) || segments.rfm_group(5,4,3)
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

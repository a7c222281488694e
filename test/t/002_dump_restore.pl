# pg_dump keeps the owner's configuration and not ours: a customized RFM map
# survives dump and restore, and the built-in defaults are not duplicated.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

$node->safe_psql('postgres', q{
	CREATE DATABASE src;
});
$node->safe_psql('src', q{
	CREATE EXTENSION segments;
	SELECT segments.rfm_group_map_customize();
	UPDATE segments.rfm_group_map SET group_name = 'superfans' WHERE group_name = 'champions';
});
is($node->safe_psql('src', 'SELECT segments.rfm_group(5, 5, 5)'), 'superfans',
	'customized map in force before the dump');

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $dump ],
	'pg_dump of a database using segments');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore without errors');

is($node->safe_psql('dst', 'SELECT segments.rfm_group(5, 5, 5)'), 'superfans',
	'the owner map came back');
is($node->safe_psql('dst', 'SELECT count(*) FROM segments.rfm_group_map'), '10',
	'owner rows restored once');
is($node->safe_psql('dst', 'SELECT count(*) FROM segments.rfm_group_default'), '10',
	'built-in defaults exist once (written by CREATE EXTENSION, not the dump)');

# Back to defaults after emptying the owner map.
$node->safe_psql('dst', 'DELETE FROM segments.rfm_group_map');
is($node->safe_psql('dst', 'SELECT segments.rfm_group(5, 5, 5)'), 'champions',
	'an empty owner map falls back to the defaults');

$node->stop;
done_testing();

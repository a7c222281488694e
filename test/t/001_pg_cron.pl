# pg_cron really runs segments functions: a throwaway cluster with pg_cron
# preloaded, a job scheduled at pg_cron's minute resolution, and its run
# recorded as succeeded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE EXTENSION segments');
is($node->safe_psql('postgres',
	"SELECT extversion FROM pg_extension WHERE extname = 'segments'"),
	$node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'segments'"),
	'segments installs next to pg_cron');

$node->safe_psql('postgres', q{
	CREATE TABLE cron_probe (cell text, grp text, at timestamptz);
	CREATE TABLE cron_input (v float8);
	INSERT INTO cron_input SELECT g % 7 FROM generate_series(1, 1000) g;
	SELECT cron.schedule('segments-probe', '* * * * *', $job$
		INSERT INTO public.cron_probe
		SELECT segments.rfm_cell(5, 5, 4), segments.rfm_group(5, 5, 4), now()
		 WHERE (SELECT segments.ntile_breaks(v, 5) FROM public.cron_input) IS NOT NULL
	$job$);
});

# pg_cron 1.4.2 has minute resolution: the job fires within about a minute.
ok($node->poll_query_until('postgres', 'SELECT count(*) > 0 FROM cron_probe'),
	'pg_cron fired the scheduled segments job');
is($node->safe_psql('postgres', 'SELECT cell || \'|\' || grp FROM cron_probe LIMIT 1'),
	'554|champions', 'the job computed a cell and its group');
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM cron.job_run_details WHERE status = 'succeeded'"),
	'pg_cron recorded the run as succeeded');

$node->safe_psql('postgres', "SELECT cron.unschedule('segments-probe')");
$node->stop;
done_testing();

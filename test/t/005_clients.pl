# Real clients read the reports: psql and a Python BI client (Debian's
# python3-psycopg2) log in as a reader, discover the report views the way a
# BI tool does, read their types, comments and rows, and are refused
# everything else; then the dashboard is written with psql and rendered in
# headless Chromium (Debian's chromium).  The harness installs both packages:
# if one is missing this test fails, it does not skip.
use strict;
use warnings;
use File::Temp ();
use IPC::Run ();
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $srcdir = $ENV{TESTDIR} // '.';
my $python = '/usr/bin/python3';    # Debian's, where python3-psycopg2 lives
my ($chromium) = grep { -x } ('/usr/bin/chromium', '/usr/bin/chromium-browser');

ok(-x $python && system($python, '-c', 'import psycopg2') == 0, 'python3-psycopg2 is installed (test/harness installs it)');
ok(defined $chromium, 'chromium is installed (test/harness installs it)');
$chromium //= 'chromium';

my $node = PostgreSQL::Test::Cluster->new('clients');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION segments');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'customers=240', '-d', $node->connstr('shop'),
	'-f', "$srcdir/test/clients/small_shop.sql", '-o', '/dev/null' ],
	'a small shop with campaigns and a tick per simulated hour');
$node->safe_psql('shop', 'CREATE ROLE bi_reader LOGIN IN ROLE segments_reader');

my @report_views = split /\n/, $node->safe_psql('shop', q{
	SELECT c.relname FROM pg_class c
	 WHERE c.relnamespace = 'segments'::regnamespace AND c.relkind = 'v' AND c.relname LIKE 'report\_%'
	 ORDER BY 1});
cmp_ok(scalar @report_views, '>=', 9, 'the report views exist: ' . join(', ', @report_views));
my %rows_as_owner = map { $_ => $node->safe_psql('shop', "SELECT count(*) FROM segments.$_") } @report_views;
cmp_ok((grep { $rows_as_owner{$_} > 0 } @report_views), '>=', 7, 'most report views have rows in this shop');
my %customer_ids = map { $_ => 1 } split /\n/, $node->safe_psql('shop', 'SELECT customer_id FROM segments.customer_facts');
cmp_ok(scalar keys %customer_ids, '>=', 200, 'the shop has customers');

my $reader = $node->connstr('shop') . ' user=bi_reader';

# ---------------------------------------------------------------- psql ----
{
	my ($out, $err) = run_client([ 'psql', '-X', '-d', $reader, '-c', '\dv segments.report_*' ]);
	my @missing = grep { $out !~ /\b\Q$_\E\b/ } @report_views;
	is("@missing", '', 'psql \dv as the reader lists every report view');
	($out, $err) = run_client([ 'psql', '-X', '-d', $reader, '-c', '\d+ segments.report_holdout_lift' ]);
	like($out, qr/too_small_to_tell\s*\|\s*boolean\s*\|.*Either group has fewer enrollments/,
		'psql \d+ shows the reader column types and comments');
	($out, $err) = run_client([ 'psql', '-X', '-At', '-d', $reader, '-c',
		'SELECT count(*) FROM segments.report_campaigns' ]);
	is($out, "3\n", 'psql reads report_campaigns as the reader');
	($out, $err) = run_client([ 'psql', '-X', '-At', '-d', $reader, '-c', 'SELECT count(*) FROM segments.customer_facts' ]);
	like($err, qr/permission denied for table customer_facts/, 'psql as the reader: customer_facts refused');
}

# ------------------------------------------------------ python BI client ----
my ($json, $err) = run_client([ $python, "$srcdir/test/clients/bi_client.py", $reader,
	'--forbidden', 'customer_facts', 'outbox', 'tracked_customers' ]);
my $bi = eval { JSON::PP::decode_json($json) };
ok($bi, 'the Python client printed its JSON summary') or diag("stdout: $json\nstderr: $err");
$bi //= { views => [], values => [], forbidden => {} };
is($bi->{user}, 'bi_reader', 'the Python client logged in as the reader');

my %seen = map { $_->{name} => $_ } @{ $bi->{views} };
for my $v (@report_views)
{
	my $d = $seen{$v};
	ok($d, "$v: discovered through information_schema.views") or next;
	ok($d->{select_privilege}, "$v: SELECT privilege listed in information_schema.table_privileges");
	ok(!$d->{error} && defined $d->{rows}, "$v: all rows fetched") or diag($d->{error} // 'no rows');
	is($d->{rows}, $rows_as_owner{$v}, "$v: the reader reads every row the owner sees");
	ok(defined $d->{comment} && $d->{comment} ne '', "$v: has a comment");
	my @untyped = grep { !$_->{data_type} } @{ $d->{columns} };
	my @uncommented = grep { !defined $_->{comment} || $_->{comment} eq '' } @{ $d->{columns} };
	ok(@{ $d->{columns} } > 0 && !@untyped, "$v: every column has a data type");
	is(join(', ', map { $_->{name} } @uncommented), '', "$v: every column has a comment");
	is_deeply($d->{result_columns}, [ map { $_->{name} } @{ $d->{columns} } ],
		"$v: the rows carry the columns information_schema listed");
}
# Anything else the reader can see must be readable reference data, not
# personal data; say what it is.
for my $d (grep { $_->{name} !~ /^report_/ } @{ $bi->{views} })
{
	ok(!$d->{error}, "$d->{name}: also visible to the reader and readable");
	my $uncommented = grep { !defined $_->{comment} } @{ $d->{columns} };
	note("$d->{name}: visible to readers (not a report view), $uncommented column(s) without a comment");
}
# rfm_groups and rfm_group_cells (the RFM group map, no customer data) are
# readable by everyone since 0.1.0.
is(join(', ', map { $_->{name} } grep { $_->{name} !~ /^(report_.*|rfm_groups|rfm_group_cells)$/ } @{ $bi->{views} }), '',
	'the reader discovers no other views of ours');

for my $t (qw(customer_facts outbox tracked_customers))
{
	is($bi->{forbidden}{$t}{sqlstate} // 'read ' . ($bi->{forbidden}{$t}{rows} // '?') . ' rows', '42501',
		"the reader cannot read $t (permission denied)");
}
# customer ids ('cust-0042') look like no count, amount or name: any match is a leak
my @leaks = grep { $customer_ids{$_} } @{ $bi->{values} };
cmp_ok(scalar @{ $bi->{values} }, '>', 100, 'the client collected the values of every view (' . scalar(@{ $bi->{values} }) . ' distinct)');
is(join(', ', @leaks), '', 'no value of any view the reader reads is a customer id');

# ----------------------------------------------------------- dashboard ----
my $dir = PostgreSQL::Test::Utils::tempdir;
my $html = "$dir/dashboard.html";
run_client([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $reader, '-o', $html,
	'-c', "SELECT segments.dashboard_html('segments dashboard (TAP)')" ]);
ok(-s $html, 'the reader wrote the dashboard with psql -Atc');

my @chrome = ($chromium, '--headless', '--disable-gpu', '--no-sandbox', '--no-first-run',
	"--user-data-dir=$dir/chromium-profile", '--hide-scrollbars', '--window-size=1400,1800');
my ($dom) = run_client([ @chrome, '--dump-dom', "file://$html" ], HOME => $dir);
like($dom, qr/<h1>segments dashboard \(TAP\)<\/h1>/, 'Chromium rendered the page');
my %charts;
while ($dom =~ m{<svg\b([^>]*)>(.*?)</svg>}gs)
{
	my ($attrs, $body) = ($1, $2);
	my ($id) = $attrs =~ /\bid="([^"]*)"/;
	my $marks = () = $body =~ /<rect\b[^>]*\bclass="(?:[^"]*\s)?mark(?:\s[^"]*)?"/g;
	$charts{ $id // '' } = { marks => $marks, empty => scalar($body =~ /no data yet/) };
}
for my $id (qw(rfm-grid segment-sizes cart-funnel campaign-lift))
{
	ok($charts{$id}, "rendered DOM has chart $id") or next;
	cmp_ok($charts{$id}{marks}, '>', 0, "chart $id has data marks ($charts{$id}{marks} rects)");
	ok(!$charts{$id}{empty}, "chart $id does not say no data yet");
}
like($dom, qr/<table id="campaigns">.*cart_recovery.*first_order_followup.*win_back/s,
	'the campaigns table lists every campaign');

my $png = "$dir/dashboard.png";
run_client([ @chrome, "--screenshot=$png", "file://$html" ], HOME => $dir);
ok(-s $png, 'Chromium wrote a screenshot (' . (-s $png // 0) . ' bytes)');
my $head = -s $png ? substr(slurp_file($png), 0, 8) : '';
is($head, "\x89PNG\r\n\x1a\n", 'the screenshot is a PNG');

$node->stop;
done_testing();

# Run a client with a time limit; return its stdout and stderr.
sub run_client
{
	my ($cmd, %env) = @_;
	my ($out, $err) = ('', '');
	local @ENV{ keys %env } = values %env;
	my $ok = eval {
		IPC::Run::run($cmd, '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));
		1;
	};
	diag("$cmd->[0] timed out or failed to start: $@") unless $ok;
	return ($out, $err);
}

# The outbox and the tick under real concurrency and real crashes:
#   1. 8 concurrent claimers drain 100 000 messages; one of them "forgets"
#      to acknowledge some, whose leases expire: every message ends sent by
#      exactly one successful acknowledgement, none lost;
#   2. SIGKILL of a claiming backend (inside and after its claim) and of the
#      tick's backend, with restart_after_crash = on: nothing is lost or
#      duplicated, the killed run is recorded as failed, the next tick
#      catches up;
#   3. a server stop across missed ticks: the next tick handles every step
#      that fell due once, and drops the ones past their not-after;
#   4. pg_cron really fires the tick scheduled with schedule_tick().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('outbox');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
max_connections = 40
restart_after_crash = on
fsync = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE EXTENSION segments');

# ---------------------------------------------------------------------------
# 1. 8 claimers over 100 000 messages
# ---------------------------------------------------------------------------
my $n = 100_000;
$node->safe_psql('postgres', qq{
	SET client_min_messages = warning;
	SELECT segments.set_setting('outbox_lease', '2 seconds');
	SELECT segments.set_setting('outbox_max_attempts', '100');
	-- no quiet hours: the outcome must not depend on the hour the test runs
	SELECT segments.set_setting('quiet_hours_end', '21:00');
	SELECT segments.create_campaign('bulk', 'wallet_credit', holdout_percent => 0, reentry_days => 0);
	SELECT segments.add_campaign_step('bulk', '0', 'email', 'bulk');
	SELECT segments.set_campaign_status('bulk', 'active');
	-- the fixture: $n buyers with consent and one due message each, written
	-- in bulk rather than by $n tick decisions
	INSERT INTO segments.consent_events (customer_id, channel, granted, occurred_at)
	SELECT 'b' || i, 'email', true, '2026-01-01' FROM generate_series(1, $n) i;
	SELECT customers_changed FROM segments.refresh_facts();
	INSERT INTO segments.enrollment (campaign_id, customer_id, signal_key, signal_at, enrolled_at, holdout,
		state, next_step_no, next_due_at)
	SELECT 'bulk', 'b' || i, 'bulk', now(), now(), false, 'completed', NULL, NULL FROM generate_series(1, $n) i;
	INSERT INTO segments.outbox (idempotency_key, enrollment_id, campaign_id, step_no, customer_id, channel,
		message_key, not_before, not_after, created_at)
	SELECT 'bulk:1:' || e.customer_id || ':' || e.enrollment_id, e.enrollment_id, 'bulk', 1, e.customer_id,
		'email', 'bulk', now() - interval '1 minute', now() + interval '1 day', now()
	  FROM segments.enrollment e;
	CREATE TABLE claims (worker int, message_id int8, attempt int);
	CREATE TABLE acks (worker int, message_id int8);
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM segments.outbox WHERE state = 'ready'}),
	$n, "$n messages ready");

# Each claimer: claim 200, record the claim, acknowledge (worker 1 drops
# every 50th acknowledgement, as a sender that died mid-batch would; even
# workers acknowledge the batch with ack_messages(), odd ones one by one),
# commit; stop when nothing is left to claim.
sub claimer_sql
{
	my ($w) = @_;
	my $drop = $w == 1 ? 'AND c.message_id % 50 <> 0' : '';
	my $ack = $w % 2 == 0
	  ? qq{INSERT INTO acks SELECT $w, a FROM segments.ack_messages(
			(SELECT array_agg(message_id ORDER BY message_id) FROM c),
			(SELECT array_agg(attempt ORDER BY message_id) FROM c)) a;}
	  : qq{INSERT INTO acks
		SELECT $w, c.message_id FROM c WHERE true $drop AND segments.ack_message(c.message_id, c.attempt);};
	return qq{
DO \$\$
DECLARE
	got int;
	empty int := 0;
BEGIN
	LOOP
		WITH c AS (SELECT * FROM segments.claim_messages('email', 200, 'w$w')),
		logged AS (INSERT INTO claims SELECT $w, c.message_id, c.attempt FROM c)
		$ack
		GET DIAGNOSTICS got = ROW_COUNT;
		COMMIT;
		IF NOT EXISTS (SELECT FROM segments.outbox WHERE state IN ('ready', 'leased')) THEN
			EXIT;
		END IF;
		IF got = 0 THEN
			empty := empty + 1;
			EXIT WHEN empty > 600;
			PERFORM pg_sleep(0.05);
		ELSE
			empty := 0;
		END IF;
	END LOOP;
END
\$\$;
};
}

my $t0 = time;
my @workers;
for my $w (1 .. 8)
{
	my ($out, $err) = ('', '');
	push @workers, IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', claimer_sql($w) ],
		'>', \$out, '2>', \$err);
}
$_->finish for @workers;
my $elapsed = time - $t0;
note("8 claimers drained $n messages in ${elapsed}s");

is($node->safe_psql('postgres', q{SELECT state || ':' || count(*) FROM segments.outbox GROUP BY state}),
	"sent:$n", 'every message ends sent');
is($node->safe_psql('postgres', 'SELECT count(*) || \'/\' || count(DISTINCT message_id) FROM acks'),
	"$n/$n", 'exactly one successful acknowledgement per message');
my ($handed, $distinct, $reclaimed) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), count(DISTINCT message_id), count(*) FILTER (WHERE attempt > 1) FROM claims});
is($distinct, $n, 'every message was handed out');
ok($reclaimed > 0, "unacknowledged leases came back with a raised attempt ($reclaimed re-claims)");
is($handed - $reclaimed, $n, 'apart from expired leases, no message was handed out twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT FROM claims GROUP BY message_id, attempt HAVING count(*) > 1) x}),
	'0', 'no attempt of a message went to two claimers');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM segments.engagement_events WHERE event = 'sent'}),
	$n, 'one sent event per message');

# ---------------------------------------------------------------------------
# 2. SIGKILL: a claimer inside its claim, a claimer after it, the tick
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
	SET client_min_messages = warning;
	TRUNCATE claims, acks;
	SELECT segments.reset_setting('outbox_max_attempts');
	UPDATE segments.campaign SET activated_at = now() - interval '1 hour' WHERE campaign_id = 'bulk';
	SELECT segments.track_wallet('b' || i, 1, 'kill test', now() - interval '1 minute') FROM generate_series(1, 10) i;
	SELECT status, queued FROM segments.tick();
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM segments.outbox WHERE state = 'ready'}),
	'10', 'a tick queued 10 new messages');
# a listening sender is woken by the tick, with the channel as payload
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{LISTEN segments_outbox; SELECT status FROM segments.tick();});
like($stdout . $stderr, qr/notification "segments_outbox" with payload "email"/, 'the tick NOTIFYs senders of the channel');

sub crash_restarts
{
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
	my $n = () = $log =~ /all server processes terminated; reinitializing/g;
	return $n;
}

sub kill9_and_wait
{
	my ($pid, $what) = @_;
	my $restarts = crash_restarts();
	is(kill('KILL', $pid), 1, "SIGKILL $what");
	# the postmaster notices the death, kills every backend and reinitializes;
	# only a connection after that counts (one made before it would be cut)
	my $deadline = time + 180;
	while (crash_restarts() <= $restarts)
	{
		die "the server did not restart after the crash" if time > $deadline;
		usleep(100_000);
	}
	$node->poll_query_until('postgres', 'SELECT 1', '1') or die "server did not come back";
}

# psql in the background, one transaction per command, under an application
# name; returns the harness and, once it sleeps, its backend's pid
sub start_sleeper
{
	my ($app, @commands) = @_;
	my ($out, $err) = ('', '');
	my $connstr = $node->connstr('postgres') . " application_name=$app";
	my $h = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, map { ('-c', $_) } @commands ],
		'>', \$out, '2>', \$err);
	$node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM pg_stat_activity
		WHERE application_name = '$app' AND wait_event = 'PgSleep'}) or die "$app did not start: $err";
	my $pid = $node->safe_psql('postgres', qq{SELECT pid FROM pg_stat_activity WHERE application_name = '$app'});
	return ($h, $pid);
}

# a claimer killed inside its open transaction: its claim never happened
my ($h, $pid) = start_sleeper('doomed_inside',
	q{BEGIN; SELECT count(*) FROM segments.claim_messages('email', 5, 'doomed'); SELECT pg_sleep(120); COMMIT;});
kill9_and_wait($pid, 'a claimer inside its claim');
eval { $h->finish; };
is($node->safe_psql('postgres', q{SELECT state || ':' || attempt || ':' || count(*) FROM segments.outbox
	WHERE message_key = 'bulk' AND state <> 'sent' GROUP BY state, attempt}),
	'ready:0:10', 'the killed claim left every message ready, attempt 0');

# a claimer killed after committing its claim, before acknowledging: the
# lease expires and another claimer gets the message with attempt 2
($h, $pid) = start_sleeper('doomed_after',
	q{SELECT count(*) FROM segments.claim_messages('email', 5, 'doomed')}, q{SELECT pg_sleep(120)});
kill9_and_wait($pid, 'a claimer after its claim');
eval { $h->finish; };
sleep 3;	# outbox_lease is 2 seconds
is($node->safe_psql('postgres', q{
	SELECT string_agg(attempt::text, ',' ORDER BY attempt) FROM (
		SELECT c.attempt FROM segments.claim_messages('email', 100, 'survivor') c) x}),
	'1,1,1,1,1,2,2,2,2,2', 'the survivor gets all 10: 5 fresh, 5 re-claimed after the lease expired');

# the tick's backend killed mid-run: run_tick() commits its run row first
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.slow_enrollment() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$;
	CREATE TRIGGER slow BEFORE INSERT ON segments.enrollment FOR EACH ROW EXECUTE FUNCTION public.slow_enrollment();
	SELECT segments.track_wallet('b11', 1, 'kill test', now());
});
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM segments.enrollment');
($h, $pid) = start_sleeper('ticker', q{CALL segments.run_tick()});
is($node->safe_psql('postgres', q{SELECT status FROM segments.tick_runs ORDER BY run_id DESC LIMIT 1}),
	'running', 'the run is logged as running before its work');
kill9_and_wait($pid, "the tick's backend");
eval { $h->finish; };
is($node->safe_psql('postgres', q{SELECT status FROM segments.tick_runs ORDER BY run_id DESC LIMIT 1}),
	'running', 'after the crash the killed run is still marked running');
is($node->safe_psql('postgres', 'SELECT count(*) FROM segments.enrollment'), $before,
	'the killed tick enrolled nobody (its work was rolled back)');
$node->safe_psql('postgres', 'DROP TRIGGER slow ON segments.enrollment');
is($node->safe_psql('postgres', 'SELECT status FROM segments.tick()'), 'succeeded', 'the next tick succeeds');
is($node->safe_psql('postgres', q{SELECT status || ': ' || left(error, 11) FROM segments.tick_runs
	ORDER BY run_id DESC OFFSET 1 LIMIT 1}),
	'failed: interrupted', 'the killed run is recorded as failed');
is($node->safe_psql('postgres', q{SELECT count(*) FROM segments.enrollment e
	WHERE e.customer_id = 'b11' AND e.signal_key LIKE 'wallet:%'}),
	'1', 'the next tick caught up on the signal the killed one lost, once');

# ---------------------------------------------------------------------------
# 3. The server stops across missed ticks
# ---------------------------------------------------------------------------
my $T = $node->safe_psql('postgres', q{SELECT date_trunc('minute', now()) + interval '1 day'});
$node->safe_psql('postgres', qq{
	SET client_min_messages = warning;
	SELECT segments.track_customer('w1', time_zone => 'UTC');
	SELECT segments.track_consent('w1', 'sms', true, '2026-01-01');
	SELECT segments.create_campaign('drip', 'wallet_credit', holdout_percent => 0);
	SELECT segments.add_campaign_step('drip', '0', 'sms', 'drip_1', valid_for => '30 minutes');
	SELECT segments.add_campaign_step('drip', '1 hour', 'sms', 'drip_2', valid_for => '30 minutes');
	SELECT segments.add_campaign_step('drip', '3 hours', 'sms', 'drip_3', valid_for => '1 day');
	SELECT segments.set_campaign_status('drip', 'active');
	SELECT segments.set_setting('frequency_cap_sms', '1 minute');
	UPDATE segments.campaign SET activated_at = '$T'::timestamptz - interval '1 hour' WHERE campaign_id = 'drip';
	SELECT segments.track_wallet('w1', 5, 'drip', '$T');
	CALL segments.run_tick('$T'::timestamptz + interval '1 minute');
});
is($node->safe_psql('postgres', q{SELECT string_agg(message_key, ',') FROM segments.outbox WHERE campaign_id = 'drip'}),
	'drip_1', 'the first step is queued before the stop');
$node->stop('fast');
# ... the ticks of the next four hours are never run ...
$node->start;
$node->safe_psql('postgres', qq{CALL segments.run_tick('$T'::timestamptz + interval '4 hours')});
is($node->safe_psql('postgres', q{SELECT string_agg(message_key, ',' ORDER BY message_id) FROM segments.outbox
	WHERE campaign_id = 'drip'}),
	'drip_1,drip_3', 'after the restart the next tick queues the step still valid, once');
is($node->safe_psql('postgres', q{SELECT string_agg(step_no || ':' || decision || ':' || coalesce(reason, ''), ',' ORDER BY decision_id)
	FROM segments.decision_log WHERE campaign_id = 'drip'}),
	'1:send:,2:skip:step_expired,3:send:', 'the step past its not-after is dropped with a reason');
$node->safe_psql('postgres', qq{CALL segments.run_tick('$T'::timestamptz + interval '4 hours')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM segments.outbox WHERE campaign_id = 'drip'}),
	'2', 'a second tick at the same instant queues nothing again');

# ---------------------------------------------------------------------------
# 4. pg_cron fires the tick
# ---------------------------------------------------------------------------
my $runs = $node->safe_psql('postgres', 'SELECT count(*) FROM segments.tick_runs');
my $jobid = $node->safe_psql('postgres', q{SELECT segments.schedule_tick()});
ok($jobid > 0, "schedule_tick() created pg_cron job $jobid");
is($node->safe_psql('postgres', q{SELECT schedule || ' ' || command || ' ' || database FROM cron.job WHERE jobid = } . $jobid),
	'* * * * * CALL segments.run_tick() postgres', 'the job calls run_tick() every minute in this database');
ok($node->poll_query_until('postgres', qq{SELECT count(*) > $runs FROM segments.tick_runs WHERE status = 'succeeded'}),
	'pg_cron fired the tick and it succeeded');
ok($node->poll_query_until('postgres', qq{SELECT count(*) > 0 FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'}),
	'pg_cron recorded the run as succeeded');
is($node->safe_psql('postgres', q{SELECT segments.unschedule_tick()}), 't', 'unschedule_tick() removes the job');
is($node->safe_psql('postgres', q{SELECT segments.unschedule_tick()}), 'f', 'and says so when there is none');

$node->stop;
done_testing();

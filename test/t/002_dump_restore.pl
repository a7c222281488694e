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


# A whole shop: attached tables (one with a dropped column, so a restore
# renumbers its columns), tracked events, tuned and owner segments. After a
# restore the capture triggers still read the right column, the event
# identity sequences continue, the owner's configuration is there, and the
# first refresh and evaluation rebuild facts and membership as they were.
$node->safe_psql('postgres', 'CREATE DATABASE shop_src');
$node->safe_psql('shop_src', q{
	CREATE EXTENSION segments;
	CREATE SCHEMA shop;
	CREATE TABLE shop.orders (junk int, id int PRIMARY KEY, note text, customer_id int,
		placed_at timestamptz, total numeric);
	ALTER TABLE shop.orders DROP COLUMN junk;
	INSERT INTO shop.orders SELECT g, 'x', 1 + g % 40, '2026-01-01'::timestamptz + g * interval '1 day', g
	  FROM generate_series(1, 200) g;
	SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
		placed_at => 'placed_at', amount => 'total');
	SELECT segments.track_engagement('7', 'email', 'sent', '2026-05-01');
	SELECT segments.track_consent('7', 'sms', true, '2026-05-01');
	SELECT segments.alter_segment('vip', params => '{"top_percent": 25}');
	SELECT segments.define_segment('big_spenders', 'net_revenue > 600', priority => 120);
	SELECT segments.set_setting('cart_abandon_after', '30 minutes');
	SELECT segments.refresh_facts('2026-08-01');
	SELECT segments.evaluate_segments('2026-08-01');
	-- a campaign that has already sent: after a restore nothing may go out twice
	SELECT segments.track_consent(g::text, 'email', true, '2026-01-01') FROM generate_series(1, 40) g;
	SELECT segments.set_setting('quiet_hours_end', '21:00');
	SELECT segments.create_campaign('thanks', 'order_completed', holdout_percent => 20);
	SELECT segments.add_campaign_step('thanks', '0', 'email', 'thank_you', valid_for => '1 year');
	SELECT segments.set_campaign_status('thanks', 'active');
	UPDATE segments.campaign SET activated_at = '2026-01-01';
	SELECT status FROM segments.tick('2026-08-01');
	SELECT segments.ack_message(message_id, attempt) FROM segments.claim_messages('email', 5, NULL, '2026-08-01 00:01');
	-- two recipients click and buy: attributed orders; one buyer is erased
	SELECT segments.track_engagement(o.customer_id, 'email', 'clicked', o.sent_at + interval '1 minute', o.message_id::text)
	  FROM segments.outbox o WHERE o.state = 'sent' ORDER BY o.message_id LIMIT 2;
	INSERT INTO shop.orders (id, note, customer_id, placed_at, total)
	SELECT 300 + o.message_id, 'after a click', o.customer_id::int, o.sent_at + interval '2 minutes', 50
	  FROM segments.outbox o WHERE o.state = 'sent' ORDER BY o.message_id LIMIT 2;
	SELECT status FROM segments.tick('2026-08-01');
	SELECT count(*) FROM segments.erase_customer('39');
	SELECT status FROM segments.tick('2026-08-01');
	-- the new orders moved the RFM breakpoints: recompute them now, as the
	-- restored shop's first evaluation will
	SELECT segments.refresh_score_breaks('2026-08-01');
	SELECT customers >= 0 FROM segments.evaluate_segments('2026-08-01');
});
my $attribution = q{SELECT string_agg(order_id || ':' || coalesce(campaign_id, '-') || ':' || coalesce(touch, '-'), ',' ORDER BY order_id)
	FROM segments.campaign_orders};
my $attributed_before = $node->safe_psql('shop_src', $attribution);
like($attributed_before, qr/:thanks:click/, 'the source shop has orders credited to a click');
my $report = q{SELECT sent || ' ' || credited_orders || ' ' || revenue FROM segments.report_campaigns};
my $report_before = $node->safe_psql('shop_src', $report);
my $campaign_state = q{SELECT (SELECT string_agg(idempotency_key || '=' || state, ',' ORDER BY message_id) FROM segments.outbox)
	|| ' ' || (SELECT count(*) FROM segments.enrollment) || ' ' || (SELECT count(*) FROM segments.decision_log)
	|| ' ' || (SELECT watermark FROM segments.tick_state)};
my $campaigns_before = $node->safe_psql('shop_src', $campaign_state);
like($campaigns_before, qr/=sent,.*=ready/, 'the source shop has sent and queued campaign messages');
my $membership = q{SELECT string_agg(customer_id || ':' || segment_id, ',' ORDER BY customer_id, segment_id)
	FROM segments.segment_membership};
my $before = $node->safe_psql('shop_src', $membership);
ok(length($before) > 100, 'the source shop has segment members');

my $shop_dump = $node->basedir . '/shop.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('shop_src'), '-f', $shop_dump ],
	'pg_dump of a shop with attached tables');
$node->safe_psql('postgres', 'CREATE DATABASE shop_dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('shop_dst'), $shop_dump ],
	'pg_restore of the shop without errors');

is($node->safe_psql('shop_dst', q{SELECT count(*) FROM segments.sources WHERE NOT builtin}), '1',
	'the attached table is still attached');
is($node->safe_psql('shop_dst', q{SELECT value FROM segments.settings WHERE name = 'cart_abandon_after'}),
	'30 minutes', 'settings came back');
is($node->safe_psql('shop_dst', q{SELECT rule FROM segments.segment_custom WHERE segment_id = 'big_spenders'}),
	'(f.net_revenue > (600)::numeric)', 'owner segment came back in its checked form');
$node->safe_psql('shop_dst', q{
	SELECT segments.refresh_facts('2026-08-01');
	SELECT segments.evaluate_segments('2026-08-01');
});
is($node->safe_psql('shop_dst', $membership), $before,
	'facts and membership rebuilt after the restore are the same as before');
is($node->safe_psql('shop_dst', q{SELECT count(*) FROM segments.verify_facts('2026-08-01')}), '0',
	'restored facts verify');

is($node->safe_psql('shop_dst', $campaign_state), $campaigns_before,
	'enrollments, decisions, messages and the watermark came back');
is($node->safe_psql('shop_dst', q{SELECT queued FROM segments.tick('2026-08-01')}), '0',
	'a tick after the restore sends nothing again');
is($node->safe_psql('shop_dst', $attribution), $attributed_before, 'attributed orders came back and stay');
is($node->safe_psql('shop_dst', $report), $report_before, 'the campaign report is the same after the restore');
# the erasure key came back: the erased id is still known, and suppressed when it signs up again
is($node->safe_psql('shop_dst', q{SELECT segments.is_erased('39')::text || segments.is_erased('38')::text}), 'truefalse',
	'the keyed hash of the erased customer survives the restore');
$node->safe_psql('shop_dst', q{
	SELECT segments.track_consent('39', 'email', true, '2026-08-01 03:00');
	SELECT status FROM segments.tick('2026-08-01 04:00');
	-- (the withdrawal the tick wrote marked 39 again: fold it in)
	SELECT customers_changed FROM segments.refresh_facts('2026-08-01 04:00');
});
is($node->safe_psql('shop_dst', q{SELECT granted FROM segments.consent_events WHERE customer_id = '39'
	ORDER BY occurred_at DESC, event_id DESC LIMIT 1}), 'f', 'an erased customer who signs up again is suppressed after the restore');

# the capture trigger reads the customer column by name, not by its old number
$node->safe_psql('shop_dst', q{
	INSERT INTO shop.orders (id, note, customer_id, placed_at, total) VALUES (1000, 'late', 5, '2026-07-31', 999);
});
is($node->safe_psql('shop_dst', q{SELECT string_agg(key, ',') FROM segments.customer_changes WHERE key_kind = 'customer'}),
	'5', 'a new order after the restore marks the right customer');
$node->safe_psql('shop_dst', q{SELECT segments.refresh_facts('2026-08-01')});
is($node->safe_psql('shop_dst', q{SELECT count(*) FROM segments.verify_facts('2026-08-01')}), '0',
	'and refreshing it keeps facts exact');

# the event identity sequences continue after the restore
$node->safe_psql('shop_dst', q{SELECT segments.track_engagement('7', 'email', 'opened', '2026-05-02')});
# (1 tracked + 5 'sent' events of the acknowledged campaign messages + 2 clicks + this one)
is($node->safe_psql('shop_dst', q{SELECT count(*) FROM segments.engagement_events}), '9',
	'new events after a restore do not collide with restored ones');

$node->stop;
done_testing();

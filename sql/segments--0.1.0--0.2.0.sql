/* segments 0.1.0 -> 0.2.0: customer facts from the shop's own tables */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Data flow: SHOP TABLES -> CUSTOMER FACTS -> scores -> ...
 *
 *   attach_*()          map the shop's tables (never altered, never copied)
 *   track_*()           the same facts for shops without such tables
 *   capture trigger     records touched customers in customer_changes
 *   refresh_facts()     folds those changes into customer_facts, O(changes)
 *   rebuild_facts()     recomputes everything; verify_facts() compares both
 */

--------------------------------------------------------------------------------
-- Settings: our defaults (not dumped) and the owner's overrides (dumped).
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.setting_default (
	name pg_catalog.text PRIMARY KEY,
	value pg_catalog.text NOT NULL,
	value_type pg_catalog.regtype NOT NULL,
	description pg_catalog.text NOT NULL
);

COMMENT ON TABLE @extschema@.setting_default IS
'Built-in values of the segments settings; the owner overrides them with set_setting()';

INSERT INTO @extschema@.setting_default (name, value, value_type, description) VALUES
	('shop_time_zone', 'UTC', 'pg_catalog.text',
	 'Time zone in which timestamp columns without time zone of attached tables are read'),
	('cart_abandon_after', '1 hour', 'pg_catalog.interval',
	 'Idle time after which an open cart counts as abandoned'),
	('checkout_abandon_after', '1 hour', 'pg_catalog.interval',
	 'Idle time after which an open checkout counts as abandoned'),
	('engagement_window', '90 days', 'pg_catalog.interval',
	 'Time without an open or click after which engagement counts as at risk'),
	('watch_days', '{1,7,14,30,60,90,180,365}', 'pg_catalog.int4[]',
	 'Days after the first and last order at which time-driven segments can change (next_change_at)');

CREATE TABLE @extschema@.setting (
	name pg_catalog.text PRIMARY KEY REFERENCES @extschema@.setting_default (name),
	value pg_catalog.text NOT NULL,
	changed_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE @extschema@.setting IS
'The owner''s setting overrides (kept by pg_dump); write them with set_setting()';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.setting', '');

CREATE VIEW @extschema@.settings AS
	SELECT d.name, COALESCE(s.value, d.value) AS value, d.value AS default_value,
		   d.value_type, s.name IS NOT NULL AS overridden, s.changed_at, d.description
	  FROM @extschema@.setting_default d
	  LEFT JOIN @extschema@.setting s ON s.name OPERATOR(pg_catalog.=) d.name;

COMMENT ON VIEW @extschema@.settings IS 'Every setting with the value in force and its default';

CREATE FUNCTION @extschema@.setting_value(setting_name pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result pg_catalog.text;
BEGIN
	SELECT s.value INTO result FROM @extschema@.settings s WHERE s.name = setting_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unrecognized segments setting "%"', setting_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM segments.settings lists them.';
	END IF;
	RETURN result;
END
$$;

COMMENT ON FUNCTION @extschema@.setting_value(pg_catalog.text) IS 'The value in force of one setting, as text';

CREATE FUNCTION @extschema@.set_setting(setting_name pg_catalog.text, new_value pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	vtype pg_catalog.regtype;
BEGIN
	SELECT d.value_type INTO vtype FROM @extschema@.setting_default d WHERE d.name = setting_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unrecognized segments setting "%"', setting_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM segments.settings lists them.';
	END IF;
	IF new_value IS NULL THEN
		RAISE EXCEPTION 'setting "%" cannot be NULL', setting_name
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Use segments.reset_setting() to go back to the default.';
	END IF;
	-- the value must parse as its type (the cast raises the precise error)
	EXECUTE pg_catalog.format('SELECT %L::%s', new_value, vtype);
	IF setting_name = 'shop_time_zone' THEN
		PERFORM pg_catalog.now() AT TIME ZONE new_value;
	ELSIF vtype = 'pg_catalog.interval'::pg_catalog.regtype
		  AND new_value::pg_catalog.interval <= '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'setting "%" must be a positive interval', setting_name
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF setting_name = 'watch_days'
		  AND (pg_catalog.array_ndims(new_value::pg_catalog.int4[]) IS DISTINCT FROM 1
			   OR EXISTS (SELECT FROM pg_catalog.unnest(new_value::pg_catalog.int4[]) d WHERE d IS NULL OR d < 0)) THEN
		RAISE EXCEPTION 'setting "watch_days" must be a one-dimensional array of non-negative day counts'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO @extschema@.setting AS s (name, value) VALUES (setting_name, new_value)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, changed_at = pg_catalog.now();
	-- facts were computed under the old value: the next refresh rebuilds them
	INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'settings');
	RETURN new_value;
END
$$;

COMMENT ON FUNCTION @extschema@.set_setting(pg_catalog.text, pg_catalog.text) IS
'Overrides a setting after checking the value; returns the new value';

CREATE FUNCTION @extschema@.reset_setting(setting_name pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM @extschema@.setting s WHERE s.name = setting_name;
	IF FOUND THEN
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'settings');
	END IF;
	RETURN @extschema@.setting_value(setting_name);
END
$$;

COMMENT ON FUNCTION @extschema@.reset_setting(pg_catalog.text) IS
'Drops the owner''s override of a setting; returns the default now in force';

--------------------------------------------------------------------------------
-- Shop tables 1: the tracking API's own tables, for shops (or events) that
-- have no table of their own. They hold the shop's data, so pg_dump keeps
-- every row. Customer and order ids are text: the shop's ids of any type.
--------------------------------------------------------------------------------

CREATE DOMAIN @extschema@.channel AS pg_catalog.text
	CHECK (VALUE IN ('email', 'sms', 'telegram', 'push'));

COMMENT ON DOMAIN @extschema@.channel IS 'A message channel: email, sms, telegram or push';

CREATE TABLE @extschema@.tracked_orders (
	order_id pg_catalog.text PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	placed_at pg_catalog.timestamptz NOT NULL,
	amount pg_catalog.numeric NOT NULL CHECK (amount >= 0),
	status pg_catalog.text NOT NULL DEFAULT 'completed'
		CHECK (status IN ('completed', 'refunded', 'cancelled', 'pending')),
	refunded_amount pg_catalog.numeric NOT NULL DEFAULT 0
		CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
	discount_code pg_catalog.text,
	currency pg_catalog.text,
	cost pg_catalog.numeric CHECK (cost >= 0),
	sales_channel pg_catalog.text,
	recorded_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ON @extschema@.tracked_orders (customer_id);

CREATE TABLE @extschema@.tracked_order_lines (
	order_id pg_catalog.text NOT NULL REFERENCES @extschema@.tracked_orders ON DELETE CASCADE,
	line_no pg_catalog.int4 NOT NULL,
	product_id pg_catalog.text NOT NULL,
	category pg_catalog.text,
	quantity pg_catalog.numeric NOT NULL DEFAULT 1 CHECK (quantity > 0),
	amount pg_catalog.numeric CHECK (amount >= 0),
	PRIMARY KEY (order_id, line_no)
);

CREATE TABLE @extschema@.tracked_carts (
	cart_id pg_catalog.text PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	created_at pg_catalog.timestamptz NOT NULL,
	updated_at pg_catalog.timestamptz NOT NULL,
	value pg_catalog.numeric NOT NULL DEFAULT 0 CHECK (value >= 0),
	stage pg_catalog.text NOT NULL DEFAULT 'cart' CHECK (stage IN ('cart', 'checkout')),
	status pg_catalog.text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'converted', 'emptied')),
	order_id pg_catalog.text,
	link pg_catalog.text
);
CREATE INDEX ON @extschema@.tracked_carts (customer_id);

CREATE TABLE @extschema@.tracked_customers (
	customer_id pg_catalog.text PRIMARY KEY,
	country pg_catalog.text,
	region pg_catalog.text,
	language pg_catalog.text,
	currency pg_catalog.text,
	time_zone pg_catalog.text,
	account_type pg_catalog.text CHECK (account_type IN ('retail', 'wholesale')),
	tags pg_catalog.text[],
	referred_by pg_catalog.text,
	created_at pg_catalog.timestamptz,
	updated_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE @extschema@.engagement_events (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	channel @extschema@.channel NOT NULL,
	event pg_catalog.text NOT NULL
		CHECK (event IN ('sent', 'delivered', 'opened', 'clicked', 'bounced', 'complained')),
	message_id pg_catalog.text,
	occurred_at pg_catalog.timestamptz NOT NULL
);
CREATE INDEX ON @extschema@.engagement_events (customer_id, occurred_at);

CREATE TABLE @extschema@.consent_events (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	channel @extschema@.channel NOT NULL,
	granted pg_catalog.bool NOT NULL,
	occurred_at pg_catalog.timestamptz NOT NULL,
	source pg_catalog.text
);
CREATE INDEX ON @extschema@.consent_events (customer_id, channel, occurred_at);

CREATE TABLE @extschema@.wallet_events (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id pg_catalog.text NOT NULL,
	amount pg_catalog.numeric NOT NULL,
	reason pg_catalog.text,
	occurred_at pg_catalog.timestamptz NOT NULL
);
CREATE INDEX ON @extschema@.wallet_events (customer_id);

CREATE TABLE @extschema@.referral_events (
	event_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	referrer_id pg_catalog.text NOT NULL,
	referred_id pg_catalog.text,
	credit pg_catalog.numeric NOT NULL DEFAULT 0 CHECK (credit >= 0),
	occurred_at pg_catalog.timestamptz NOT NULL,
	CHECK (referred_id IS DISTINCT FROM referrer_id)
);
CREATE INDEX ON @extschema@.referral_events (referrer_id);
CREATE INDEX ON @extschema@.referral_events (referred_id);

COMMENT ON TABLE @extschema@.tracked_orders IS 'Orders recorded through track_order(), for shops without an orders table';
COMMENT ON TABLE @extschema@.tracked_order_lines IS 'Order lines recorded through track_order_line()';
COMMENT ON TABLE @extschema@.tracked_carts IS 'Carts and checkouts recorded through track_cart()';
COMMENT ON TABLE @extschema@.tracked_customers IS 'Customer profiles recorded through track_customer()';
COMMENT ON TABLE @extschema@.engagement_events IS 'Message engagement: sent, delivered, opened, clicked, bounced, complained';
COMMENT ON TABLE @extschema@.consent_events IS 'Consent history per channel; the latest event per channel is in force';
COMMENT ON TABLE @extschema@.wallet_events IS 'Wallet credits (positive) and debits (negative)';
COMMENT ON TABLE @extschema@.referral_events IS 'Referrals: who referred whom, and the credit earned';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.tracked_orders', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tracked_order_lines', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tracked_carts', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tracked_customers', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.engagement_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.consent_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.wallet_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.referral_events', '');

--------------------------------------------------------------------------------
-- Shop tables 2: sources — which table plays which part, column by column.
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.sources (
	relation pg_catalog.regclass PRIMARY KEY,
	kind pg_catalog.text NOT NULL
		CHECK (kind IN ('orders', 'order_lines', 'carts', 'customers',
						'engagement', 'consent', 'wallet', 'referrals')),
	columns pg_catalog.jsonb NOT NULL,
	options pg_catalog.jsonb NOT NULL DEFAULT '{}',
	key_type pg_catalog.regtype NOT NULL,
	attached_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
	builtin pg_catalog.bool NOT NULL DEFAULT false
);

COMMENT ON TABLE @extschema@.sources IS
'Tables feeding customer facts: the shop''s own (attach_*) and the tracking API''s (builtin); columns maps each role to a column';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.sources', 'WHERE NOT builtin');

-- Keys touched since the last refresh; written by the capture trigger and
-- the tracking API, drained by refresh_facts(). A row without a key asks for
-- a full rebuild (TRUNCATE, detach, a dropped column).
CREATE TABLE @extschema@.customer_changes (
	relation pg_catalog.regclass,
	key_kind pg_catalog.text NOT NULL CHECK (key_kind IN ('customer', 'order', 'truncate', 'column_missing', 'detach', 'attach', 'settings', 'install')),
	key pg_catalog.text,
	changed_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE @extschema@.customer_changes IS
'Customers (or orders) changed since the last refresh_facts(); keyless rows request a full rebuild';

-- Anyone who writes the shop's tables fires the capture trigger, which runs
-- as them; letting them add change marks exposes nothing (no SELECT).
GRANT INSERT ON @extschema@.customer_changes TO PUBLIC;

--------------------------------------------------------------------------------
-- Customer facts: one row per customer, everything segments need.
--------------------------------------------------------------------------------

CREATE TABLE @extschema@.customer_facts (
	customer_id pg_catalog.text PRIMARY KEY,
	-- orders (completed ones; refunded and cancelled ones never count as purchases)
	first_order_at pg_catalog.timestamptz,
	last_order_at pg_catalog.timestamptz,
	orders pg_catalog.int4 NOT NULL DEFAULT 0,
	refunded_orders pg_catalog.int4 NOT NULL DEFAULT 0,
	cancelled_orders pg_catalog.int4 NOT NULL DEFAULT 0,
	gross_revenue pg_catalog.numeric NOT NULL DEFAULT 0,
	refunded_amount pg_catalog.numeric NOT NULL DEFAULT 0,
	net_revenue pg_catalog.numeric NOT NULL DEFAULT 0,
	aov pg_catalog.numeric,
	discounted_orders pg_catalog.int4 NOT NULL DEFAULT 0,
	margin pg_catalog.numeric,
	median_gap_days pg_catalog.float8,
	gap_count pg_catalog.int4 NOT NULL DEFAULT 0,
	categories pg_catalog.text[],
	-- carts
	carts_started pg_catalog.int4 NOT NULL DEFAULT 0,
	carts_converted pg_catalog.int4 NOT NULL DEFAULT 0,
	cart_id pg_catalog.text,
	cart_value pg_catalog.numeric,
	cart_stage pg_catalog.text,
	cart_started_at pg_catalog.timestamptz,
	cart_updated_at pg_catalog.timestamptz,
	cart_link pg_catalog.text,
	-- engagement
	messages_sent pg_catalog.int4 NOT NULL DEFAULT 0,
	messages_opened pg_catalog.int4 NOT NULL DEFAULT 0,
	messages_clicked pg_catalog.int4 NOT NULL DEFAULT 0,
	last_message_at pg_catalog.timestamptz,
	last_engaged_at pg_catalog.timestamptz,
	consecutive_ignored pg_catalog.int4 NOT NULL DEFAULT 0,
	last_bounced_at pg_catalog.timestamptz,
	last_complained_at pg_catalog.timestamptz,
	-- consent per channel: true only after an explicit grant that was not withdrawn
	consent_email pg_catalog.bool NOT NULL DEFAULT false,
	consent_sms pg_catalog.bool NOT NULL DEFAULT false,
	consent_telegram pg_catalog.bool NOT NULL DEFAULT false,
	consent_push pg_catalog.bool NOT NULL DEFAULT false,
	-- profile
	country pg_catalog.text,
	region pg_catalog.text,
	language pg_catalog.text,
	currency pg_catalog.text,
	time_zone pg_catalog.text,
	account_type pg_catalog.text,
	tags pg_catalog.text[],
	customer_created_at pg_catalog.timestamptz,
	-- wallet and referral
	wallet_balance pg_catalog.numeric,
	wallet_last_activity_at pg_catalog.timestamptz,
	referred_by pg_catalog.text,
	referrals_made pg_catalog.int4 NOT NULL DEFAULT 0,
	referral_credit pg_catalog.numeric NOT NULL DEFAULT 0,
	-- bookkeeping
	next_change_at pg_catalog.timestamptz,
	refreshed_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX customer_facts_next_change_at ON @extschema@.customer_facts (next_change_at)
	WHERE next_change_at IS NOT NULL;

COMMENT ON TABLE @extschema@.customer_facts IS
'One row per customer with the facts segments and campaigns use; kept current by refresh_facts()';
COMMENT ON COLUMN @extschema@.customer_facts.customer_id IS 'The shop''s customer id, as text';
COMMENT ON COLUMN @extschema@.customer_facts.orders IS 'Completed orders (refunded and cancelled ones excluded)';
COMMENT ON COLUMN @extschema@.customer_facts.net_revenue IS 'Completed orders'' amounts minus partial refunds';
COMMENT ON COLUMN @extschema@.customer_facts.aov IS 'Average order value: net_revenue / orders';
COMMENT ON COLUMN @extschema@.customer_facts.margin IS 'Net revenue minus cost, over completed orders with a known cost';
COMMENT ON COLUMN @extschema@.customer_facts.median_gap_days IS 'The customer''s own buying cycle: median days between completed orders';
COMMENT ON COLUMN @extschema@.customer_facts.cart_id IS 'The most recently active open (not converted, not emptied) cart';
COMMENT ON COLUMN @extschema@.customer_facts.consecutive_ignored IS 'Messages sent since the last open or click';
COMMENT ON COLUMN @extschema@.customer_facts.next_change_at IS 'Earliest time a time-driven rule can change this customer''s segments';

--------------------------------------------------------------------------------
-- C helpers of the facts layer.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.capture_changes()
RETURNS pg_catalog.trigger
AS 'MODULE_PATHNAME', 'segments_capture_changes'
LANGUAGE C;

COMMENT ON FUNCTION @extschema@.capture_changes() IS
'Statement trigger on attached tables: records the customers (or orders) a statement touched';

CREATE FUNCTION @extschema@.next_time_after(as_of pg_catalog.timestamptz, base pg_catalog.timestamptz, offsets_days pg_catalog.int4[])
RETURNS pg_catalog.timestamptz
AS 'MODULE_PATHNAME', 'segments_next_time_after'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.next_time_after(pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.int4[]) IS
'Earliest base + d days (24-hour days) strictly after as_of over the offsets d; NULL when none';

--------------------------------------------------------------------------------
-- Attaching the shop's tables: validation and SQL generation. Everything is
-- checked before anything is created, so a failed attach leaves nothing.
--------------------------------------------------------------------------------

-- Column roles per kind: role -> 'category:required'. Categories say which
-- column types a role accepts.
CREATE FUNCTION @extschema@._source_roles(source_kind pg_catalog.text)
RETURNS pg_catalog.jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE source_kind
	WHEN 'orders' THEN '{"customer": "key:1", "order_id": "any:1", "placed_at": "time:1", "amount": "amount:1",
		"status": "any:0", "refunded_amount": "amount:0", "discount": "any:0", "currency": "any:0",
		"cost": "amount:0", "sales_channel": "any:0"}'::pg_catalog.jsonb
	WHEN 'order_lines' THEN '{"order_id": "any:1", "product": "any:1", "quantity": "amount:0",
		"amount": "amount:0", "category": "any:0"}'::pg_catalog.jsonb
	WHEN 'carts' THEN '{"cart_id": "any:1", "customer": "key:1", "created_at": "time:1", "updated_at": "time:1",
		"value": "amount:1", "stage": "any:0", "converted_order": "any:0", "status": "any:0", "link": "any:0"}'::pg_catalog.jsonb
	WHEN 'customers' THEN '{"customer": "key:1", "country": "any:0", "region": "any:0", "language": "any:0",
		"currency": "any:0", "time_zone": "any:0", "account_type": "any:0", "tags": "array:0",
		"wallet_balance": "amount:0", "referred_by": "any:0", "created_at": "time:0"}'::pg_catalog.jsonb
	END;

-- The SQL expression reading one mapped column as its normalized type.
CREATE FUNCTION @extschema@._column_expr(rel pg_catalog.regclass, alias pg_catalog.text,
	col pg_catalog.text, as_kind pg_catalog.text, opts pg_catalog.jsonb)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	typ pg_catalog.regtype;
	ref pg_catalog.text;
	zone pg_catalog.text := COALESCE(opts->>'timestamp_time_zone', @extschema@.setting_value('shop_time_zone'));
	scale pg_catalog.numeric := COALESCE((opts->>'amount_scale')::pg_catalog.numeric, 1);
BEGIN
	IF col IS NULL THEN
		RETURN CASE as_kind WHEN 'text' THEN 'NULL::pg_catalog.text' WHEN 'time' THEN 'NULL::pg_catalog.timestamptz'
			WHEN 'amount' THEN 'NULL::pg_catalog.numeric' WHEN 'flag' THEN 'false'
			WHEN 'textarray' THEN 'NULL::pg_catalog.text[]' ELSE 'NULL' END;
	END IF;
	SELECT a.atttypid::pg_catalog.regtype INTO typ
	  FROM pg_catalog.pg_attribute a
	 WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
			USING ERRCODE = 'undefined_column',
				  HINT = 'The table changed after it was attached: detach it and attach it again.';
	END IF;
	ref := pg_catalog.format('%s.%I', alias, col);
	RETURN CASE as_kind
		WHEN 'text' THEN ref || '::pg_catalog.text'
		WHEN 'time' THEN CASE typ
			WHEN 'timestamp with time zone'::pg_catalog.regtype THEN ref
			WHEN 'date'::pg_catalog.regtype THEN pg_catalog.format('(%s::pg_catalog.timestamp AT TIME ZONE %L)', ref, zone)
			ELSE pg_catalog.format('(%s AT TIME ZONE %L)', ref, zone) END
		WHEN 'amount' THEN CASE WHEN scale = 1 THEN ref || '::pg_catalog.numeric'
			ELSE pg_catalog.format('(%s::pg_catalog.numeric * %s)', ref, scale) END
		WHEN 'flag' THEN CASE
			WHEN typ = 'boolean'::pg_catalog.regtype THEN pg_catalog.format('COALESCE(%s, false)', ref)
			WHEN typ IN ('numeric'::pg_catalog.regtype, 'integer'::pg_catalog.regtype, 'bigint'::pg_catalog.regtype,
						 'smallint'::pg_catalog.regtype, 'double precision'::pg_catalog.regtype, 'real'::pg_catalog.regtype)
				THEN pg_catalog.format('COALESCE(%s > 0, false)', ref)
			ELSE pg_catalog.format('COALESCE(%s::pg_catalog.text <> %L, false)', ref, '') END
		WHEN 'textarray' THEN ref || '::pg_catalog.text[]'
		WHEN 'raw' THEN ref
		END;
END
$$;

-- A JSON array of strings as a text[] (empty for NULL).
CREATE FUNCTION @extschema@._text_array(j pg_catalog.jsonb)
RETURNS pg_catalog.text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(COALESCE(j, '[]')));

-- Turns text keys (collected from every source) back into one source's key
-- type, skipping keys that cannot be of that type, so the shop's own index
-- on the customer column is used and a foreign key never raises an error.
CREATE FUNCTION @extschema@._keys_as(key_type pg_catalog.regtype, keys_param pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN key_type IN ('smallint'::pg_catalog.regtype, 'integer'::pg_catalog.regtype, 'bigint'::pg_catalog.regtype) THEN
		pg_catalog.format('ARRAY(SELECT k::%s FROM pg_catalog.unnest(%s) k WHERE k OPERATOR(pg_catalog.~) ''^-?[0-9]{1,19}$'' AND k::pg_catalog.numeric BETWEEN %s AND %s)',
			key_type, keys_param,
			CASE key_type WHEN 'smallint'::pg_catalog.regtype THEN '-32768' WHEN 'integer'::pg_catalog.regtype THEN '-2147483648' ELSE '-9223372036854775808' END,
			CASE key_type WHEN 'smallint'::pg_catalog.regtype THEN '32767' WHEN 'integer'::pg_catalog.regtype THEN '2147483647' ELSE '9223372036854775807' END)
	WHEN key_type = 'uuid'::pg_catalog.regtype THEN
		pg_catalog.format('ARRAY(SELECT k::pg_catalog.uuid FROM pg_catalog.unnest(%s) k WHERE k OPERATOR(pg_catalog.~) ''^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'')', keys_param)
	ELSE pg_catalog.format('%s::%s[]', keys_param, key_type)
	END;

-- Validates a mapping and records it, installs the capture triggers.
CREATE FUNCTION @extschema@._attach(rel pg_catalog.regclass, source_kind pg_catalog.text,
	mapping pg_catalog.jsonb, opts pg_catalog.jsonb, backfill pg_catalog.bool)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	roles pg_catalog.jsonb := @extschema@._source_roles(source_kind);
	role pg_catalog.text;
	spec pg_catalog.text;
	col pg_catalog.text;
	att record;
	relkind "char";
	key_role pg_catalog.text := CASE source_kind WHEN 'order_lines' THEN 'order_id' ELSE 'customer' END;
	key_typ pg_catalog.regtype;
	type_ok pg_catalog.bool;
	bad pg_catalog.int8;
	role_names pg_catalog.text;
	refreshed pg_catalog.int8 := 0;
BEGIN
	IF rel IS NULL THEN
		RAISE EXCEPTION 'the table to attach must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT c.relkind INTO relkind FROM pg_catalog.pg_class c WHERE c.oid = rel;
	IF relkind = 'p' OR (SELECT c.relispartition FROM pg_catalog.pg_class c WHERE c.oid = rel) THEN
		RAISE EXCEPTION 'cannot attach %: partitioned tables and partitions are not supported yet', rel
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Rows written through the parent do not fire a partition''s statement triggers, nor the other way round.',
				  HINT = 'Record these rows with the tracking API, or attach an unpartitioned table.';
	END IF;
	IF relkind <> 'r' THEN
		RAISE EXCEPTION 'cannot attach %: it is not a table', rel
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = pg_catalog.format('%s is a %s.', rel, CASE relkind WHEN 'v' THEN 'view'
					WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE 'relation of kind ' || relkind::pg_catalog.text END),
				  HINT = 'Attach the table that holds the rows; segments watches it with triggers.';
	END IF;
	IF NOT pg_catalog.has_table_privilege(rel, 'TRIGGER') THEN
		RAISE EXCEPTION 'permission denied to attach %', rel
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Attaching creates triggers on the table, which needs its TRIGGER privilege.',
				  HINT = pg_catalog.format('Run as the table''s owner, or GRANT TRIGGER ON %s TO %I.', rel, current_user);
	END IF;

	-- unknown roles
	SELECT pg_catalog.string_agg(k, ', ') INTO role_names
	  FROM pg_catalog.jsonb_object_keys(mapping) k WHERE NOT roles ? k;
	IF role_names IS NOT NULL THEN
		RAISE EXCEPTION 'unknown column role(s) for %: %', source_kind, role_names USING ERRCODE = 'invalid_parameter_value';
	END IF;

	FOR role, spec IN SELECT * FROM pg_catalog.jsonb_each_text(roles) LOOP
		col := mapping->>role;
		IF col IS NULL THEN
			IF pg_catalog.split_part(spec, ':', 2) = '1' THEN
				RAISE EXCEPTION 'the % column of % must be given', role, rel
					USING ERRCODE = 'null_value_not_allowed',
						  HINT = pg_catalog.format('Pass %s => ''column_name''.', role);
			END IF;
			CONTINUE;
		END IF;
		SELECT a.attnum, a.atttypid::pg_catalog.regtype AS typ, t.typcategory, t.typelem
		  INTO att
		  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
		 WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
				USING ERRCODE = 'undefined_column',
					  DETAIL = pg_catalog.format('It was given as the %s column.', role),
					  HINT = 'Column names are case sensitive and are not quoted: pass them exactly as in the table.';
		END IF;
		IF NOT pg_catalog.has_column_privilege(rel, att.attnum, 'SELECT') THEN
			RAISE EXCEPTION 'permission denied for column "%" of relation %', col, rel
				USING ERRCODE = 'insufficient_privilege',
					  HINT = 'segments reads attached tables as the role that refreshes facts; grant it SELECT.';
		END IF;
		type_ok := CASE pg_catalog.split_part(spec, ':', 1)
			WHEN 'key' THEN att.typ IN ('smallint'::pg_catalog.regtype, 'integer'::pg_catalog.regtype,
				'bigint'::pg_catalog.regtype, 'uuid'::pg_catalog.regtype, 'text'::pg_catalog.regtype,
				'character varying'::pg_catalog.regtype)
			WHEN 'time' THEN att.typ IN ('timestamp with time zone'::pg_catalog.regtype,
				'timestamp without time zone'::pg_catalog.regtype, 'date'::pg_catalog.regtype)
			WHEN 'amount' THEN att.typcategory = 'N' OR att.typ = 'money'::pg_catalog.regtype
			WHEN 'array' THEN att.typcategory = 'A'
			ELSE true END;
		IF NOT type_ok THEN
			RAISE EXCEPTION 'column "%" of relation % has type %, which cannot be the % column', col, rel, att.typ, role
				USING ERRCODE = 'datatype_mismatch',
					  HINT = CASE pg_catalog.split_part(spec, ':', 1)
						WHEN 'key' THEN 'Customer ids may be smallint, integer, bigint, uuid, text or varchar.'
						WHEN 'time' THEN 'Times may be timestamptz, timestamp (read in shop_time_zone) or date.'
						WHEN 'amount' THEN 'Amounts may be numeric, integer (cents: pass amount_scale => 0.01), float or money.'
						ELSE 'Tags must be an array column.' END;
		END IF;
		IF role = key_role THEN
			key_typ := att.typ;
		END IF;
	END LOOP;

	IF EXISTS (SELECT FROM @extschema@.sources s WHERE s.relation = rel) THEN
		RAISE EXCEPTION '% is already attached', rel
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Call segments.detach() first to change its mapping; segments.rebuild_facts() to recompute.';
	END IF;
	IF source_kind = 'customers' AND EXISTS (SELECT FROM @extschema@.sources s WHERE s.kind = 'customers' AND NOT s.builtin) THEN
		RAISE EXCEPTION 'a customers table is already attached'
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Only one customers table can be attached; detach the other one first.';
	END IF;
	SELECT pg_catalog.string_agg(k, ', ') INTO role_names
	  FROM pg_catalog.jsonb_each(opts) e(k, v)
	 WHERE k IN ('completed', 'refunded', 'cancelled', 'checkout_stages', 'converted', 'emptied')
	   AND pg_catalog.jsonb_typeof(v) <> 'array';
	IF role_names IS NOT NULL THEN
		RAISE EXCEPTION 'the value list(s) % must not be NULL', role_names
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass an array of the values that mean it, or ''{}'' when no value does.';
	END IF;
	IF opts ? 'timestamp_time_zone' AND opts->>'timestamp_time_zone' IS NOT NULL THEN
		PERFORM pg_catalog.now() AT TIME ZONE (opts->>'timestamp_time_zone');
	END IF;
	IF (opts->>'amount_scale') IS NOT NULL AND (opts->>'amount_scale')::pg_catalog.numeric <= 0 THEN
		RAISE EXCEPTION 'amount_scale must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- data checks: amounts the shop holds negative would corrupt revenue
	IF source_kind IN ('orders', 'carts') AND NOT COALESCE((opts->>'allow_negative_amounts')::pg_catalog.bool, false) THEN
		EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s t WHERE %s < 0', rel,
			@extschema@._column_expr(rel, 't', mapping->>CASE source_kind WHEN 'orders' THEN 'amount' ELSE 'value' END, 'amount', opts))
		INTO bad;
		IF bad > 0 THEN
			RAISE EXCEPTION '% has % row(s) with a negative %', rel, bad,
				mapping->>CASE source_kind WHEN 'orders' THEN 'amount' ELSE 'value' END
				USING ERRCODE = 'check_violation',
					  DETAIL = 'Refunds belong in the refunded amount or status columns, not in negative order amounts.',
					  HINT = 'Pass allow_negative_amounts => true to count them as they are.';
		END IF;
	END IF;
	IF source_kind <> 'order_lines' THEN
		EXECUTE pg_catalog.format('SELECT count(*) FROM %s t WHERE %I IS NULL', rel, mapping->>key_role) INTO bad;
		IF bad > 0 THEN
			RAISE NOTICE '% row(s) of % have no customer and are ignored', bad, rel;
		END IF;
	END IF;

	INSERT INTO @extschema@.sources (relation, kind, columns, options, key_type)
	VALUES (rel, source_kind, pg_catalog.jsonb_strip_nulls(mapping), pg_catalog.jsonb_strip_nulls(opts), key_typ);

	PERFORM @extschema@._install_capture(rel, CASE key_role WHEN 'order_id' THEN 'order' ELSE 'customer' END,
										 mapping->>key_role, '');

	IF backfill THEN
		refreshed := @extschema@.rebuild_facts();
	ELSE
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (rel, 'attach');
	END IF;
	RETURN refreshed;
END
$$;

CREATE FUNCTION @extschema@._install_capture(rel pg_catalog.regclass, key_kind pg_catalog.text,
	key_col pg_catalog.text, suffix pg_catalog.text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS segments_new '
		'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.capture_changes(%L, %L)',
		'segments_capture_insert' || suffix, rel, key_kind, key_col);
	EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS segments_old NEW TABLE AS segments_new '
		'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.capture_changes(%L, %L)',
		'segments_capture_update' || suffix, rel, key_kind, key_col);
	EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS segments_old '
		'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.capture_changes(%L, %L)',
		'segments_capture_delete' || suffix, rel, key_kind, key_col);
	IF suffix = '' THEN
		EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER TRUNCATE ON %s '
			'FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.capture_changes(%L, %L)',
			'segments_capture_truncate', rel, key_kind, key_col);
	END IF;
END
$$;

CREATE FUNCTION @extschema@.attach_orders(relation pg_catalog.regclass,
	customer pg_catalog.text, order_id pg_catalog.text, placed_at pg_catalog.text, amount pg_catalog.text,
	status pg_catalog.text DEFAULT NULL,
	completed pg_catalog.text[] DEFAULT '{completed,paid,fulfilled,shipped,delivered}',
	refunded pg_catalog.text[] DEFAULT '{refunded}',
	cancelled pg_catalog.text[] DEFAULT '{cancelled,canceled,voided,failed}',
	refunded_amount pg_catalog.text DEFAULT NULL, discount pg_catalog.text DEFAULT NULL,
	currency pg_catalog.text DEFAULT NULL, cost pg_catalog.text DEFAULT NULL,
	sales_channel pg_catalog.text DEFAULT NULL,
	amount_scale pg_catalog.numeric DEFAULT 1, timestamp_time_zone pg_catalog.text DEFAULT NULL,
	allow_negative_amounts pg_catalog.bool DEFAULT false, backfill pg_catalog.bool DEFAULT true)
RETURNS pg_catalog.int8
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN @extschema@._attach(relation, 'orders',
	pg_catalog.jsonb_build_object('customer', customer, 'order_id', order_id, 'placed_at', placed_at,
		'amount', amount, 'status', status, 'refunded_amount', refunded_amount, 'discount', discount,
		'currency', currency, 'cost', cost, 'sales_channel', sales_channel),
	pg_catalog.jsonb_build_object('completed', completed, 'refunded', refunded, 'cancelled', cancelled,
		'amount_scale', amount_scale, 'timestamp_time_zone', timestamp_time_zone,
		'allow_negative_amounts', allow_negative_amounts),
	backfill);

COMMENT ON FUNCTION @extschema@.attach_orders IS
'Attaches the shop''s orders table by naming its columns; validates, installs capture triggers, backfills facts';

CREATE FUNCTION @extschema@.attach_order_lines(relation pg_catalog.regclass,
	orders pg_catalog.regclass, order_id pg_catalog.text, product pg_catalog.text,
	quantity pg_catalog.text DEFAULT NULL, amount pg_catalog.text DEFAULT NULL,
	category pg_catalog.text DEFAULT NULL,
	products pg_catalog.regclass DEFAULT NULL, product_key pg_catalog.text DEFAULT NULL,
	product_category pg_catalog.text DEFAULT NULL,
	amount_scale pg_catalog.numeric DEFAULT 1, backfill pg_catalog.bool DEFAULT true)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM @extschema@.sources s WHERE s.relation = orders AND s.kind = 'orders') THEN
		RAISE EXCEPTION '% is not an attached orders table', orders
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Attach the orders table with segments.attach_orders() first.';
	END IF;
	IF category IS NULL AND (products IS NULL OR product_key IS NULL OR product_category IS NULL) THEN
		RAISE EXCEPTION 'order lines need a category: a category column, or products, product_key and product_category'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF products IS NOT NULL THEN
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = products AND a.attname = product_key AND a.attnum > 0 AND NOT a.attisdropped)
		   OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = products AND a.attname = product_category AND a.attnum > 0 AND NOT a.attisdropped) THEN
			RAISE EXCEPTION 'columns "%" and "%" must both exist in %', product_key, product_category, products
				USING ERRCODE = 'undefined_column';
		END IF;
		IF NOT pg_catalog.has_table_privilege(products, 'SELECT') THEN
			RAISE EXCEPTION 'permission denied for table %', products USING ERRCODE = 'insufficient_privilege';
		END IF;
	END IF;
	RETURN @extschema@._attach(relation, 'order_lines',
		pg_catalog.jsonb_build_object('order_id', order_id, 'product', product, 'quantity', quantity,
			'amount', amount, 'category', category),
		pg_catalog.jsonb_build_object('orders', orders::pg_catalog.text, 'products', products::pg_catalog.text,
			'product_key', product_key, 'product_category', product_category, 'amount_scale', amount_scale),
		backfill);
END
$$;

COMMENT ON FUNCTION @extschema@.attach_order_lines IS
'Attaches the shop''s order lines (categories and products bought), paired with an attached orders table';

CREATE FUNCTION @extschema@.attach_carts(relation pg_catalog.regclass,
	cart_id pg_catalog.text, customer pg_catalog.text, created_at pg_catalog.text,
	updated_at pg_catalog.text, value pg_catalog.text,
	stage pg_catalog.text DEFAULT NULL, checkout_stages pg_catalog.text[] DEFAULT '{checkout}',
	converted_order pg_catalog.text DEFAULT NULL, status pg_catalog.text DEFAULT NULL,
	converted pg_catalog.text[] DEFAULT '{converted,completed,ordered}',
	emptied pg_catalog.text[] DEFAULT '{emptied,deleted,cleared}',
	link pg_catalog.text DEFAULT NULL,
	amount_scale pg_catalog.numeric DEFAULT 1, timestamp_time_zone pg_catalog.text DEFAULT NULL,
	allow_negative_amounts pg_catalog.bool DEFAULT false, backfill pg_catalog.bool DEFAULT true)
RETURNS pg_catalog.int8
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN @extschema@._attach(relation, 'carts',
	pg_catalog.jsonb_build_object('cart_id', cart_id, 'customer', customer, 'created_at', created_at,
		'updated_at', updated_at, 'value', value, 'stage', stage, 'converted_order', converted_order,
		'status', status, 'link', link),
	pg_catalog.jsonb_build_object('checkout_stages', checkout_stages, 'converted', converted, 'emptied', emptied,
		'amount_scale', amount_scale, 'timestamp_time_zone', timestamp_time_zone,
		'allow_negative_amounts', allow_negative_amounts),
	backfill);

COMMENT ON FUNCTION @extschema@.attach_carts IS
'Attaches the shop''s carts / checkouts table; a cart is open until converted, emptied or followed by an order';

CREATE FUNCTION @extschema@.attach_customers(relation pg_catalog.regclass,
	customer pg_catalog.text,
	country pg_catalog.text DEFAULT NULL, region pg_catalog.text DEFAULT NULL,
	language pg_catalog.text DEFAULT NULL, currency pg_catalog.text DEFAULT NULL,
	time_zone pg_catalog.text DEFAULT NULL, account_type pg_catalog.text DEFAULT NULL,
	tags pg_catalog.text DEFAULT NULL, wallet_balance pg_catalog.text DEFAULT NULL,
	referred_by pg_catalog.text DEFAULT NULL, created_at pg_catalog.text DEFAULT NULL,
	amount_scale pg_catalog.numeric DEFAULT 1, timestamp_time_zone pg_catalog.text DEFAULT NULL,
	backfill pg_catalog.bool DEFAULT true)
RETURNS pg_catalog.int8
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN @extschema@._attach(relation, 'customers',
	pg_catalog.jsonb_build_object('customer', customer, 'country', country, 'region', region,
		'language', language, 'currency', currency, 'time_zone', time_zone, 'account_type', account_type,
		'tags', tags, 'wallet_balance', wallet_balance, 'referred_by', referred_by, 'created_at', created_at),
	pg_catalog.jsonb_build_object('amount_scale', amount_scale, 'timestamp_time_zone', timestamp_time_zone),
	backfill);

COMMENT ON FUNCTION @extschema@.attach_customers IS
'Attaches the shop''s customers table (profile, wallet, referral columns); customers without orders become browsers';

CREATE FUNCTION @extschema@.detach(relation pg_catalog.regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	trg pg_catalog.name;
BEGIN
	IF NOT EXISTS (SELECT FROM @extschema@.sources s WHERE s.relation = detach.relation AND NOT s.builtin) THEN
		RAISE EXCEPTION '% is not attached', relation
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT relation FROM segments.sources lists attached tables.';
	END IF;
	IF EXISTS (SELECT FROM @extschema@.sources s WHERE s.kind = 'order_lines'
				AND s.options->>'orders' = detach.relation::pg_catalog.text) THEN
		RAISE EXCEPTION 'order lines are attached to %', relation
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Detach the order lines table first.';
	END IF;
	-- only our own triggers: they all call segments.capture_changes()
	FOR trg IN SELECT t.tgname FROM pg_catalog.pg_trigger t
				WHERE t.tgrelid = detach.relation
				  AND t.tgfoid = '@extschema@.capture_changes()'::pg_catalog.regprocedure LOOP
		EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg, relation);
	END LOOP;
	DELETE FROM @extschema@.sources s WHERE s.relation = detach.relation;
	-- its customers' facts are now stale: the next refresh rebuilds them
	INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'detach');
END
$$;

COMMENT ON FUNCTION @extschema@.detach(pg_catalog.regclass) IS
'Removes segments'' triggers from an attached table and forgets its mapping; the table itself is untouched';

--------------------------------------------------------------------------------
-- Customer facts: the one query that computes them. Generated from the
-- sources so the shop's own columns, types and indexes are used directly.
-- keyed: $1 text[] holds the customers to compute; otherwise all of them.
-- $2 is the as-of time that next_change_at is computed from; as_of_mode
-- also leaves out whatever happened after it (orders placed, carts created,
-- events recorded), for backtests. Statuses and refunds are today's: the
-- shop's tables keep no history of them.
--------------------------------------------------------------------------------

-- The windows next_change_at watches: days after the first and last order,
-- the last engagement, message and wallet activity; minutes of cart idle
-- time. Later layers replace these to add the windows of their own rules.
CREATE FUNCTION @extschema@._watch_days()
RETURNS pg_catalog.int4[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(
	SELECT DISTINCT d FROM pg_catalog.unnest(@extschema@.setting_value('watch_days')::pg_catalog.int4[]
		|| pg_catalog.ceil(EXTRACT(epoch FROM @extschema@.setting_value('engagement_window')::pg_catalog.interval) / 86400)::pg_catalog.int4) d
	 ORDER BY d);

CREATE FUNCTION @extschema@._watch_cart_minutes()
RETURNS pg_catalog.int4[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(
	SELECT DISTINCT pg_catalog.ceil(EXTRACT(epoch FROM @extschema@.setting_value(n)::pg_catalog.interval) / 60)::pg_catalog.int4 AS m
	  FROM pg_catalog.unnest('{cart_abandon_after,checkout_abandon_after}'::pg_catalog.text[]) n
	 ORDER BY m);

CREATE FUNCTION @extschema@._facts_sql(keyed pg_catalog.bool, as_of_mode pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	c pg_catalog.jsonb;
	o pg_catalog.jsonb;
	part pg_catalog.text;
	order_parts pg_catalog.text[] := '{}';
	line_parts pg_catalog.text[] := '{}';
	cart_parts pg_catalog.text[] := '{}';
	profile_parts pg_catalog.text[] := '{}';
	keyfilter pg_catalog.text;
	watch pg_catalog.text := pg_catalog.quote_literal(@extschema@._watch_days());
	cart_minutes pg_catalog.text := pg_catalog.quote_literal(@extschema@._watch_cart_minutes());
	ours pg_catalog.text;
	q pg_catalog.text;
BEGIN
	FOR s IN SELECT * FROM @extschema@.sources ORDER BY builtin, relation::pg_catalog.oid LOOP
		c := s.columns;
		o := s.options;
		keyfilter := CASE WHEN keyed AND s.kind <> 'order_lines' THEN
			pg_catalog.format(' AND t.%I = ANY(%s)', c->>'customer', @extschema@._keys_as(s.key_type, '$1'))
			ELSE '' END
			|| CASE WHEN NOT as_of_mode THEN ''
				WHEN s.kind = 'orders' THEN ' AND ' || @extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o) || ' <= $2'
				WHEN s.kind = 'carts' THEN ' AND ' || @extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o) || ' <= $2'
				WHEN s.kind = 'customers' AND c ? 'created_at' THEN
					' AND COALESCE(' || @extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o) || ' <= $2, true)'
				ELSE '' END;
		IF s.kind = 'orders' THEN
			order_parts := order_parts || pg_catalog.format(
				'SELECT %s::pg_catalog.oid AS src, %s AS customer_id, %s AS order_id, %s AS placed_at, %s AS amount, %s AS state, '
				'COALESCE(%s, 0) AS refunded_amount, %s AS discounted, %s AS cost FROM %s t WHERE t.%I IS NOT NULL%s',
				s.relation::pg_catalog.oid,
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'order_id', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'placed_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'amount', 'amount', o),
				CASE WHEN c ? 'status' THEN pg_catalog.format(
					'CASE WHEN %1$s = ANY(%2$L::pg_catalog.text[]) THEN ''completed'' WHEN %1$s = ANY(%3$L::pg_catalog.text[]) THEN ''refunded'' '
					'WHEN %1$s = ANY(%4$L::pg_catalog.text[]) THEN ''cancelled'' ELSE ''other'' END',
					@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o),
					@extschema@._text_array(o->'completed'), @extschema@._text_array(o->'refunded'), @extschema@._text_array(o->'cancelled'))
					ELSE '''completed''' END,
				@extschema@._column_expr(s.relation, 't', c->>'refunded_amount', 'amount', o),
				CASE WHEN c ? 'discount' THEN @extschema@._column_expr(s.relation, 't', c->>'discount', 'flag', o) ELSE 'false' END,
				@extschema@._column_expr(s.relation, 't', c->>'cost', 'amount', o),
				s.relation, c->>'customer', keyfilter);
		ELSIF s.kind = 'order_lines' THEN
			-- each line joined to its completed order (of the paired orders
			-- table) through the lines' own key type, so an index on the
			-- lines' order column serves a keyed refresh
			line_parts := line_parts || pg_catalog.format(
				'SELECT r.customer_id, %s AS category FROM order_rows r JOIN %s t ON t.%I = r.order_id::%s%s '
				'WHERE r.src = %s AND r.state = ''completed''',
				CASE WHEN c ? 'category' THEN @extschema@._column_expr(s.relation, 't', c->>'category', 'text', o)
					 ELSE pg_catalog.format('p.%I::pg_catalog.text', o->>'product_category') END,
				s.relation, c->>'order_id',
				(SELECT a.atttypid::pg_catalog.regtype FROM pg_catalog.pg_attribute a
				  WHERE a.attrelid = s.relation AND a.attname = c->>'order_id'),
				CASE WHEN c ? 'category' THEN '' ELSE pg_catalog.format(' LEFT JOIN %s p ON p.%I = t.%I',
					(o->>'products')::pg_catalog.regclass, o->>'product_key', c->>'product') END,
				(o->>'orders')::pg_catalog.regclass::pg_catalog.oid);
		ELSIF s.kind = 'carts' THEN
			cart_parts := cart_parts || pg_catalog.format(
				'SELECT %s AS customer_id, %s AS cart_id, %s AS created_at, %s AS updated_at, %s AS value, %s AS stage, '
				'CASE WHEN %s IS NOT NULL THEN ''converted'' WHEN %s = ANY(%L::pg_catalog.text[]) THEN ''converted'' '
				'WHEN %s = ANY(%L::pg_catalog.text[]) OR COALESCE(%s, 0) <= 0 THEN ''emptied'' ELSE ''open'' END AS state, '
				'%s AS link FROM %s t WHERE t.%I IS NOT NULL%s',
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'cart_id', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'updated_at', 'time', o),
				@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
				CASE WHEN c ? 'stage' THEN pg_catalog.format('CASE WHEN %s = ANY(%L::pg_catalog.text[]) THEN ''checkout'' ELSE ''cart'' END',
					@extschema@._column_expr(s.relation, 't', c->>'stage', 'text', o), COALESCE(@extschema@._text_array(o->'checkout_stages'), '{checkout}'))
					ELSE '''cart''' END,
				@extschema@._column_expr(s.relation, 't', c->>'converted_order', 'raw', o),
				@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'converted'),
				@extschema@._column_expr(s.relation, 't', c->>'status', 'text', o), @extschema@._text_array(o->'emptied'),
				@extschema@._column_expr(s.relation, 't', c->>'value', 'amount', o),
				@extschema@._column_expr(s.relation, 't', c->>'link', 'text', o),
				s.relation, c->>'customer', keyfilter);
		ELSIF s.kind = 'customers' THEN
			profile_parts := profile_parts || pg_catalog.format(
				'SELECT %s AS priority, %s AS customer_id, %s AS country, %s AS region, %s AS language, %s AS currency, '
				'%s AS time_zone, %s AS account_type, %s AS tags, %s AS wallet_balance, %s AS referred_by, %s AS created_at '
				'FROM %s t WHERE t.%I IS NOT NULL%s',
				CASE WHEN s.builtin THEN 2 ELSE 1 END,
				@extschema@._column_expr(s.relation, 't', c->>'customer', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'country', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'region', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'language', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'currency', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'time_zone', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'account_type', 'text', o),
				CASE WHEN c ? 'tags' THEN @extschema@._column_expr(s.relation, 't', c->>'tags', 'textarray', o) ELSE 'NULL::pg_catalog.text[]' END,
				@extschema@._column_expr(s.relation, 't', c->>'wallet_balance', 'amount', o),
				@extschema@._column_expr(s.relation, 't', c->>'referred_by', 'text', o),
				@extschema@._column_expr(s.relation, 't', c->>'created_at', 'time', o),
				s.relation, c->>'customer', keyfilter);
		END IF;
	END LOOP;

	-- filters of our own event tables: %1$s is the customer column
	ours := CASE WHEN keyed AND as_of_mode THEN ' WHERE %1$s = ANY($1) AND occurred_at <= $2'
				 WHEN keyed THEN ' WHERE %1$s = ANY($1)'
				 WHEN as_of_mode THEN ' WHERE occurred_at <= $2'
				 ELSE '' END;

	q := 'WITH order_rows AS (' || COALESCE(NULLIF(pg_catalog.array_to_string(order_parts, ' UNION ALL '), ''),
		'SELECT NULL::pg_catalog.oid AS src, NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.text AS order_id, '
		'NULL::pg_catalog.timestamptz AS placed_at, NULL::pg_catalog.numeric AS amount, NULL::pg_catalog.text AS state, '
		'NULL::pg_catalog.numeric AS refunded_amount, false AS discounted, NULL::pg_catalog.numeric AS cost WHERE false') || '),
ord AS (
	SELECT customer_id,
		   pg_catalog.min(placed_at) FILTER (WHERE state = ''completed'') AS first_order_at,
		   pg_catalog.max(placed_at) FILTER (WHERE state = ''completed'') AS last_order_at,
		   pg_catalog.count(*) FILTER (WHERE state = ''completed'')::pg_catalog.int4 AS orders,
		   pg_catalog.count(*) FILTER (WHERE state = ''refunded'')::pg_catalog.int4 AS refunded_orders,
		   pg_catalog.count(*) FILTER (WHERE state = ''cancelled'')::pg_catalog.int4 AS cancelled_orders,
		   COALESCE(pg_catalog.sum(amount) FILTER (WHERE state = ''completed''), 0) AS gross_revenue,
		   COALESCE(pg_catalog.sum(refunded_amount) FILTER (WHERE state = ''completed''), 0) AS refunded_amount,
		   pg_catalog.count(*) FILTER (WHERE state = ''completed'' AND discounted)::pg_catalog.int4 AS discounted_orders,
		   pg_catalog.sum(amount - refunded_amount - cost) FILTER (WHERE state = ''completed'' AND cost IS NOT NULL) AS margin,
		   @extschema@.buying_cycle(placed_at) FILTER (WHERE state = ''completed'') AS cycle
	  FROM order_rows GROUP BY customer_id),
cats AS (' || CASE WHEN pg_catalog.cardinality(line_parts) = 0 THEN
		'SELECT NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.text[] AS categories WHERE false'
	ELSE
		'SELECT l.customer_id, pg_catalog.array_agg(DISTINCT l.category ORDER BY l.category) AS categories
	  FROM (' || pg_catalog.array_to_string(line_parts, ' UNION ALL ') || ') l
	 WHERE l.category IS NOT NULL GROUP BY l.customer_id' END || '),
cart_rows AS (' || COALESCE(NULLIF(pg_catalog.array_to_string(cart_parts, ' UNION ALL '), ''),
		'SELECT NULL::pg_catalog.text AS customer_id, NULL::pg_catalog.text AS cart_id, NULL::pg_catalog.timestamptz AS created_at, '
		'NULL::pg_catalog.timestamptz AS updated_at, NULL::pg_catalog.numeric AS value, NULL::pg_catalog.text AS stage, '
		'NULL::pg_catalog.text AS state, NULL::pg_catalog.text AS link WHERE false') || '),
carts AS (
	SELECT cr.customer_id, pg_catalog.count(*)::pg_catalog.int4 AS carts_started,
		   pg_catalog.count(*) FILTER (WHERE cr.state = ''converted''
				OR (cr.state = ''open'' AND cr.updated_at <= o.last_order_at))::pg_catalog.int4 AS carts_converted
	  FROM cart_rows cr LEFT JOIN ord o ON o.customer_id = cr.customer_id
	 GROUP BY cr.customer_id),
open_cart AS (
	SELECT DISTINCT ON (customer_id) customer_id, cart_id, value, stage, created_at, updated_at, link
	  FROM cart_rows WHERE state = ''open''
	 ORDER BY customer_id, updated_at DESC, cart_id DESC),
profile AS (
	SELECT DISTINCT ON (customer_id) * FROM (' || COALESCE(NULLIF(pg_catalog.array_to_string(profile_parts, ' UNION ALL '), ''),
		'SELECT 1 AS priority, NULL::pg_catalog.text AS customer_id WHERE false') || ') p
	 ORDER BY customer_id, priority),
engagement AS (
	SELECT customer_id,
		   pg_catalog.count(*) FILTER (WHERE event = ''sent'')::pg_catalog.int4 AS messages_sent,
		   pg_catalog.count(*) FILTER (WHERE event = ''opened'')::pg_catalog.int4 AS messages_opened,
		   pg_catalog.count(*) FILTER (WHERE event = ''clicked'')::pg_catalog.int4 AS messages_clicked,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''sent'') AS last_message_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event IN (''opened'', ''clicked'')) AS last_engaged_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''bounced'') AS last_bounced_at,
		   pg_catalog.max(occurred_at) FILTER (WHERE event = ''complained'') AS last_complained_at
	  FROM @extschema@.engagement_events' || pg_catalog.format(ours, 'customer_id') || ' GROUP BY customer_id),
ignored AS (
	SELECT e.customer_id, pg_catalog.count(*)::pg_catalog.int4 AS consecutive_ignored
	  FROM @extschema@.engagement_events ev JOIN engagement e ON e.customer_id = ev.customer_id
	 WHERE ev.event = ''sent'' AND ev.occurred_at > COALESCE(e.last_engaged_at, ''-infinity'')' ||
	   CASE WHEN as_of_mode THEN ' AND ev.occurred_at <= $2' ELSE '' END || '
	 GROUP BY e.customer_id),
consent AS (
	SELECT customer_id,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''email''), false) AS consent_email,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''sms''), false) AS consent_sms,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''telegram''), false) AS consent_telegram,
		   COALESCE(pg_catalog.bool_or(granted) FILTER (WHERE channel = ''push''), false) AS consent_push
	  FROM (SELECT DISTINCT ON (customer_id, channel) customer_id, channel::pg_catalog.text AS channel, granted
			  FROM @extschema@.consent_events' || pg_catalog.format(ours, 'customer_id') || '
			 ORDER BY customer_id, channel, occurred_at DESC, event_id DESC) latest
	 GROUP BY customer_id),
wallet AS (
	SELECT customer_id, pg_catalog.sum(amount) AS balance, pg_catalog.max(occurred_at) AS last_activity_at
	  FROM @extschema@.wallet_events' || pg_catalog.format(ours, 'customer_id') || ' GROUP BY customer_id),
referrals AS (
	SELECT referrer_id AS customer_id, pg_catalog.count(referred_id)::pg_catalog.int4 AS referrals_made,
		   pg_catalog.sum(credit) AS referral_credit
	  FROM @extschema@.referral_events' || pg_catalog.format(ours, 'referrer_id') || ' GROUP BY referrer_id),
referred AS (
	SELECT DISTINCT ON (referred_id) referred_id AS customer_id, referrer_id
	  FROM @extschema@.referral_events WHERE referred_id IS NOT NULL' ||
	  CASE WHEN as_of_mode THEN ' AND occurred_at <= $2' ELSE '' END ||
	  CASE WHEN keyed THEN ' AND referred_id = ANY($1)' ELSE '' END || '
	 ORDER BY referred_id, occurred_at, event_id),
keys AS (' || CASE WHEN keyed THEN 'SELECT DISTINCT k AS customer_id FROM pg_catalog.unnest($1) k' ELSE
		'SELECT customer_id FROM ord UNION SELECT customer_id FROM carts UNION SELECT customer_id FROM profile
		 UNION SELECT customer_id FROM engagement UNION SELECT customer_id FROM consent UNION SELECT customer_id FROM wallet
		 UNION SELECT customer_id FROM referrals UNION SELECT customer_id FROM referred' END || ')
SELECT k.customer_id,
	   o.first_order_at, o.last_order_at, COALESCE(o.orders, 0), COALESCE(o.refunded_orders, 0),
	   COALESCE(o.cancelled_orders, 0), COALESCE(o.gross_revenue, 0), COALESCE(o.refunded_amount, 0),
	   COALESCE(o.gross_revenue - o.refunded_amount, 0),
	   CASE WHEN o.orders > 0 THEN pg_catalog.round((o.gross_revenue - o.refunded_amount) / o.orders, 2) END,
	   COALESCE(o.discounted_orders, 0), o.margin, (o.cycle).median_gap_days, COALESCE((o.cycle).gap_count, 0),
	   cats.categories,
	   COALESCE(ca.carts_started, 0), COALESCE(ca.carts_converted, 0),
	   oc.cart_id, oc.value, oc.stage, oc.created_at, oc.updated_at, oc.link,
	   COALESCE(e.messages_sent, 0), COALESCE(e.messages_opened, 0), COALESCE(e.messages_clicked, 0),
	   e.last_message_at, e.last_engaged_at, COALESCE(i.consecutive_ignored, 0), e.last_bounced_at, e.last_complained_at,
	   COALESCE(cs.consent_email, false), COALESCE(cs.consent_sms, false),
	   COALESCE(cs.consent_telegram, false), COALESCE(cs.consent_push, false),
	   p.country, p.region, p.language, p.currency, p.time_zone, p.account_type, p.tags, p.created_at,
	   COALESCE(p.wallet_balance, w.balance), w.last_activity_at,
	   COALESCE(p.referred_by, rd.referrer_id), COALESCE(r.referrals_made, 0), COALESCE(r.referral_credit, 0),
	   LEAST(@extschema@.next_time_after($2, o.last_order_at, ' || watch || '),
			 @extschema@.next_time_after($2, o.first_order_at, ' || watch || '),
			 @extschema@.next_time_after($2, e.last_engaged_at, ' || watch || '),
			 @extschema@.next_time_after($2, e.last_message_at, ' || watch || '),
			 @extschema@.next_time_after($2, w.last_activity_at, ' || watch || '),
			 CASE WHEN oc.cart_id IS NOT NULL THEN
				(SELECT pg_catalog.min(oc.updated_at + m * ''1 minute''::pg_catalog.interval)
				   FROM pg_catalog.unnest(' || cart_minutes || '::pg_catalog.int4[]) m
				  WHERE oc.updated_at + m * ''1 minute''::pg_catalog.interval > $2) END)
  FROM keys k
  LEFT JOIN ord o ON o.customer_id = k.customer_id
  LEFT JOIN cats ON cats.customer_id = k.customer_id
  LEFT JOIN carts ca ON ca.customer_id = k.customer_id
  LEFT JOIN open_cart oc ON oc.customer_id = k.customer_id
	   AND (o.last_order_at IS NULL OR o.last_order_at < oc.updated_at)
  LEFT JOIN profile p ON p.customer_id = k.customer_id
  LEFT JOIN engagement e ON e.customer_id = k.customer_id
  LEFT JOIN ignored i ON i.customer_id = k.customer_id
  LEFT JOIN consent cs ON cs.customer_id = k.customer_id
  LEFT JOIN wallet w ON w.customer_id = k.customer_id
  LEFT JOIN referrals r ON r.customer_id = k.customer_id
  LEFT JOIN referred rd ON rd.customer_id = k.customer_id
 WHERE o.customer_id IS NOT NULL OR ca.customer_id IS NOT NULL OR p.customer_id IS NOT NULL
	OR e.customer_id IS NOT NULL OR cs.customer_id IS NOT NULL OR w.customer_id IS NOT NULL
	OR r.customer_id IS NOT NULL OR rd.customer_id IS NOT NULL';
	RETURN q;
END
$$;

-- The facts columns the computation fills, in table order (all but refreshed_at).
CREATE FUNCTION @extschema@._facts_columns(prefix pg_catalog.text DEFAULT '')
RETURNS pg_catalog.text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT pg_catalog.string_agg(prefix || pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
		  FROM pg_catalog.pg_attribute a
		 WHERE a.attrelid = '@extschema@.customer_facts'::pg_catalog.regclass
		   AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'refreshed_at');

-- Writes computed facts for the given customers (all when keys is NULL),
-- touching only rows that really change. Returns rows written and removed.
CREATE FUNCTION @extschema@._write_facts(keys pg_catalog.text[], as_of pg_catalog.timestamptz,
	OUT written pg_catalog.int8, OUT removed pg_catalog.int8)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cols pg_catalog.text := @extschema@._facts_columns();
BEGIN
	EXECUTE pg_catalog.format(
		'WITH computed AS (%s),
		 upserted AS (
			INSERT INTO @extschema@.customer_facts AS f (%s) SELECT * FROM computed
			ON CONFLICT (customer_id) DO UPDATE SET (%s) = (%s), refreshed_at = pg_catalog.now()
			WHERE (%s) IS DISTINCT FROM (%s)
			RETURNING 1),
		 gone AS (
			DELETE FROM @extschema@.customer_facts f
			 WHERE f.customer_id = ANY($1)
			   AND NOT EXISTS (SELECT FROM computed c WHERE c.customer_id = f.customer_id)
			RETURNING 1)
		 SELECT (SELECT pg_catalog.count(*) FROM upserted), (SELECT pg_catalog.count(*) FROM gone)',
		@extschema@._facts_sql(keys IS NOT NULL), cols, cols, @extschema@._facts_columns('excluded.'),
		@extschema@._facts_columns('f.'), @extschema@._facts_columns('excluded.'))
	INTO written, removed
	USING keys, as_of;
END
$$;

-- Called after every refresh with the customers whose facts were checked
-- (NULL: all of them, after a rebuild). The layers downstream of facts
-- (segment membership) replace it to learn what to re-evaluate.
CREATE FUNCTION @extschema@._facts_refreshed(keys pg_catalog.text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NULL;
END
$$;

CREATE FUNCTION @extschema@.rebuild_facts(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	started pg_catalog.timestamptz := pg_catalog.clock_timestamp();
	n pg_catalog.int8;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	-- one refresh or rebuild at a time: concurrent ones would overwrite
	-- newer facts with older ones
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('segments.facts'));
	DELETE FROM @extschema@.customer_changes;
	RAISE NOTICE 'segments: computing facts for every customer from % source(s)',
		(SELECT pg_catalog.count(*) FROM @extschema@.sources);
	TRUNCATE @extschema@.customer_facts;
	EXECUTE pg_catalog.format('INSERT INTO @extschema@.customer_facts (%s) %s',
		@extschema@._facts_columns(), @extschema@._facts_sql(false))
	USING NULL::pg_catalog.text[], as_of;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM @extschema@._facts_refreshed(NULL);
	RAISE NOTICE 'segments: wrote facts for % customers', n;
	RAISE DEBUG 'segments: rebuild took % ms',
		pg_catalog.round((EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) * 1000)::pg_catalog.numeric);
	RETURN n;
END
$$;

COMMENT ON FUNCTION @extschema@.rebuild_facts(pg_catalog.timestamptz) IS
'Recomputes customer_facts from scratch from every source; returns the number of customers';

CREATE FUNCTION @extschema@.refresh_facts(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now(),
	OUT customers_checked pg_catalog.int8, OUT customers_changed pg_catalog.int8,
	OUT customers_removed pg_catalog.int8, OUT full_rebuild pg_catalog.bool, OUT skipped pg_catalog.bool)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	keys pg_catalog.text[];
	order_keys pg_catalog.text[];
	more pg_catalog.text[];
	s record;
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	full_rebuild := false;
	customers_checked := 0;
	customers_changed := 0;
	customers_removed := 0;
	-- a refresh already running does this work: return at once (pg_cron
	-- queues overlapping runs) rather than wait and redo it
	skipped := NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('segments.facts'));
	IF skipped THEN
		RAISE NOTICE 'segments: another refresh is running; skipped';
		RETURN;
	END IF;

	-- a TRUNCATE, detach or lost column asks for a rebuild
	IF EXISTS (SELECT FROM @extschema@.customer_changes c WHERE c.key IS NULL) THEN
		customers_changed := @extschema@.rebuild_facts(as_of);
		customers_checked := customers_changed;
		full_rebuild := true;
		RETURN;
	END IF;

	-- Drain the change marks first, then compute in later statements: every
	-- mark we delete was committed with its row, so those rows are visible.
	WITH drained AS (DELETE FROM @extschema@.customer_changes RETURNING relation, key_kind, key)
	SELECT pg_catalog.array_agg(DISTINCT d.key) FILTER (WHERE d.key_kind = 'customer'),
		   pg_catalog.array_agg(DISTINCT d.key) FILTER (WHERE d.key_kind = 'order')
	  INTO keys, order_keys
	  FROM drained d;

	-- changed order lines: their orders' customers
	IF order_keys IS NOT NULL THEN
		FOR s IN SELECT * FROM @extschema@.sources WHERE kind = 'orders' LOOP
			EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(DISTINCT %s) FROM %s t WHERE t.%I = ANY(%s)',
				@extschema@._column_expr(s.relation, 't', s.columns->>'customer', 'text', s.options),
				s.relation, s.columns->>'order_id',
				@extschema@._keys_as((SELECT a.atttypid::pg_catalog.regtype FROM pg_catalog.pg_attribute a
									   WHERE a.attrelid = s.relation AND a.attname = s.columns->>'order_id'), '$1'))
			INTO more USING order_keys;
			keys := COALESCE(keys, '{}') || COALESCE(more, '{}');
		END LOOP;
	END IF;

	-- time-driven changes, found through the next_change_at index
	SELECT pg_catalog.array_agg(f.customer_id) INTO more
	  FROM @extschema@.customer_facts f WHERE f.next_change_at <= as_of;
	keys := COALESCE(keys, '{}') || COALESCE(more, '{}');

	SELECT pg_catalog.array_agg(DISTINCT k) INTO keys FROM pg_catalog.unnest(keys) k;
	customers_checked := COALESCE(pg_catalog.cardinality(keys), 0);
	IF customers_checked = 0 THEN
		customers_changed := 0;
		RETURN;
	END IF;
	SELECT w.written, w.removed INTO customers_changed, customers_removed
	  FROM @extschema@._write_facts(keys, as_of) w;
	PERFORM @extschema@._facts_refreshed(keys);
END
$$;

COMMENT ON FUNCTION @extschema@.refresh_facts(pg_catalog.timestamptz) IS
'Folds recorded changes and due time windows into customer_facts; cost follows the number of changed customers';

CREATE FUNCTION @extschema@.verify_facts(as_of pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (customer_id pg_catalog.text, problem pg_catalog.text,
			   stored pg_catalog.jsonb, expected pg_catalog.jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._check_time(as_of, 'as_of');
	RETURN QUERY EXECUTE pg_catalog.format(
		'WITH expected AS (SELECT * FROM (%s) x (%s)),
		 s AS (SELECT f.customer_id, pg_catalog.to_jsonb(f) OPERATOR(pg_catalog.-) ''refreshed_at'' AS j
				 FROM @extschema@.customer_facts f),
		 e AS (SELECT x.customer_id, pg_catalog.to_jsonb(x) AS j FROM expected x)
		 SELECT COALESCE(s.customer_id, e.customer_id),
				CASE WHEN s.customer_id IS NULL THEN ''missing'' WHEN e.customer_id IS NULL THEN ''extra'' ELSE ''differs'' END,
				(SELECT pg_catalog.jsonb_object_agg(kv.key, kv.value) FROM pg_catalog.jsonb_each(s.j) kv
				  WHERE e.j IS NULL OR kv.value IS DISTINCT FROM e.j OPERATOR(pg_catalog.->) kv.key),
				(SELECT pg_catalog.jsonb_object_agg(kv.key, kv.value) FROM pg_catalog.jsonb_each(e.j) kv
				  WHERE s.j IS NULL OR kv.value IS DISTINCT FROM s.j OPERATOR(pg_catalog.->) kv.key)
		   FROM s FULL JOIN e ON e.customer_id = s.customer_id
		  WHERE s.j IS DISTINCT FROM e.j
		  ORDER BY 1',
		@extschema@._facts_sql(false), @extschema@._facts_columns())
	USING NULL::pg_catalog.text[], as_of;
END
$$;

COMMENT ON FUNCTION @extschema@.verify_facts(pg_catalog.timestamptz) IS
'Compares customer_facts with a full recomputation as of the given time; returns one row per customer that differs (none when all is well)';

--------------------------------------------------------------------------------
-- Tracking API: the same facts for shops without tables of their own, and
-- the events that live nowhere else (engagement, consent, wallet, referral).
-- Each call validates first and writes one row; capture triggers on these
-- tables record the change like on any attached table.
--------------------------------------------------------------------------------

CREATE FUNCTION @extschema@._require(val anyelement, what pg_catalog.text)
RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF val IS NULL THEN
		RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN val;
END
$$;

CREATE FUNCTION @extschema@._check_channel(channel pg_catalog.text)
RETURNS @extschema@.channel
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF channel IS NULL OR channel NOT IN ('email', 'sms', 'telegram', 'push') THEN
		RAISE EXCEPTION 'unknown channel "%"', channel
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Channels are email, sms, telegram and push.';
	END IF;
	RETURN channel;
END
$$;

CREATE FUNCTION @extschema@._check_time(at pg_catalog.timestamptz, what pg_catalog.text)
RETURNS pg_catalog.timestamptz
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF at IS NULL THEN
		RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT pg_catalog.isfinite(at) THEN
		RAISE EXCEPTION '% must be a finite time, not %', what, at USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN at;
END
$$;

CREATE FUNCTION @extschema@._check_amount(amount pg_catalog.numeric, what pg_catalog.text)
RETURNS pg_catalog.numeric
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF amount IS NULL THEN
		RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF amount = 'NaN'::pg_catalog.numeric THEN
		RAISE EXCEPTION '% must be a number, got NaN', what USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF amount < 0 THEN
		RAISE EXCEPTION '% must not be negative, got %', what, amount
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = CASE WHEN what = 'amount' THEN 'Record refunds with segments.track_refund().' END;
	END IF;
	RETURN amount;
END
$$;

CREATE FUNCTION @extschema@.track_order(customer_id pg_catalog.text, order_id pg_catalog.text,
	placed_at pg_catalog.timestamptz, amount pg_catalog.numeric,
	status pg_catalog.text DEFAULT 'completed', discount_code pg_catalog.text DEFAULT NULL,
	currency pg_catalog.text DEFAULT NULL, cost pg_catalog.numeric DEFAULT NULL,
	sales_channel pg_catalog.text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF status IS NULL OR status NOT IN ('completed', 'refunded', 'cancelled', 'pending') THEN
		RAISE EXCEPTION 'unknown order status "%"', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Statuses are completed, refunded, cancelled and pending.';
	END IF;
	INSERT INTO @extschema@.tracked_orders AS t
		(order_id, customer_id, placed_at, amount, status, discount_code, currency, cost, sales_channel)
	VALUES (@extschema@._require(order_id, 'order_id'), @extschema@._require(customer_id, 'customer_id'),
			@extschema@._check_time(placed_at, 'placed_at'), @extschema@._check_amount(amount, 'amount'),
			status, discount_code, currency,
			CASE WHEN cost IS NOT NULL THEN @extschema@._check_amount(cost, 'cost') END, sales_channel)
	ON CONFLICT ON CONSTRAINT tracked_orders_pkey DO UPDATE
		SET customer_id = excluded.customer_id, placed_at = excluded.placed_at, amount = excluded.amount,
			status = excluded.status, discount_code = excluded.discount_code, currency = excluded.currency,
			cost = excluded.cost, sales_channel = excluded.sales_channel,
			refunded_amount = LEAST(t.refunded_amount, excluded.amount), recorded_at = pg_catalog.now();
END
$$;

COMMENT ON FUNCTION @extschema@.track_order IS
'Records an order (or corrects one: the order id is the key); refunded and cancelled orders never count as purchases';

CREATE FUNCTION @extschema@.track_refund(order_id pg_catalog.text, refunded_total pg_catalog.numeric)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	order_amount pg_catalog.numeric;
BEGIN
	PERFORM @extschema@._check_amount(refunded_total, 'refunded_total');
	SELECT t.amount INTO order_amount FROM @extschema@.tracked_orders t
	 WHERE t.order_id = @extschema@._require(track_refund.order_id, 'order_id') FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'order "%" was never tracked', order_id
			USING ERRCODE = 'no_data_found', HINT = 'Record it with segments.track_order() first.';
	END IF;
	IF refunded_total > order_amount THEN
		RAISE EXCEPTION 'refund of % exceeds the order amount of %', refunded_total, order_amount
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE @extschema@.tracked_orders t
	   SET refunded_amount = refunded_total,
		   status = CASE WHEN refunded_total = order_amount AND order_amount > 0 THEN 'refunded'
						 WHEN t.status = 'refunded' THEN 'completed'
						 ELSE t.status END,
		   recorded_at = pg_catalog.now()
	 WHERE t.order_id = track_refund.order_id;
END
$$;

COMMENT ON FUNCTION @extschema@.track_refund(pg_catalog.text, pg_catalog.numeric) IS
'Records the total refunded so far on a tracked order (idempotent); a full refund makes the order refunded';

CREATE FUNCTION @extschema@.track_order_status(order_id pg_catalog.text, status pg_catalog.text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF status IS NULL OR status NOT IN ('completed', 'refunded', 'cancelled', 'pending') THEN
		RAISE EXCEPTION 'unknown order status "%"', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Statuses are completed, refunded, cancelled and pending.';
	END IF;
	UPDATE @extschema@.tracked_orders t SET status = track_order_status.status, recorded_at = pg_catalog.now()
	 WHERE t.order_id = @extschema@._require(track_order_status.order_id, 'order_id');
	IF NOT FOUND THEN
		RAISE EXCEPTION 'order "%" was never tracked', order_id
			USING ERRCODE = 'no_data_found', HINT = 'Record it with segments.track_order() first.';
	END IF;
END
$$;

COMMENT ON FUNCTION @extschema@.track_order_status(pg_catalog.text, pg_catalog.text) IS
'Changes a tracked order''s status, e.g. to cancelled';

CREATE FUNCTION @extschema@.track_order_line(order_id pg_catalog.text, line_no pg_catalog.int4,
	product_id pg_catalog.text, category pg_catalog.text DEFAULT NULL,
	quantity pg_catalog.numeric DEFAULT 1, amount pg_catalog.numeric DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF quantity IS NULL OR quantity <= 0 THEN
		RAISE EXCEPTION 'quantity must be positive, got %', quantity USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT FROM @extschema@.tracked_orders t WHERE t.order_id = track_order_line.order_id) THEN
		RAISE EXCEPTION 'order "%" was never tracked', order_id
			USING ERRCODE = 'no_data_found', HINT = 'Record it with segments.track_order() first.';
	END IF;
	INSERT INTO @extschema@.tracked_order_lines AS l (order_id, line_no, product_id, category, quantity, amount)
	VALUES (order_id, @extschema@._require(line_no, 'line_no'), @extschema@._require(product_id, 'product_id'),
			category, quantity, CASE WHEN amount IS NOT NULL THEN @extschema@._check_amount(amount, 'amount') END)
	ON CONFLICT ON CONSTRAINT tracked_order_lines_pkey DO UPDATE
		SET product_id = excluded.product_id, category = excluded.category,
			quantity = excluded.quantity, amount = excluded.amount;
END
$$;

COMMENT ON FUNCTION @extschema@.track_order_line IS 'Records one line of a tracked order (product and category bought)';

CREATE FUNCTION @extschema@.track_cart(customer_id pg_catalog.text, cart_id pg_catalog.text,
	value pg_catalog.numeric, stage pg_catalog.text DEFAULT 'cart', link pg_catalog.text DEFAULT NULL,
	at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF stage IS NULL OR stage NOT IN ('cart', 'checkout') THEN
		RAISE EXCEPTION 'unknown cart stage "%"', stage
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Stages are cart and checkout.';
	END IF;
	INSERT INTO @extschema@.tracked_carts AS c (cart_id, customer_id, created_at, updated_at, value, stage, status, link)
	VALUES (@extschema@._require(cart_id, 'cart_id'), @extschema@._require(customer_id, 'customer_id'),
			@extschema@._check_time(at, 'at'), at, @extschema@._check_amount(value, 'value'), stage,
			CASE WHEN value > 0 THEN 'open' ELSE 'emptied' END, link)
	ON CONFLICT ON CONSTRAINT tracked_carts_pkey DO UPDATE
		SET customer_id = excluded.customer_id, updated_at = GREATEST(c.updated_at, excluded.updated_at),
			value = excluded.value, stage = excluded.stage, link = COALESCE(excluded.link, c.link),
			status = CASE WHEN c.status = 'converted' THEN 'converted' ELSE excluded.status END;
END
$$;

COMMENT ON FUNCTION @extschema@.track_cart IS
'Records cart or checkout activity (value 0 empties the cart); the cart id is the key';

CREATE FUNCTION @extschema@.track_cart_closed(cart_id pg_catalog.text, outcome pg_catalog.text,
	order_id pg_catalog.text DEFAULT NULL, at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF outcome IS NULL OR outcome NOT IN ('converted', 'emptied') THEN
		RAISE EXCEPTION 'unknown cart outcome "%"', outcome
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Outcomes are converted and emptied.';
	END IF;
	UPDATE @extschema@.tracked_carts c
	   SET status = outcome, order_id = COALESCE(track_cart_closed.order_id, c.order_id),
		   updated_at = GREATEST(c.updated_at, @extschema@._check_time(at, 'at'))
	 WHERE c.cart_id = @extschema@._require(track_cart_closed.cart_id, 'cart_id');
	IF NOT FOUND THEN
		RAISE EXCEPTION 'cart "%" was never tracked', cart_id
			USING ERRCODE = 'no_data_found', HINT = 'Record it with segments.track_cart() first.';
	END IF;
END
$$;

COMMENT ON FUNCTION @extschema@.track_cart_closed IS 'Marks a tracked cart converted (with its order) or emptied';

CREATE FUNCTION @extschema@.track_customer(customer_id pg_catalog.text,
	country pg_catalog.text DEFAULT NULL, region pg_catalog.text DEFAULT NULL,
	language pg_catalog.text DEFAULT NULL, currency pg_catalog.text DEFAULT NULL,
	time_zone pg_catalog.text DEFAULT NULL, account_type pg_catalog.text DEFAULT NULL,
	tags pg_catalog.text[] DEFAULT NULL, referred_by pg_catalog.text DEFAULT NULL,
	created_at pg_catalog.timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF time_zone IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
		RAISE EXCEPTION 'unknown time zone "%"', time_zone
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA zone name such as Europe/Berlin.';
	END IF;
	IF account_type IS NOT NULL AND account_type NOT IN ('retail', 'wholesale') THEN
		RAISE EXCEPTION 'unknown account type "%"', account_type
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Account types are retail and wholesale.';
	END IF;
	-- a NULL argument leaves what was recorded before
	INSERT INTO @extschema@.tracked_customers AS c (customer_id, country, region, language, currency,
		time_zone, account_type, tags, referred_by, created_at)
	VALUES (@extschema@._require(customer_id, 'customer_id'), country, region, language, currency,
			time_zone, account_type, tags, referred_by, created_at)
	ON CONFLICT ON CONSTRAINT tracked_customers_pkey DO UPDATE
		SET country = COALESCE(excluded.country, c.country), region = COALESCE(excluded.region, c.region),
			language = COALESCE(excluded.language, c.language), currency = COALESCE(excluded.currency, c.currency),
			time_zone = COALESCE(excluded.time_zone, c.time_zone),
			account_type = COALESCE(excluded.account_type, c.account_type), tags = COALESCE(excluded.tags, c.tags),
			referred_by = COALESCE(excluded.referred_by, c.referred_by),
			created_at = COALESCE(excluded.created_at, c.created_at), updated_at = pg_catalog.now();
END
$$;

COMMENT ON FUNCTION @extschema@.track_customer IS 'Records or updates a customer profile; NULL arguments keep the recorded values';

CREATE FUNCTION @extschema@.track_engagement(customer_id pg_catalog.text, channel pg_catalog.text,
	event pg_catalog.text, at pg_catalog.timestamptz DEFAULT pg_catalog.now(), message_id pg_catalog.text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF event IS NULL OR event NOT IN ('sent', 'delivered', 'opened', 'clicked', 'bounced', 'complained') THEN
		RAISE EXCEPTION 'unknown engagement event "%"', event
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Events are sent, delivered, opened, clicked, bounced and complained.';
	END IF;
	INSERT INTO @extschema@.engagement_events (customer_id, channel, event, message_id, occurred_at)
	VALUES (@extschema@._require(customer_id, 'customer_id'), @extschema@._check_channel(channel), event,
			message_id, @extschema@._check_time(at, 'at'));
END
$$;

COMMENT ON FUNCTION @extschema@.track_engagement IS 'Records a message event: sent, delivered, opened, clicked, bounced or complained';

CREATE FUNCTION @extschema@.track_consent(customer_id pg_catalog.text, channel pg_catalog.text,
	granted pg_catalog.bool, at pg_catalog.timestamptz DEFAULT pg_catalog.now(), source pg_catalog.text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO @extschema@.consent_events (customer_id, channel, granted, occurred_at, source)
	VALUES (@extschema@._require(customer_id, 'customer_id'), @extschema@._check_channel(channel),
			@extschema@._require(granted, 'granted'), @extschema@._check_time(at, 'at'), source);
END;

COMMENT ON FUNCTION @extschema@.track_consent IS
'Records a consent grant (true) or withdrawal (false) for one channel; history is kept, the latest event wins';

CREATE FUNCTION @extschema@.track_wallet(customer_id pg_catalog.text, amount pg_catalog.numeric,
	reason pg_catalog.text DEFAULT NULL, at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF amount IS NULL OR amount = 0 OR amount = 'NaN'::pg_catalog.numeric THEN
		RAISE EXCEPTION 'wallet amount must be a non-zero number, got %', amount
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Credits are positive, debits negative.';
	END IF;
	INSERT INTO @extschema@.wallet_events (customer_id, amount, reason, occurred_at)
	VALUES (@extschema@._require(customer_id, 'customer_id'), amount, reason, @extschema@._check_time(at, 'at'));
END
$$;

COMMENT ON FUNCTION @extschema@.track_wallet IS 'Records a wallet credit (positive amount) or debit (negative)';

CREATE FUNCTION @extschema@.track_referral(referrer_id pg_catalog.text, referred_id pg_catalog.text DEFAULT NULL,
	credit pg_catalog.numeric DEFAULT 0, at pg_catalog.timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF referred_id = referrer_id THEN
		RAISE EXCEPTION 'a customer cannot refer themselves' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO @extschema@.referral_events (referrer_id, referred_id, credit, occurred_at)
	VALUES (@extschema@._require(referrer_id, 'referrer_id'), referred_id,
			@extschema@._check_amount(credit, 'credit'), @extschema@._check_time(at, 'at'));
END
$$;

COMMENT ON FUNCTION @extschema@.track_referral IS 'Records a referral shared (no referred customer yet) or made, with the credit earned';

-- The tracking tables are sources like the shop's own, and are captured the same way.
INSERT INTO @extschema@.sources (relation, kind, columns, options, key_type, builtin) VALUES
	('@extschema@.tracked_orders', 'orders',
	 '{"customer": "customer_id", "order_id": "order_id", "placed_at": "placed_at", "amount": "amount",
	   "status": "status", "refunded_amount": "refunded_amount", "discount": "discount_code",
	   "currency": "currency", "cost": "cost", "sales_channel": "sales_channel"}',
	 '{"completed": ["completed"], "refunded": ["refunded"], "cancelled": ["cancelled"]}', 'pg_catalog.text', true),
	('@extschema@.tracked_order_lines', 'order_lines',
	 '{"order_id": "order_id", "product": "product_id", "quantity": "quantity", "amount": "amount", "category": "category"}',
	 '{"orders": "@extschema@.tracked_orders"}', 'pg_catalog.text', true),
	('@extschema@.tracked_carts', 'carts',
	 '{"cart_id": "cart_id", "customer": "customer_id", "created_at": "created_at", "updated_at": "updated_at",
	   "value": "value", "stage": "stage", "converted_order": "order_id", "status": "status", "link": "link"}',
	 '{"checkout_stages": ["checkout"], "converted": ["converted"], "emptied": ["emptied"]}', 'pg_catalog.text', true),
	('@extschema@.tracked_customers', 'customers',
	 '{"customer": "customer_id", "country": "country", "region": "region", "language": "language",
	   "currency": "currency", "time_zone": "time_zone", "account_type": "account_type", "tags": "tags",
	   "referred_by": "referred_by", "created_at": "created_at"}', '{}', 'pg_catalog.text', true);

SELECT @extschema@._install_capture('@extschema@.tracked_orders', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.tracked_order_lines', 'order', 'order_id', '');
SELECT @extschema@._install_capture('@extschema@.tracked_carts', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.tracked_customers', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.engagement_events', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.consent_events', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.wallet_events', 'customer', 'customer_id', '');
SELECT @extschema@._install_capture('@extschema@.referral_events', 'customer', 'referrer_id', '');
SELECT @extschema@._install_capture('@extschema@.referral_events', 'customer', 'referred_id', '_referred');

-- pg_dump must keep the identity sequences of the event tables too, or new
-- events after a restore would collide with restored ones.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.engagement_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.consent_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.wallet_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.referral_events_event_id_seq', '');

-- A dropped attached table is forgotten, and its customers rebuilt. SECURITY
-- DEFINER because it fires for every role's DROP: a role that may not write
-- our tables must still be able to drop its own.
CREATE FUNCTION @extschema@._forget_dropped_sources()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	orphan pg_catalog.regclass;
	trg pg_catalog.name;
BEGIN
	DELETE FROM @extschema@.sources s
	 USING pg_catalog.pg_event_trigger_dropped_objects() d
	 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
	   AND d.objid = s.relation::pg_catalog.oid;
	IF FOUND THEN
		-- order lines whose orders table went away go with it, triggers included
		FOR orphan IN DELETE FROM @extschema@.sources s
					   WHERE s.kind = 'order_lines' AND pg_catalog.to_regclass(s.options->>'orders') IS NULL
					  RETURNING s.relation LOOP
			FOR trg IN SELECT t.tgname FROM pg_catalog.pg_trigger t
						WHERE t.tgrelid = orphan
						  AND t.tgfoid = '@extschema@.capture_changes()'::pg_catalog.regprocedure LOOP
				EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg, orphan);
			END LOOP;
		END LOOP;
		INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'detach');
	END IF;
END
$$;

REVOKE ALL ON FUNCTION @extschema@._forget_dropped_sources() FROM PUBLIC;

CREATE EVENT TRIGGER segments_forget_dropped_sources ON sql_drop
	EXECUTE FUNCTION @extschema@._forget_dropped_sources();

-- The first refresh after CREATE EXTENSION (or a restore, which runs it)
-- builds all facts.
INSERT INTO @extschema@.customer_changes (relation, key_kind) VALUES (NULL, 'install');

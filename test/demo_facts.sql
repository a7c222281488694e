-- segments demo, part 1: shop tables -> customer facts.
-- Runs in database `shop` after test/fixtures/sample_shop.sql and CREATE EXTENSION.
\set QUIET on
\pset footer off
SET client_min_messages = warning;
\set as_of '2026-11-01 12:00:00+00'

\echo
\echo '=== 1. Attach the shop''s own tables (nothing in them is altered or copied) ==='
SELECT segments.attach_orders('shop.orders', customer => 'customer_id', order_id => 'id',
         placed_at => 'placed_at', amount => 'total', status => 'status',
         refunded_amount => 'refunded_amount', discount => 'discount_code',
         currency => 'currency', sales_channel => 'sales_channel', backfill => false) AS orders_attached;
SELECT segments.attach_order_lines('shop.order_lines', orders => 'shop.orders', order_id => 'order_id',
         product => 'product_id', quantity => 'quantity', amount => 'amount',
         products => 'shop.products', product_key => 'id', product_category => 'category',
         backfill => false) AS lines_attached;
SELECT segments.attach_carts('shop.carts', cart_id => 'id', customer => 'customer_id',
         created_at => 'created_at', updated_at => 'updated_at', value => 'value', stage => 'stage',
         converted_order => 'order_id', status => 'status', backfill => false) AS carts_attached;
SELECT segments.attach_customers('shop.customers', customer => 'id', country => 'country',
         language => 'language', currency => 'currency', time_zone => 'time_zone',
         account_type => 'account_type', tags => 'tags', wallet_balance => 'wallet_balance',
         referred_by => 'referred_by', created_at => 'created_at', backfill => false) AS customers_attached;
SELECT relation, kind, key_type FROM segments.sources WHERE NOT builtin ORDER BY kind;

\echo
\echo '=== 2. Facts for every customer (first refresh = full build) ==='
SELECT customers_checked, customers_changed, full_rebuild FROM segments.refresh_facts(:'as_of');
SELECT count(*) AS customers, count(*) FILTER (WHERE orders = 0) AS browsers,
       count(*) FILTER (WHERE orders = 1) AS one_order, count(*) FILTER (WHERE orders >= 2) AS repeat,
       count(*) FILTER (WHERE cart_id IS NOT NULL) AS open_carts
  FROM segments.customer_facts;
\echo '(amounts in customer_facts are in each order''s own currency: this shop sells in seven)'

\echo
\echo '=== 3. A few customers ==='
SELECT customer_id AS customer, orders, refunded_orders AS refunded, net_revenue AS net, aov,
       discounted_orders AS coupons, round(median_gap_days::numeric, 1) AS cycle_days,
       last_order_at::date AS last_order, categories, country, account_type AS account
  FROM segments.customer_facts
 WHERE customer_id IN (SELECT customer_id FROM segments.customer_facts WHERE orders > 0
                        ORDER BY net_revenue DESC LIMIT 3)
    OR customer_id IN (SELECT customer_id FROM segments.customer_facts WHERE cart_id IS NOT NULL
                        ORDER BY cart_updated_at DESC LIMIT 2)
 ORDER BY net_revenue DESC;

\echo
\echo '=== 4. The shop keeps writing: one new order and one refund, then a refresh ==='
INSERT INTO shop.orders (id, customer_id, placed_at, status, total, currency)
SELECT max(id) + 1, 1, :'as_of'::timestamptz - interval '5 minutes', 'completed', 42.00, 'EUR' FROM shop.orders;
UPDATE shop.orders SET status = 'refunded'
 WHERE id = (SELECT min(id) FROM shop.orders WHERE customer_id = 2 AND status = 'completed');
SELECT key_kind, key AS customer FROM segments.customer_changes ORDER BY key;
SELECT customers_checked, customers_changed, full_rebuild FROM segments.refresh_facts(:'as_of');
SELECT customer_id AS customer, orders, refunded_orders AS refunded, net_revenue AS net, last_order_at
  FROM segments.customer_facts WHERE customer_id IN ('1', '2') ORDER BY 1;
SELECT count(*) AS differences_from_full_recompute FROM segments.verify_facts(:'as_of');

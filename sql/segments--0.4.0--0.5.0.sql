/* segments 0.4.0 -> 0.5.0: reports, attribution, roles, erasure */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.5.0'" to load this file. \quit

/*
 * Data flow: shop tables -> customer facts -> scores -> segment membership
 *            -> campaign steps and stop rules -> outbox -> sender
 *            -> ENGAGEMENT AND ORDERS BACK -> REPORTS
 *
 * This release has these parts, kept in this order:
 *   1. customer facts and the tick: cheaper writes per changed customer
 *   2. attribution: orders of enrolled buyers, credited to the last message
 *   3. report views for BI tools
 *   4. erasure on request
 *   5. roles: reader, app, admin
 *   6. dashboard: one HTML page with SVG charts, made from the report views
 */

--------------------------------------------------------------------------------
-- 1. Customer facts and the tick
--
-- (changes to the facts layer and tick speed go here)
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 2. Attribution
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 3. Report views
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 4. Erasure
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 5. Roles
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 6. Dashboard
--
-- (dashboard_html() and its helpers go here)
--------------------------------------------------------------------------------


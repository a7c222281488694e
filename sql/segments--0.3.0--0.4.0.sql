/* segments 0.3.0 -> 0.4.0: faster facts and ticks; campaigns and the outbox */

\echo Use "ALTER EXTENSION segments UPDATE TO '0.4.0'" to load this file. \quit

/*
 * Data flow: shop tables -> customer facts -> scores -> segment membership
 *            -> CAMPAIGN STEPS AND STOP RULES -> OUTBOX -> sender
 *            -> engagement and orders back
 *
 * This release has three parts, kept in this order:
 *   1. customer facts: cheaper change capture and rebuild
 *   2. segment evaluation: cheaper ticks
 *   3. campaigns: catalog, enrollment, stop rules, outbox, tick, schedule
 */

--------------------------------------------------------------------------------
-- 1. Customer facts
--
-- (changes to the facts layer go here)
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 2. Segment evaluation
--
-- (changes to segment evaluation go here)
--------------------------------------------------------------------------------



--------------------------------------------------------------------------------
-- 3. Campaigns
--
-- (campaigns go here)
--------------------------------------------------------------------------------


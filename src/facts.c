/*-------------------------------------------------------------------------
 *
 * facts.c
 *	  Helpers of the customer facts layer.
 *
 * next_change_at is what lets a scheduled tick find time-driven changes
 * ("lapsed 60 days after the last order", "cart idle for an hour") through
 * an index instead of scanning every customer: it is the earliest future
 * instant at which a watched window around a fact's timestamp closes.
 * _load_facts() is the write half of a full rebuild.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "storage/lmgr.h"
#include "tcop/dest.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_next_time_after);
PG_FUNCTION_INFO_V1(segments_load_facts);

/*
 * next_time_after(as_of, base, offsets_days int4[]): the earliest
 * base + d days (24-hour days, as recency_days counts them) that is strictly
 * after as_of, over the offsets d; NULL when none is.
 */
Datum
segments_next_time_after(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz base = PG_GETARG_TIMESTAMPTZ(1);
	ArrayType  *offsets = PG_GETARG_ARRAYTYPE_P(2);
	int32	   *days;
	int			n,
				i;
	bool		found = false;
	TimestampTz best = 0;

	if (TIMESTAMP_NOT_FINITE(as_of) || TIMESTAMP_NOT_FINITE(base))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("next_time_after() needs finite timestamps")));
	if (ARR_NDIM(offsets) > 1 || ARR_HASNULL(offsets) || ARR_ELEMTYPE(offsets) != INT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window offsets must be a one-dimensional int4 array without NULLs")));
	n = ArrayGetNItems(ARR_NDIM(offsets), ARR_DIMS(offsets));
	days = (int32 *) ARR_DATA_PTR(offsets);

	for (i = 0; i < n; i++)
	{
		TimestampTz candidate;

		if (days[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("window offsets must not be negative"),
					 errdetail("Offset %d is %d days.", i + 1, days[i])));
		if (pg_add_s64_overflow(base, (int64) days[i] * USECS_PER_DAY, &candidate) ||
			!IS_VALID_TIMESTAMP(candidate))
			continue;			/* beyond the timestamp range: never reached */
		if (candidate > as_of && (!found || candidate < best))
		{
			best = candidate;
			found = true;
		}
	}
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(best);
}

/*
 * _load_facts(query text, as_of timestamptz): the write half of
 * rebuild_facts().
 *
 * Inserting a million computed rows into customer_facts one by one while
 * maintaining its six indexes cost about as much again as the heap inserts
 * (11 s against 2-4 s for the same rows with one index).  rebuild_facts()
 * truncates the table first, so nobody else can see it until commit: the
 * rows go into the heap only, through a DestReceiver the query feeds
 * directly (no intermediate copy), and then every index is built once,
 * sorted, by reindex_relation() with its uniqueness checks on.
 *
 * The query is run as the caller, with $1 = NULL::text[] and $2 = as_of,
 * and must return every non-dropped column of customer_facts, in order and
 * with their exact types.  The caller must hold ACCESS EXCLUSIVE on the
 * table (TRUNCATE takes it) and have INSERT and TRUNCATE on it.  A table
 * with triggers, row security, CHECK constraints or stored generated columns
 * is left alone: the result is NULL and the caller INSERTs instead.
 */
typedef struct FactsLoadReceiver
{
	DestReceiver pub;
	Relation	rel;
	TupleTableSlot *slot;		/* in the table's shape */
	BulkInsertState bistate;
	CommandId	cid;
	MemoryContext rowcxt;
	int64		rows;
} FactsLoadReceiver;

static void
facts_load_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	FactsLoadReceiver *r = (FactsLoadReceiver *) self;
	TupleDesc	reldesc = RelationGetDescr(r->rel);
	int			i,
				j = 0;

	for (i = 0; i < reldesc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(reldesc, i);

		if (attr->attisdropped)
			continue;
		if (j >= typeinfo->natts || TupleDescAttr(typeinfo, j)->atttypid != attr->atttypid)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("facts query column %d does not match column \"%s\" of %s",
							j + 1, NameStr(attr->attname), RelationGetRelationName(r->rel))));
		j++;
	}
	if (j != typeinfo->natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("facts query returns %d columns, %s has %d",
						typeinfo->natts, RelationGetRelationName(r->rel), j)));
}

static bool
facts_load_receive(TupleTableSlot *slot, DestReceiver *self)
{
	FactsLoadReceiver *r = (FactsLoadReceiver *) self;
	TupleDesc	reldesc = RelationGetDescr(r->rel);
	TupleTableSlot *out = r->slot;
	MemoryContext oldcxt;
	int			i,
				j = 0;

	MemoryContextReset(r->rowcxt);
	oldcxt = MemoryContextSwitchTo(r->rowcxt);
	slot_getallattrs(slot);
	ExecClearTuple(out);
	for (i = 0; i < reldesc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(reldesc, i);

		if (attr->attisdropped)
		{
			out->tts_values[i] = (Datum) 0;
			out->tts_isnull[i] = true;
			continue;
		}
		out->tts_values[i] = slot->tts_values[j];
		out->tts_isnull[i] = slot->tts_isnull[j];
		if (out->tts_isnull[i] && attr->attnotnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(attr->attname), RelationGetRelationName(r->rel))));
		j++;
	}
	ExecStoreVirtualTuple(out);
	table_tuple_insert(r->rel, out, r->cid, TABLE_INSERT_SKIP_FSM, r->bistate);
	MemoryContextSwitchTo(oldcxt);
	r->rows++;
	return true;
}

static void
facts_load_shutdown(DestReceiver *self)
{
}

static void
facts_load_destroy(DestReceiver *self)
{
}

Datum
segments_load_facts(PG_FUNCTION_ARGS)
{
	text	   *query = PG_GETARG_TEXT_PP(0);
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(1);
	Oid			relid;
	Relation	rel;
	FactsLoadReceiver receiver;
	SPIExecuteOptions options;
	ParamListInfo params;
	ReindexParams reindex = {0};
	int			ret;

	relid = get_relname_relid("customer_facts", get_func_namespace(fcinfo->flinfo->fn_oid));
	if (!OidIsValid(relid))
		elog(ERROR, "customer_facts is missing");
	rel = table_open(relid, NoLock);
	if (!CheckRelationLockedByMe(rel, AccessExclusiveLock, false))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("_load_facts() needs customer_facts locked in ACCESS EXCLUSIVE mode"),
				 errhint("Call segments.rebuild_facts(), which truncates the table first.")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
		pg_class_aclcheck(relid, GetUserId(), ACL_TRUNCATE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(rel));
	/* what INSERT would do besides the heap and the indexes: not here */
	if (rel->trigdesc != NULL || rel->rd_rel->relrowsecurity ||
		(rel->rd_att->constr != NULL &&
		 (rel->rd_att->constr->num_check > 0 || rel->rd_att->constr->has_generated_stored)))
	{
		table_close(rel, NoLock);
		PG_RETURN_NULL();
	}

	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = facts_load_receive;
	receiver.pub.rStartup = facts_load_startup;
	receiver.pub.rShutdown = facts_load_shutdown;
	receiver.pub.rDestroy = facts_load_destroy;
	receiver.pub.mydest = DestNone;
	receiver.rel = rel;
	receiver.slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
	receiver.bistate = GetBulkInsertState();
	receiver.cid = GetCurrentCommandId(true);
	receiver.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "segments facts load row",
											ALLOCSET_DEFAULT_SIZES);

	params = makeParamList(2);
	params->numParams = 2;
	params->params[0].value = (Datum) 0;
	params->params[0].isnull = true;
	params->params[0].pflags = PARAM_FLAG_CONST;
	params->params[0].ptype = TEXTARRAYOID;
	params->params[1].value = TimestampTzGetDatum(as_of);
	params->params[1].isnull = false;
	params->params[1].pflags = PARAM_FLAG_CONST;
	params->params[1].ptype = TIMESTAMPTZOID;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = false;
	options.dest = (DestReceiver *) &receiver;

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));
	/* SPI reports a SELECT into a DestNone receiver as SPI_OK_UTILITY */
	ret = SPI_execute_extended(text_to_cstring(query), &options);
	if (ret < 0)
		elog(ERROR, "facts query failed: %s", SPI_result_code_string(ret));
	SPI_finish();

	FreeBulkInsertState(receiver.bistate);
	table_finish_bulk_insert(rel, TABLE_INSERT_SKIP_FSM);
	ExecDropSingleTupleTableSlot(receiver.slot);
	MemoryContextDelete(receiver.rowcxt);
	table_close(rel, NoLock);

	/* every index, built from the heap in one sorted pass; keys checked */
	reindex_relation(relid, REINDEX_REL_CHECK_CONSTRAINTS, &reindex);

	PG_RETURN_INT64(receiver.rows);
}

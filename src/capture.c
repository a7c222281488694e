/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Change capture on the shop's own tables.
 *
 * An AFTER ... FOR EACH STATEMENT trigger with transition tables records
 * which customers (or, for order lines, which orders) a statement touched,
 * into segments.customer_changes.  The refresh step folds those keys into
 * segments.customer_facts, so its cost follows the changes, not the shop.
 *
 * The trigger sits on the shop's hot write path, so it must be cheap and must
 * never make the shop's own statement fail: keys are deduplicated in memory
 * and written with one cached INSERT per statement; a mapped column that has
 * since been dropped does not raise an error but records a "rebuild needed"
 * marker (a change row without a key) that the refresh step acts on.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(segments_capture_changes);

/* One prepared INSERT for the whole backend; SPI_keepplan keeps it. */
static SPIPlanPtr capture_insert_plan = NULL;

#define CAPTURE_INSERT_SQL \
	"INSERT INTO segments.customer_changes (relation, key_kind, key) " \
	"SELECT $1, $2, k FROM pg_catalog.unnest($3::pg_catalog.text[]) AS k"

typedef struct CaptureKey
{
	char		key[NAMEDATALEN * 2];	/* hash key: the text form, truncated */
} CaptureKey;

/*
 * Collect the distinct text forms of one column of a transition table.
 * Keys longer than the hash key are still stored whole: the hash only
 * deduplicates, a rare duplicate costs one extra change row.
 */
static void
collect_keys(Tuplestorestate *store, TupleDesc tupdesc, AttrNumber attnum,
			 HTAB *seen, List **keys)
{
	TupleTableSlot *slot;
	Oid			typoutput;
	bool		typisvarlena;
	Form_pg_attribute attr = TupleDescAttr(tupdesc, attnum - 1);

	getTypeOutputInfo(attr->atttypid, &typoutput, &typisvarlena);
	slot = MakeSingleTupleTableSlot(tupdesc, &TTSOpsMinimalTuple);
	tuplestore_rescan(store);
	while (tuplestore_gettupleslot(store, true, false, slot))
	{
		bool		isnull;
		Datum		value = slot_getattr(slot, attnum, &isnull);
		char	   *text;
		CaptureKey	hkey;
		bool		found;

		/* a row without a customer (a guest order) belongs to nobody */
		if (isnull)
			continue;
		text = OidOutputFunctionCall(typoutput, value);
		memset(&hkey, 0, sizeof(hkey));
		strlcpy(hkey.key, text, sizeof(hkey.key));
		hash_search(seen, &hkey, HASH_ENTER, &found);
		if (!found || strlen(text) >= sizeof(hkey.key))
			*keys = lappend(*keys, text);
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * segments.capture_changes(key_kind, column_name)
 *
 * key_kind is 'customer' or 'order'.  The column is found by name on every
 * call: attribute numbers change when pg_dump restores a table that once had
 * a dropped column, and reading the wrong column would lose changes silently.
 * A renamed or dropped column records a rebuild marker instead.
 */
Datum
segments_capture_changes(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	tupdesc;
	const char *key_kind;
	AttrNumber	attnum;
	bool		column_ok;
	List	   *keys = NIL;
	Datum		args[3];
	int			ret;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segments.capture_changes() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segments.capture_changes() must be an AFTER trigger")));

	trigger = trigdata->tg_trigger;
	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	if (trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segments.capture_changes() expects 2 trigger arguments, got %d",
						trigger->tgnargs),
				 errhint("Create capture triggers with segments.attach_orders() and its siblings.")));
	key_kind = trigger->tgargs[0];
	attnum = attnameAttNum(rel, trigger->tgargs[1], false);
	column_ok = (attnum > 0);

	if (column_ok && !TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
	{
		HASHCTL		ctl;
		HTAB	   *seen;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(CaptureKey);
		ctl.entrysize = sizeof(CaptureKey);
		ctl.hcxt = CurrentMemoryContext;
		seen = hash_create("segments captured keys", 256, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		if (trigdata->tg_oldtable)
			collect_keys(trigdata->tg_oldtable, tupdesc, attnum, seen, &keys);
		if (trigdata->tg_newtable)
			collect_keys(trigdata->tg_newtable, tupdesc, attnum, seen, &keys);
		hash_destroy(seen);
		if (keys == NIL)
			return PointerGetDatum(NULL);
	}

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));

	if (capture_insert_plan == NULL)
	{
		Oid			argtypes[3] = {REGCLASSOID, TEXTOID, TEXTARRAYOID};
		SPIPlanPtr	plan = SPI_prepare(CAPTURE_INSERT_SQL, 3, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		capture_insert_plan = plan;
	}

	args[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	if (keys != NIL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * list_length(keys));
		ListCell   *lc;
		int			i = 0;

		foreach(lc, keys)
			elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
		args[1] = CStringGetTextDatum(key_kind);
		args[2] = PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else
	{
		/*
		 * TRUNCATE, or the mapped column is gone: one keyless row tells the
		 * refresh step to rebuild from scratch.  Never fail the shop's write.
		 */
		Datum		none[1] = {(Datum) 0};
		bool		nulls[1] = {true};
		int			dims[1] = {1};
		int			lbs[1] = {1};

		args[1] = CStringGetTextDatum(TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event)
									  ? "truncate" : "column_missing");
		args[2] = PointerGetDatum(construct_md_array(none, nulls, 1, dims, lbs,
													 TEXTOID, -1, false, TYPALIGN_INT));
	}

	ret = SPI_execute_plan(capture_insert_plan, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "recording captured changes failed: %s", SPI_result_code_string(ret));
	SPI_finish();

	return PointerGetDatum(NULL);
}

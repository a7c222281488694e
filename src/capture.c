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
 * never make the shop's own statement fail for reasons of ours: keys are
 * deduplicated in memory (without a hash table for the usual one-key
 * statement) and, while customer_changes has the shape this file knows (no
 * indexes, triggers, row security or constraints beyond our own), the rows
 * are written straight into the heap: an SPI INSERT cost five times the rest
 * of the trigger.  Any other shape takes the general path, one cached SPI
 * INSERT per statement, so indexes, triggers and constraints someone adds
 * keep working.  A mapped column that has since been dropped does not raise
 * an error but records a "rebuild needed" marker (a change row without a
 * key) that the refresh step acts on.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_am.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(segments_capture_changes);

/* One prepared INSERT for the whole backend; SPI_keepplan keeps it. */
static SPIPlanPtr capture_insert_plan = NULL;

#define CAPTURE_INSERT_SQL \
	"INSERT INTO segments.customer_changes (relation, key_kind, key) " \
	"SELECT $1, $2, k FROM pg_catalog.unnest($3::pg_catalog.text[]) AS k"

#define CHANGES_TABLE "customer_changes"
#define CHANGES_KEY_KIND_CHECK "customer_changes_key_kind_check"

/*
 * customer_changes, found in the extension's own schema (never through the
 * caller's search_path) and remembered until a relcache invalidation of it
 * (DROP EXTENSION, ALTER TABLE, any DDL on it) or of everything.
 */
static Oid	changes_relid = InvalidOid;
static Oid	changes_nspid = InvalidOid;
static bool changes_callback_registered = false;

typedef struct CaptureKey
{
	char		key[NAMEDATALEN * 2];	/* hash key: the text form, truncated */
} CaptureKey;

/* The distinct keys of one statement, deduplicated lazily. */
typedef struct KeySet
{
	List	   *keys;			/* text forms, in order of appearance */
	HTAB	   *seen;			/* created at the second distinct key */
} KeySet;

static void
changes_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == changes_relid)
		changes_relid = InvalidOid;
}

/* The namespace of extension "segments", read from pg_extension. */
static Oid
segments_extension_namespace(void)
{
	Oid			extoid = get_extension_oid("segments", false);
	Oid			nspid = InvalidOid;
	Relation	extrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;

	extrel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(extrel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nspid = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(extrel, AccessShareLock);
	if (!OidIsValid(nspid))
		elog(ERROR, "extension \"segments\" has no schema");
	return nspid;
}

/*
 * Opens customer_changes with RowExclusiveLock.  The cached OID is checked
 * after the lock is taken (taking it processes invalidations): a table that
 * was dropped, or an OID that now names something else, means a fresh
 * lookup.
 */
static Relation
open_changes_table(void)
{
	int			attempt;

	if (!changes_callback_registered)
	{
		CacheRegisterRelcacheCallback(changes_relcache_callback, (Datum) 0);
		changes_callback_registered = true;
	}
	for (attempt = 0; attempt < 2; attempt++)
	{
		Relation	rel;

		if (!OidIsValid(changes_relid))
		{
			Oid			nspid = segments_extension_namespace();
			Oid			relid = get_relname_relid(CHANGES_TABLE, nspid);

			if (!OidIsValid(relid))
				elog(ERROR, "table %s.%s is missing", get_namespace_name(nspid), CHANGES_TABLE);
			changes_nspid = nspid;
			changes_relid = relid;
		}
		rel = try_table_open(changes_relid, RowExclusiveLock);
		if (rel != NULL)
		{
			if (RelationGetNamespace(rel) == changes_nspid &&
				strcmp(RelationGetRelationName(rel), CHANGES_TABLE) == 0)
				return rel;
			table_close(rel, RowExclusiveLock);
		}
		changes_relid = InvalidOid;
	}
	elog(ERROR, "could not open %s", CHANGES_TABLE);
	return NULL;				/* keep compiler quiet */
}

/*
 * The same privilege the general path's INSERT needs: INSERT on the table,
 * or on each column it writes.  Checked for the writing user, as the
 * executor would.
 */
static void
check_insert_privilege(Relation rel, const AttrNumber *attnums, int natts)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			userid = GetUserId();
	int			i;

	if (pg_class_aclcheck(relid, userid, ACL_INSERT) == ACLCHECK_OK)
		return;
	for (i = 0; i < natts; i++)
		if (pg_attribute_aclcheck(relid, attnums[i], userid, ACL_INSERT) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, get_relkind_objtype(rel->rd_rel->relkind),
						   RelationGetRelationName(rel));
}

/*
 * Can the rows go straight into the heap?  Only when writing them directly
 * does what INSERT would do: a plain heap table with no index, trigger, row
 * security, stored generated column or CHECK constraint other than our
 * key_kind one (whose rule the caller checks), and exactly our columns.
 * Fills attnums with relation, key_kind, key, changed_at.
 */
static bool
changes_table_is_plain(Relation rel, AttrNumber *attnums)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TupleConstr *constr = tupdesc->constr;
	static const char *const names[4] = {"relation", "key_kind", "key", "changed_at"};
	static const Oid types[4] = {REGCLASSOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	int			found = 0;
	int			i,
				j;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		rel->rd_rel->relhasindex ||
		rel->rd_rel->relrowsecurity ||
		rel->trigdesc != NULL)
		return false;
	if (constr != NULL)
	{
		if (constr->has_generated_stored || constr->num_check > 1)
			return false;
		if (constr->num_check == 1 &&
			strcmp(constr->check[0].ccname, CHANGES_KEY_KIND_CHECK) != 0)
			return false;
	}
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(tupdesc, i);

		if (attr->attisdropped)
			continue;
		for (j = 0; j < 4; j++)
			if (strcmp(NameStr(attr->attname), names[j]) == 0)
				break;
		if (j == 4 || attr->atttypid != types[j])
			return false;
		attnums[j] = attr->attnum;
		found++;
	}
	return found == 4;
}

/* Adds one key's text form to the set unless it is there already. */
static void
keyset_add(KeySet *set, char *text)
{
	CaptureKey	hkey;
	bool		found;

	if (set->seen == NULL)
	{
		HASHCTL		ctl;

		if (set->keys == NIL)
		{
			set->keys = list_make1(text);
			return;
		}
		if (strcmp((char *) linitial(set->keys), text) == 0)
			return;
		/* a second distinct key: from now on a hash table deduplicates */
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(CaptureKey);
		ctl.entrysize = sizeof(CaptureKey);
		ctl.hcxt = CurrentMemoryContext;
		set->seen = hash_create("segments captured keys", 256, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		memset(&hkey, 0, sizeof(hkey));
		strlcpy(hkey.key, (char *) linitial(set->keys), sizeof(hkey.key));
		hash_search(set->seen, &hkey, HASH_ENTER, NULL);
	}
	memset(&hkey, 0, sizeof(hkey));
	strlcpy(hkey.key, text, sizeof(hkey.key));
	hash_search(set->seen, &hkey, HASH_ENTER, &found);
	if (!found || strlen(text) >= sizeof(hkey.key))
		set->keys = lappend(set->keys, text);
}

/*
 * Collect the distinct text forms of one column of a transition table.
 * Keys longer than the hash key are still stored whole: the hash only
 * deduplicates, a rare duplicate costs one extra change row.
 */
static void
collect_keys(Tuplestorestate *store, TupleDesc tupdesc, AttrNumber attnum,
			 KeySet *set)
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

		/* a row without a customer (a guest order) belongs to nobody */
		if (isnull)
			continue;
		keyset_add(set, OidOutputFunctionCall(typoutput, value));
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * Writes the change rows straight into the heap, as the current command.
 * keys NIL writes one row with a NULL key.
 */
static void
insert_changes_direct(Relation rel, const AttrNumber *attnums, Oid source,
					  const char *key_kind, List *keys)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	Datum	   *values = palloc0(sizeof(Datum) * tupdesc->natts);
	bool	   *nulls = palloc(sizeof(bool) * tupdesc->natts);
	CommandId	cid = GetCurrentCommandId(true);
	ListCell   *lc;
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
		nulls[i] = true;
	values[attnums[0] - 1] = ObjectIdGetDatum(source);
	nulls[attnums[0] - 1] = false;
	values[attnums[1] - 1] = CStringGetTextDatum(key_kind);
	nulls[attnums[1] - 1] = false;
	/* the column default, now() */
	values[attnums[3] - 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	nulls[attnums[3] - 1] = false;

	if (keys == NIL)
	{
		HeapTuple	tuple = heap_form_tuple(tupdesc, values, nulls);

		heap_insert(rel, tuple, cid, 0, NULL);
		return;
	}
	nulls[attnums[2] - 1] = false;
	foreach(lc, keys)
	{
		HeapTuple	tuple;

		values[attnums[2] - 1] = CStringGetTextDatum((char *) lfirst(lc));
		tuple = heap_form_tuple(tupdesc, values, nulls);
		heap_insert(rel, tuple, cid, 0, NULL);
		heap_freetuple(tuple);
		pfree(DatumGetPointer(values[attnums[2] - 1]));
	}
}

/* The general path: one cached SPI INSERT, whatever the table has become. */
static void
insert_changes_spi(Oid source, const char *key_kind, List *keys)
{
	Datum		args[3];
	int			ret;

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

	args[0] = ObjectIdGetDatum(source);
	args[1] = CStringGetTextDatum(key_kind);
	if (keys != NIL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * list_length(keys));
		ListCell   *lc;
		int			i = 0;

		foreach(lc, keys)
			elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
		args[2] = PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else
	{
		Datum		none[1] = {(Datum) 0};
		bool		nulls[1] = {true};
		int			dims[1] = {1};
		int			lbs[1] = {1};

		args[2] = PointerGetDatum(construct_md_array(none, nulls, 1, dims, lbs,
													 TEXTOID, -1, false, TYPALIGN_INT));
	}

	ret = SPI_execute_plan(capture_insert_plan, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "recording captured changes failed: %s", SPI_result_code_string(ret));
	SPI_finish();
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
	Relation	changes;
	TupleDesc	tupdesc;
	const char *key_kind;
	AttrNumber	attnum;
	AttrNumber	attnums[4];
	KeySet		set = {NIL, NULL};

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

	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		key_kind = "truncate";
	else if (attnum <= 0)
	{
		/*
		 * The mapped column is gone: one keyless row tells the refresh step
		 * to rebuild from scratch.  Never fail the shop's write.
		 */
		key_kind = "column_missing";
	}
	else
	{
		if (trigdata->tg_oldtable)
			collect_keys(trigdata->tg_oldtable, tupdesc, attnum, &set);
		if (trigdata->tg_newtable)
			collect_keys(trigdata->tg_newtable, tupdesc, attnum, &set);
		if (set.keys == NIL)
			return PointerGetDatum(NULL);
	}

	/*
	 * The direct path writes only key kinds the table's CHECK constraint
	 * accepts; a trigger created by hand with another one goes through the
	 * INSERT, whose constraint check reports it.
	 */
	changes = open_changes_table();
	if ((strcmp(key_kind, "customer") == 0 || strcmp(key_kind, "order") == 0 ||
		 strcmp(key_kind, "truncate") == 0 || strcmp(key_kind, "column_missing") == 0) &&
		changes_table_is_plain(changes, attnums))
	{
		AttrNumber	written[3] = {attnums[0], attnums[1], attnums[2]};

		check_insert_privilege(changes, written, 3);
		insert_changes_direct(changes, attnums, RelationGetRelid(rel), key_kind, set.keys);
	}
	else
	{
		insert_changes_spi(RelationGetRelid(rel), key_kind, set.keys);
	}
	/* the lock is held until the end of the transaction, as INSERT does */
	table_close(changes, NoLock);
	if (set.seen != NULL)
		hash_destroy(set.seen);

	return PointerGetDatum(NULL);
}

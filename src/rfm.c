/*-------------------------------------------------------------------------
 *
 * rfm.c
 *	  RFM cells and named RFM groups.
 *
 * rfm_group() places a customer on the R x (F+M)/2 grid and names the
 * group the map in force (view segments.rfm_groups) puts there.  It runs
 * once per customer over millions of rows, so it reads the map with SPI
 * once, turns it into a 5 x 9 table of group names and serves every later
 * call with the same snapshot from that table.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/snapshot.h"

PG_FUNCTION_INFO_V1(segments_rfm_cell);
PG_FUNCTION_INFO_V1(segments_rfm_group);

/* a cell is one digit per score */
StaticAssertDecl(SEGMENTS_RFM_SCORES >= 1 && SEGMENTS_RFM_SCORES <= 9,
				 "RFM scores must be single digits");

/* (F+M)/2 takes the values 1, 1.5, ..., 5: F+M runs from 2 to 2 * 5 */
#define RFM_FM_STEPS (2 * SEGMENTS_RFM_SCORES - 1)

/*
 * The map in force, fully qualified: the extension's schema is always
 * "segments" (relocatable = false), and nothing in the query may resolve
 * through the caller's search_path.  The view's own body was bound to its
 * tables when it was created.  group_name breaks ties of position only if
 * the owner dropped the UNIQUE constraint, so that the result is still
 * deterministic.
 */
#define RFM_MAP_QUERY \
	"SELECT group_name, r_min, r_max, fm_min, fm_max" \
	" FROM segments.rfm_groups" \
	" ORDER BY position, group_name"

/*
 * The map as a lookup table, with the snapshot it was read under.  Lives in
 * its own memory context under fn_mcxt, so that a reload frees the old one.
 */
typedef struct RfmGroupCache
{
	MemoryContext mcxt;

	/* the active snapshot the map was read with (MVCC snapshots only) */
	TransactionId xmin;
	TransactionId xmax;
	uint32		xcnt;
	int32		subxcnt;
	bool		suboverflowed;
	CommandId	curcid;
	TransactionId *xip;
	TransactionId *subxip;

	/* group of (r, f + m): cells[r - 1][f + m - 2]; NULL is a gap */
	text	   *cells[SEGMENTS_RFM_SCORES][RFM_FM_STEPS];
} RfmGroupCache;

/*
 * Every score is checked the same way, by every function, whatever the
 * other scores are: an out-of-range score is a bug in the scoring query and
 * must not turn into a plausible-looking group.
 */
static void
rfm_check_score(int32 score, const char *which)
{
	if (score < 1 || score > SEGMENTS_RFM_SCORES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("RFM score out of range"),
				 errdetail("The %s score is %d, but scores run from 1 to %d.",
						   which, score, SEGMENTS_RFM_SCORES),
				 errhint("Compute scores with ntile_score() and %d buckets.",
						 SEGMENTS_RFM_SCORES)));
}

/*
 * rfm_cell(r, f, m): the classic three-digit cell ('543') that exports and
 * per-cell reports group by.
 */
Datum
segments_rfm_cell(PG_FUNCTION_ARGS)
{
	int32		r = PG_GETARG_INT32(0);
	int32		f = PG_GETARG_INT32(1);
	int32		m = PG_GETARG_INT32(2);
	char		buf[4];

	rfm_check_score(r, "recency");
	rfm_check_score(f, "frequency");
	rfm_check_score(m, "monetary");

	buf[0] = (char) ('0' + r);
	buf[1] = (char) ('0' + f);
	buf[2] = (char) ('0' + m);
	buf[3] = '\0';

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf, 3));
}

/*
 * Was the cache read under this snapshot?  Two MVCC snapshots with the same
 * xmin, xmax, in-progress lists and command id see exactly the same rows,
 * so the map cannot have changed.
 *
 * Comparing snapshots rather than trusting the FmgrInfo's lifetime matters
 * for PL/pgSQL: a simple expression such as "g := rfm_group(r, f, m)" keeps
 * its FmgrInfo, and so fn_extra, for the whole transaction, while each
 * evaluation in a volatile function runs under a new snapshot that may see
 * an edited map.  In an ordinary query the snapshot is the same for every
 * row and this costs a few comparisons per call.
 */
static bool
rfm_cache_matches(const RfmGroupCache *cache, Snapshot snap)
{
	return cache->xmin == snap->xmin &&
		cache->xmax == snap->xmax &&
		cache->curcid == snap->curcid &&
		cache->xcnt == snap->xcnt &&
		cache->subxcnt == snap->subxcnt &&
		cache->suboverflowed == snap->suboverflowed &&
		(snap->xcnt == 0 ||
		 memcmp(cache->xip, snap->xip, snap->xcnt * sizeof(TransactionId)) == 0) &&
		(snap->subxcnt <= 0 ||
		 memcmp(cache->subxip, snap->subxip, snap->subxcnt * sizeof(TransactionId)) == 0);
}

/* Remember the snapshot the cache is read under; see rfm_cache_matches() */
static void
rfm_cache_set_snapshot(RfmGroupCache *cache, Snapshot snap)
{
	cache->xmin = snap->xmin;
	cache->xmax = snap->xmax;
	cache->curcid = snap->curcid;
	cache->xcnt = snap->xcnt;
	cache->subxcnt = snap->subxcnt;
	cache->suboverflowed = snap->suboverflowed;
	cache->xip = NULL;
	cache->subxip = NULL;
	if (snap->xcnt > 0)
	{
		cache->xip = MemoryContextAlloc(cache->mcxt,
										snap->xcnt * sizeof(TransactionId));
		memcpy(cache->xip, snap->xip, snap->xcnt * sizeof(TransactionId));
	}
	if (snap->subxcnt > 0)
	{
		cache->subxip = MemoryContextAlloc(cache->mcxt,
										   snap->subxcnt * sizeof(TransactionId));
		memcpy(cache->subxip, snap->subxip,
			   snap->subxcnt * sizeof(TransactionId));
	}
}

/* A column of the map row that must not be NULL (the tables say NOT NULL) */
static Datum
rfm_map_column(HeapTuple tuple, TupleDesc tupdesc, int attno,
			   const char *group_name)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, tupdesc, attno, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("invalid RFM group map"),
				 errdetail("Column %s of group \"%s\" is NULL.",
						   SPI_fname(tupdesc, attno),
						   group_name ? group_name : "(NULL)"),
				 errhint("Fix the row in segments.rfm_group_map.")));
	return value;
}

/*
 * Read the map in force and build the lookup table.  Rows are taken in
 * position order and the first row covering a cell wins; a row that is
 * invalid is an error, never skipped.
 *
 * The table is built in a new context under the caller's per-call memory
 * and moved under fn_mcxt only once it is complete, so that an invalid map
 * leaks nothing into fn_mcxt; without a snapshot it stays in per-call
 * memory.
 */
static RfmGroupCache *
rfm_cache_load(FmgrInfo *flinfo, Snapshot snap)
{
	static const Oid coltypes[5] = {TEXTOID, INT4OID, INT4OID, NUMERICOID, NUMERICOID};
	MemoryContext mcxt;
	RfmGroupCache *cache;
	TupleDesc	tupdesc;
	uint64		row;
	int			ret;
	int			i;

	mcxt = AllocSetContextCreate(CurrentMemoryContext,
								 "segments rfm_group map",
								 ALLOCSET_SMALL_SIZES);
	cache = MemoryContextAllocZero(mcxt, sizeof(RfmGroupCache));
	cache->mcxt = mcxt;

	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(ret));

	/*
	 * Read-only: run under the caller's active snapshot, without advancing
	 * the command counter, as a STABLE function must.  With no active
	 * snapshot (not seen in practice) SPI takes its own and the result is
	 * not cached.
	 */
	ret = SPI_execute(RFM_MAP_QUERY, snap != NULL, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading segments.rfm_groups failed: %s",
			 SPI_result_code_string(ret));

	tupdesc = SPI_tuptable->tupdesc;
	if (tupdesc->natts != lengthof(coltypes))
		elog(ERROR, "segments.rfm_groups returned %d columns, expected %d",
			 tupdesc->natts, (int) lengthof(coltypes));
	for (i = 0; i < lengthof(coltypes); i++)
		if (SPI_gettypeid(tupdesc, i + 1) != coltypes[i])
			elog(ERROR, "column %s of segments.rfm_groups has type %u, expected %u",
				 SPI_fname(tupdesc, i + 1), SPI_gettypeid(tupdesc, i + 1),
				 coltypes[i]);

	for (row = 0; row < SPI_processed; row++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];
		char	   *name;
		int32		r_min,
					r_max;
		float8		fm_min,
					fm_max;
		int			k_min,
					k_max;
		text	   *name_text;
		int			r,
					k;

		name = TextDatumGetCString(rfm_map_column(tuple, tupdesc, 1, NULL));
		r_min = DatumGetInt32(rfm_map_column(tuple, tupdesc, 2, name));
		r_max = DatumGetInt32(rfm_map_column(tuple, tupdesc, 3, name));

		/*
		 * numeric(2,1) converts exactly enough: the bounds are compared with
		 * the halves 1, 1.5, ..., 5 only, which float8 holds exactly.
		 */
		fm_min = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													rfm_map_column(tuple, tupdesc, 4, name)));
		fm_max = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													rfm_map_column(tuple, tupdesc, 5, name)));

		/* the table CHECKs cover these; the map is read by value all the same */
		if (r_min < 1 || r_max > SEGMENTS_RFM_SCORES || r_min > r_max)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("invalid RFM group map"),
					 errdetail("Group \"%s\" has recency scores %d to %d, but they must be an ascending range within 1 to %d.",
							   name, r_min, r_max, SEGMENTS_RFM_SCORES),
					 errhint("Fix the row in segments.rfm_group_map.")));
		if (!(fm_min >= 1.0 && fm_max <= (float8) SEGMENTS_RFM_SCORES &&
			  fm_min <= fm_max))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("invalid RFM group map"),
					 errdetail("Group \"%s\" has (F+M)/2 from %g to %g, but it must be an ascending range within 1 to %d.",
							   name, fm_min, fm_max, SEGMENTS_RFM_SCORES),
					 errhint("Fix the row in segments.rfm_group_map.")));

		/* the F+M sums this row covers */
		k_min = (int) ceil(2.0 * fm_min);
		k_max = (int) floor(2.0 * fm_max);
		if (k_min > k_max)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("invalid RFM group map"),
					 errdetail("Group \"%s\" has (F+M)/2 from %g to %g, which contains none of the values 1, 1.5, ..., %d.",
							   name, fm_min, fm_max, SEGMENTS_RFM_SCORES),
					 errhint("Fix the row in segments.rfm_group_map.")));

		name_text = (text *) MemoryContextAlloc(mcxt, VARHDRSZ + strlen(name));
		SET_VARSIZE(name_text, VARHDRSZ + strlen(name));
		memcpy(VARDATA(name_text), name, strlen(name));

		for (r = r_min; r <= r_max; r++)
			for (k = k_min; k <= k_max; k++)
				if (cache->cells[r - 1][k - 2] == NULL)
					cache->cells[r - 1][k - 2] = name_text;
	}

	SPI_finish();

	/* without a snapshot to key it by, the map serves this call only */
	if (snap != NULL)
	{
		rfm_cache_set_snapshot(cache, snap);
		MemoryContextSetParent(mcxt, flinfo->fn_mcxt);
	}
	return cache;
}

/*
 * rfm_group(r, f, m): the named group campaigns and reports target.
 *
 * All three scores NULL is a customer without orders, a prospect.  Some but
 * not all NULL returns NULL: a customer with orders always has all three
 * scores, so a partial score is an upstream gap (say a monetary score not
 * computed yet) and guessing a group for it would mislabel the customer,
 * while an error would abort the whole scoring run over one customer.  The
 * scores that are there are still range-checked.
 */
Datum
segments_rfm_group(PG_FUNCTION_ARGS)
{
	RfmGroupCache *cache = (RfmGroupCache *) fcinfo->flinfo->fn_extra;
	Snapshot	snap;
	int32		r,
				f,
				m;
	text	   *group;

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1) && PG_ARGISNULL(2))
		PG_RETURN_TEXT_P(cstring_to_text("prospects"));
	if (!PG_ARGISNULL(0))
		rfm_check_score(PG_GETARG_INT32(0), "recency");
	if (!PG_ARGISNULL(1))
		rfm_check_score(PG_GETARG_INT32(1), "frequency");
	if (!PG_ARGISNULL(2))
		rfm_check_score(PG_GETARG_INT32(2), "monetary");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();

	r = PG_GETARG_INT32(0);
	f = PG_GETARG_INT32(1);
	m = PG_GETARG_INT32(2);

	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;
	if (snap != NULL && snap->snapshot_type != SNAPSHOT_MVCC)
		snap = NULL;

	if (cache == NULL || snap == NULL || !rfm_cache_matches(cache, snap))
	{
		RfmGroupCache *fresh = rfm_cache_load(fcinfo->flinfo, snap);

		/*
		 * The old map's names were results of earlier rows; no executor node
		 * keeps a result past its row without copying it.
		 */
		if (cache != NULL)
			MemoryContextDelete(cache->mcxt);
		cache = fresh;
		fcinfo->flinfo->fn_extra = (snap != NULL) ? cache : NULL;
	}

	group = cache->cells[r - 1][f + m - 2];
	if (group == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(group);
}

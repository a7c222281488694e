/*-------------------------------------------------------------------------
 *
 * recency.c
 *	  Recency in days and owner-set recency bands.
 *
 * A day here is a 24-hour period of absolute time, not a calendar day: the
 * difference of two timestamptz values in microseconds divided by
 * USECS_PER_DAY.  That keeps the functions IMMUTABLE (no TimeZone involved)
 * and makes "lapsed for 30 days" mean the same thing for every customer
 * whatever the daylight saving calendar of the shop; around a DST change
 * the local wall clock says a day has passed one hour before or after
 * recency does.
 *
 * recency_bucket() runs once per customer, usually with the same constant
 * band edges for millions of rows, so the validated edges and their labels
 * are cached in fn_extra, keyed by the array's bytes.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_recency_days);
PG_FUNCTION_INFO_V1(segments_recency_bucket);
PG_FUNCTION_INFO_V1(segments_recency_bucket_labels);

/* More bands than this is a mistake, not a segmentation */
#define RECENCY_MAX_BAND_EDGES 100

/*
 * Validated band edges with one label per band: nedges edges make
 * nedges + 1 bands, the last one open ("366+").  Lives in its own memory
 * context under fn_mcxt so that a change of edges frees the old one.
 */
typedef struct RecencyBands
{
	MemoryContext mcxt;
	Size		key_size;		/* VARSIZE of the array the bands came from */
	char	   *key;			/* copy of that array's bytes */
	int			nedges;
	int32	   *edges;			/* strictly ascending, >= 0 */
	text	  **labels;			/* nedges + 1 labels */
} RecencyBands;

/*
 * Whole 24-hour periods from last_order_at to as_of, 0 when the order is at
 * or after as_of.
 *
 * The clamp is deliberate: application servers stamp orders with their own
 * clocks, so an order can look a few seconds newer than the as_of of the
 * scoring run, and a negative recency would fall outside every band.  Runs
 * that evaluate an earlier as_of filter out later orders before they get
 * here, so the clamp hides no real data.
 */
static int32
recency_days_between(TimestampTz last_order_at, TimestampTz as_of)
{
	uint64		usecs;
	uint64		days;

	if (TIMESTAMP_NOT_FINITE(last_order_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("last order time must be finite"),
				 errdetail("The last order time is %s.",
						   TIMESTAMP_IS_NOBEGIN(last_order_at) ? "-infinity" : "infinity"),
				 errhint("Pass NULL for a customer without orders, not an infinite timestamp.")));
	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as-of time must be finite"),
				 errdetail("The as-of time is %s.",
						   TIMESTAMP_IS_NOBEGIN(as_of) ? "-infinity" : "infinity")));

	if (last_order_at >= as_of)
		return 0;

	/*
	 * The signed difference of two finite timestamps can exceed INT64_MAX
	 * (their range spans about 299,000 years), but it is positive and below
	 * 2^64 here, so unsigned arithmetic gives it exactly.
	 */
	usecs = (uint64) as_of - (uint64) last_order_at;
	days = usecs / (uint64) USECS_PER_DAY;

	/* about 109 million at most for finite timestamps; check all the same */
	if (days > (uint64) PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("recency is out of range for type integer")));

	return (int32) days;
}

/*
 * recency_days(last_order_at, as_of): the recency a score or a segment rule
 * compares against; see recency_days_between() for the clamp.
 */
Datum
segments_recency_days(PG_FUNCTION_ARGS)
{
	TimestampTz last_order_at = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(1);

	PG_RETURN_INT32(recency_days_between(last_order_at, as_of));
}

/* Shared by every band edge error: the message is the same, the detail says why */
#define RECENCY_BANDS_HINT \
	errhint("Band edges are the last day of each band, given as a one-dimensional array of strictly ascending non-negative whole numbers such as '{30,60,90,180,365}'.")

/*
 * Check the band edges and return them as a plain int32 array with their
 * count.  Every function taking band edges goes through here, so that
 * recency_bucket() and recency_bucket_labels() accept exactly the same
 * arrays.
 */
static int32 *
recency_bands_check(ArrayType *arr, int *nedges)
{
	int32	   *edges;
	int			n;
	int			i;

	/* fixed by the SQL declaration; a mismatch is a broken install script */
	if (ARR_ELEMTYPE(arr) != INT4OID)
		elog(ERROR, "recency band edges must be int4[], not type %u",
			 ARR_ELEMTYPE(arr));

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid recency band edges"),
				 errdetail("Band edges must be a one-dimensional array, but this one has %d dimensions.",
						   ARR_NDIM(arr)),
				 RECENCY_BANDS_HINT));

	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid recency band edges"),
				 errdetail("Band edges must not be empty."),
				 RECENCY_BANDS_HINT));
	if (n > RECENCY_MAX_BAND_EDGES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid recency band edges"),
				 errdetail("At most %d band edges are allowed, but %d were given.",
						   RECENCY_MAX_BAND_EDGES, n),
				 RECENCY_BANDS_HINT));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid recency band edges"),
				 errdetail("Band edges must not contain NULL."),
				 RECENCY_BANDS_HINT));

	edges = (int32 *) ARR_DATA_PTR(arr);
	for (i = 0; i < n; i++)
	{
		if (edges[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid recency band edges"),
					 errdetail("Band edge %d is negative (%d).", i + 1, edges[i]),
					 RECENCY_BANDS_HINT));
		if (i > 0 && edges[i] <= edges[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid recency band edges"),
					 errdetail("Band edges must be strictly ascending, but edge %d (%d) is not greater than edge %d (%d).",
							   i + 1, edges[i], i, edges[i - 1]),
					 RECENCY_BANDS_HINT));
	}

	*nedges = n;
	return edges;
}

/*
 * Label of band i of n edges: "0-30", "31-60", ..., "366+".  Computed in
 * int64 so that an edge of INT32_MAX still gets an open band after it.
 */
static text *
recency_band_label(const int32 *edges, int nedges, int i)
{
	int64		lo = (i == 0) ? 0 : (int64) edges[i - 1] + 1;
	char		buf[2 * MAXINT8LEN + 2];

	if (i == nedges)
		snprintf(buf, sizeof(buf), INT64_FORMAT "+", lo);
	else
		snprintf(buf, sizeof(buf), INT64_FORMAT "-" INT64_FORMAT,
				 lo, (int64) edges[i]);
	return cstring_to_text(buf);
}

/*
 * The bands of these edges, from fn_extra when the previous call had the
 * same array (compared by its bytes: a constant array costs one memcmp per
 * row), otherwise validated, labelled and cached afresh.  The previous
 * bands are freed then; their labels were this function's results of an
 * earlier row, which no executor node keeps past its row without copying.
 */
static RecencyBands *
recency_bands_get(FunctionCallInfo fcinfo, ArrayType *arr)
{
	RecencyBands *bands = (RecencyBands *) fcinfo->flinfo->fn_extra;
	Size		size = VARSIZE(arr);
	MemoryContext mcxt;
	MemoryContext oldcxt;
	int32	   *edges;
	int			nedges;
	int			i;

	if (bands != NULL && bands->key_size == size &&
		memcmp(bands->key, arr, size) == 0)
		return bands;

	/* validate before touching the cache, so an error leaves it intact */
	edges = recency_bands_check(arr, &nedges);

	mcxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt,
								 "segments recency bands",
								 ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(mcxt);

	bands = (RecencyBands *) palloc(sizeof(RecencyBands));
	bands->mcxt = mcxt;
	bands->key_size = size;
	bands->key = palloc(size);
	memcpy(bands->key, arr, size);
	bands->nedges = nedges;
	bands->edges = palloc(nedges * sizeof(int32));
	memcpy(bands->edges, edges, nedges * sizeof(int32));
	bands->labels = palloc((nedges + 1) * sizeof(text *));
	for (i = 0; i <= nedges; i++)
		bands->labels[i] = recency_band_label(edges, nedges, i);

	MemoryContextSwitchTo(oldcxt);

	if (fcinfo->flinfo->fn_extra != NULL)
		MemoryContextDelete(((RecencyBands *) fcinfo->flinfo->fn_extra)->mcxt);
	fcinfo->flinfo->fn_extra = bands;

	return bands;
}

/*
 * recency_bucket(last_order_at, as_of, band_edges): the band label a report
 * or a segment rule groups customers by.  Band i holds the days up to and
 * including edge i; days past the last edge fall in the open last band.
 */
Datum
segments_recency_bucket(PG_FUNCTION_ARGS)
{
	TimestampTz last_order_at = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz as_of = PG_GETARG_TIMESTAMPTZ(1);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(2);
	RecencyBands *bands;
	int32		days;
	int			lo,
				hi;

	days = recency_days_between(last_order_at, as_of);
	bands = recency_bands_get(fcinfo, arr);

	/* first edge >= days; nedges when days is past every edge */
	lo = 0;
	hi = bands->nedges;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (bands->edges[mid] < days)
			lo = mid + 1;
		else
			hi = mid;
	}

	/* the cached label outlives this row; see recency_bands_get() */
	PG_RETURN_TEXT_P(bands->labels[lo]);
}

/*
 * recency_bucket_labels(band_edges): every label recency_bucket() can
 * return, in band order, so that reports can list empty bands too and sort
 * bands by recency rather than alphabetically.
 */
Datum
segments_recency_bucket_labels(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	int32	   *edges;
	int			nedges;
	Datum	   *labels;
	int			i;

	edges = recency_bands_check(arr, &nedges);

	labels = (Datum *) palloc((nedges + 1) * sizeof(Datum));
	for (i = 0; i <= nedges; i++)
		labels[i] = PointerGetDatum(recency_band_label(edges, nedges, i));

	PG_RETURN_ARRAYTYPE_P(construct_array(labels, nedges + 1, TEXTOID,
										  -1, false, TYPALIGN_INT));
}

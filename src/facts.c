/*-------------------------------------------------------------------------
 *
 * facts.c
 *	  Helpers of the customer facts layer.
 *
 * next_change_at is what lets a scheduled tick find time-driven changes
 * ("lapsed 60 days after the last order", "cart idle for an hour") through
 * an index instead of scanning every customer: it is the earliest future
 * instant at which a watched window around a fact's timestamp closes.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_next_time_after);

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

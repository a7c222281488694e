/*-------------------------------------------------------------------------
 *
 * watch.c
 *	  When a time column of segment_facts next crosses a rule's threshold.
 *
 * A time column such as days_since_last_order is a whole number of units
 * (days, minutes) since an anchor (last_order_at).  A rule comparing it
 * with x changes value when the column steps past x: at floor(x) + 1 for
 * > and <=, at ceil(x) for >= and <, and = changes again one unit later.
 * The evaluator stores, per customer, the earliest such instant after the
 * evaluation time (segment_watch), and looks at the customer again then.
 *
 * This used to be a correlated subquery per threshold and customer; as a
 * plain function call it costs a few numeric operations instead of a
 * subplan, which matters when a full evaluation computes eight of them for
 * a million customers.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_next_crossing);

/* Thresholds beyond this many units never come due */
#define WATCH_MAX_UNITS 1000000

/*
 * _next_crossing(anchor, threshold, unit, after): the earliest of anchor +
 * c * unit for c in floor(x), ceil(x), floor(x) + 1, ceil(x) + 1 that lies
 * after "after"; NULL when x is outside 0 .. WATCH_MAX_UNITS or none does.
 */
Datum
segments_next_crossing(PG_FUNCTION_ARGS)
{
	Datum		anchor = PG_GETARG_DATUM(0);
	Datum		x = PG_GETARG_DATUM(1);
	Datum		unit = PG_GETARG_DATUM(2);
	TimestampTz after = PG_GETARG_TIMESTAMPTZ(3);
	Datum		lo = DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
	Datum		hi = DirectFunctionCall1(int4_numeric, Int32GetDatum(WATCH_MAX_UNITS));
	double		fl;
	double		ce;
	double		candidates[4];
	bool		found = false;
	TimestampTz best = 0;

	/* NaN sorts above every number, so it fails the upper bound */
	if (!DatumGetBool(DirectFunctionCall2(numeric_ge, x, lo)) ||
		!DatumGetBool(DirectFunctionCall2(numeric_le, x, hi)))
		PG_RETURN_NULL();

	fl = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											DirectFunctionCall1(numeric_floor, x)));
	ce = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											DirectFunctionCall1(numeric_ceil, x)));
	candidates[0] = fl;
	candidates[1] = ce;
	candidates[2] = fl + 1;
	candidates[3] = ce + 1;

	for (int i = 0; i < lengthof(candidates); i++)
	{
		Datum		step = DirectFunctionCall2(interval_mul, unit,
											   Float8GetDatum(candidates[i]));
		TimestampTz t = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																anchor, step));

		if (t > after && (!found || t < best))
		{
			best = t;
			found = true;
		}
	}
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(best);
}

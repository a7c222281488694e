/*-------------------------------------------------------------------------
 *
 * order_facts.c
 *	  _order_facts(): every per-customer order fact in one aggregate.
 *
 * The facts query used to compute a customer's order facts with eleven
 * aggregates over the same rows: counts by state, first and last completed
 * order time, three numeric sums and buying_cycle().  In a hash aggregate
 * over ten million orders that is four separately allocated by-reference
 * states per customer (two NumericAggStates, the buying_cycle() varlena,
 * the hash entry), a cache miss on each per row, and ~0.8 kB of state per
 * customer that spilled to disk.  This aggregate keeps one compact state
 * per customer and returns the same values, bit for bit:
 *
 * - the sums are int64 at the largest display scale seen so far, which is
 *	 exactly what sum(numeric) returns (the exact sum, with the largest
 *	 dscale of its inputs); a value that does not fit (too many digits, a
 *	 scale above 18, NaN or infinity) turns that sum into a plain numeric
 *	 computed with numeric_add(), which gives sum()'s result too;
 * - the completed order times are kept as int64 microseconds and the median
 *	 gap is computed as buying_cycle_final() does (same checks, same
 *	 errors, same float8 arithmetic).
 *
 * The state is internal: the aggregate serves the serial full build and the
 * keyed refresh, both of which run in one process.  It has no combine
 * function, so a parallel plan aggregates above the Gather.
 *
 * The numeric input is read in its on-disk format (NumericShort and
 * NumericLong, unchanged since 9.1, special values since 14); the layout
 * macros below mirror utils/adt/numeric.c, which does not export them.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include <limits.h>

#include "access/htup_details.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_order_facts_accum);
PG_FUNCTION_INFO_V1(segments_order_facts_final);

/* numeric on-disk format, from utils/adt/numeric.c */
#define OF_NUMERIC_SIGN_MASK	0xC000
#define OF_NUMERIC_NEG			0x4000
#define OF_NUMERIC_SHORT		0x8000
#define OF_NUMERIC_SPECIAL		0xC000
#define OF_SHORT_SIGN_MASK		0x2000
#define OF_SHORT_DSCALE_MASK	0x1F80
#define OF_SHORT_DSCALE_SHIFT	7
#define OF_SHORT_WEIGHT_SIGN	0x0040
#define OF_SHORT_WEIGHT_MASK	0x003F
#define OF_DSCALE_MASK			0x3FFF
#define OF_NBASE				10000
#define OF_DEC_DIGITS			4

/* largest display scale kept as int64 */
#define OF_MAX_SCALE			18

/* order times are exact in buying_cycle()'s float8 within +-2^53 us */
#define OF_CYCLE_LIMIT			INT64CONST(9007199254740992)

/* what int64_div_fast_to_numeric() converts without its slow path */
#define OF_FAST_NUMERIC_LIMIT	INT64CONST(900000000000000)

static const int64 of_pow10[OF_MAX_SCALE + 1] = {
	INT64CONST(1), INT64CONST(10), INT64CONST(100), INT64CONST(1000),
	INT64CONST(10000), INT64CONST(100000), INT64CONST(1000000),
	INT64CONST(10000000), INT64CONST(100000000), INT64CONST(1000000000),
	INT64CONST(10000000000), INT64CONST(100000000000),
	INT64CONST(1000000000000), INT64CONST(10000000000000),
	INT64CONST(100000000000000), INT64CONST(1000000000000000),
	INT64CONST(10000000000000000), INT64CONST(100000000000000000),
	INT64CONST(1000000000000000000)
};

/* one exact sum: int64 at scale dscale, or a numeric once that overflowed */
typedef struct OFSum
{
	int64		value;
	int16		dscale;
	bool		seen;			/* at least one non-NULL input */
	bool		big;			/* the sum is in OrderFacts.bigsum[] */
} OFSum;

#define OF_SUM_GROSS	0
#define OF_SUM_REFUND	1
#define OF_SUM_MARGIN	2

typedef struct OrderFacts
{
	int32		completed;
	int32		refunded;
	int32		cancelled;
	int32		discounted;
	TimestampTz first;			/* valid when ntimes > 0 */
	TimestampTz last;
	OFSum		sums[3];
	Numeric    *bigsum;			/* NULL, or 3 numerics in the aggcontext */
	int32		ntimes;			/* completed order times in times[] */
	int32		captimes;
	int64		times[FLEXIBLE_ARRAY_MEMBER];
} OrderFacts;

#define OF_HEADER_SIZE	offsetof(OrderFacts, times)
/* states are power-of-two chunks: 128, 256, ... bytes */
#define OF_INITIAL_SIZE 128

typedef struct OFValue
{
	int64		value;
	int16		dscale;
} OFValue;

/*
 * A numeric datum as value * 10^-dscale with value in int64; false when it
 * is special (NaN, infinity) or does not fit.
 */
static bool
of_numeric_to_int64(Datum d, OFValue *out)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	const char *p;
	Size		len;
	uint16		header;
	int			weight;
	int			dscale;
	bool		negative;
	int			ndigits;
	const char *digits;
	int64		acc = 0;
	int			frac;

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		v = pg_detoast_datum_packed(v);
	p = VARDATA_ANY(v);
	len = VARSIZE_ANY_EXHDR(v);
	if (len < sizeof(uint16))
		return false;
	memcpy(&header, p, sizeof(uint16));

	if ((header & OF_NUMERIC_SIGN_MASK) == OF_NUMERIC_SPECIAL)
		return false;
	if ((header & OF_NUMERIC_SIGN_MASK) == OF_NUMERIC_SHORT)
	{
		negative = (header & OF_SHORT_SIGN_MASK) != 0;
		dscale = (header & OF_SHORT_DSCALE_MASK) >> OF_SHORT_DSCALE_SHIFT;
		weight = (header & OF_SHORT_WEIGHT_SIGN) ? (int) (~OF_SHORT_WEIGHT_MASK | (header & OF_SHORT_WEIGHT_MASK))
			: (int) (header & OF_SHORT_WEIGHT_MASK);
		digits = p + sizeof(uint16);
		ndigits = (len - sizeof(uint16)) / sizeof(int16);
	}
	else
	{
		int16		w;

		if (len < 2 * sizeof(uint16))
			return false;
		negative = (header & OF_NUMERIC_SIGN_MASK) == OF_NUMERIC_NEG;
		dscale = header & OF_DSCALE_MASK;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		digits = p + 2 * sizeof(uint16);
		ndigits = (len - 2 * sizeof(uint16)) / sizeof(int16);
	}
	if (dscale > OF_MAX_SCALE)
		return false;
	out->dscale = (int16) dscale;
	if (ndigits == 0)
	{
		out->value = 0;
		return true;
	}
	/* at most 18 decimal digits fit for sure: 5 NBASE digits is 20 */
	if (ndigits > 5)
		return false;
	for (int i = 0; i < ndigits; i++)
	{
		int16		digit;

		memcpy(&digit, digits + i * sizeof(int16), sizeof(int16));
		if (pg_mul_s64_overflow(acc, OF_NBASE, &acc) ||
			pg_add_s64_overflow(acc, digit, &acc))
			return false;
	}
	/* acc is the value times 10^frac */
	frac = OF_DEC_DIGITS * (ndigits - 1 - weight);
	if (frac > dscale)
	{
		/* the digits past dscale are zero */
		if (frac - dscale > OF_MAX_SCALE)
			return false;
		acc /= of_pow10[frac - dscale];
	}
	else if (frac < dscale)
	{
		if (dscale - frac > OF_MAX_SCALE ||
			pg_mul_s64_overflow(acc, of_pow10[dscale - frac], &acc))
			return false;
	}
	out->value = negative ? -acc : acc;
	return true;
}

/* value * 10^-dscale as a numeric with that display scale */
static Numeric
of_int64_to_numeric(int64 value, int dscale)
{
	char		buf[64];
	char		digits[32];
	int			n;
	int			pos = 0;
	uint64		mag;

#if PG_VERSION_NUM >= 140000
	if (value > -OF_FAST_NUMERIC_LIMIT && value < OF_FAST_NUMERIC_LIMIT)
		return int64_div_fast_to_numeric(value, dscale);
#endif
	mag = value < 0 ? -(uint64) value : (uint64) value;
	n = snprintf(digits, sizeof(digits), UINT64_FORMAT, mag);
	if (value < 0)
		buf[pos++] = '-';
	if (n <= dscale)
	{
		buf[pos++] = '0';
		buf[pos++] = '.';
		for (int i = n; i < dscale; i++)
			buf[pos++] = '0';
		memcpy(buf + pos, digits, n);
		pos += n;
	}
	else
	{
		memcpy(buf + pos, digits, n - dscale);
		pos += n - dscale;
		if (dscale > 0)
		{
			buf[pos++] = '.';
			memcpy(buf + pos, digits + n - dscale, dscale);
			pos += dscale;
		}
	}
	buf[pos] = '\0';
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/* a + b at the larger scale of the two; false on overflow */
static bool
of_add(OFValue *a, const OFValue *b, bool subtract)
{
	int64		x = b->value;
	int64		r;

	if (b->dscale > a->dscale)
	{
		if (pg_mul_s64_overflow(a->value, of_pow10[b->dscale - a->dscale], &a->value))
			return false;
		a->dscale = b->dscale;
	}
	else if (b->dscale < a->dscale)
	{
		if (pg_mul_s64_overflow(x, of_pow10[a->dscale - b->dscale], &x))
			return false;
	}
	if (subtract ? pg_sub_s64_overflow(a->value, x, &r) : pg_add_s64_overflow(a->value, x, &r))
		return false;
	a->value = r;
	return true;
}

/* the sum as a numeric, in the aggregate context */
static void
of_make_big(OrderFacts *st, int which, MemoryContext aggcontext)
{
	MemoryContext old = MemoryContextSwitchTo(aggcontext);

	if (st->bigsum == NULL)
		st->bigsum = (Numeric *) palloc0(3 * sizeof(Numeric));
	st->bigsum[which] = of_int64_to_numeric(st->sums[which].value, st->sums[which].dscale);
	st->sums[which].big = true;
	MemoryContextSwitchTo(old);
}

static void
of_add_big(OrderFacts *st, int which, Numeric x, MemoryContext aggcontext)
{
	MemoryContext old = MemoryContextSwitchTo(aggcontext);
	Numeric		prev = st->bigsum[which];

	st->bigsum[which] = numeric_add_opt_error(prev, x, NULL);
	pfree(prev);
	MemoryContextSwitchTo(old);
}

/* sum += x (a numeric datum), as sum(numeric) would */
static void
of_sum_add(OrderFacts *st, int which, Datum x, MemoryContext aggcontext)
{
	OFSum	   *s = &st->sums[which];
	OFValue		v;

	if (!s->big)
	{
		if (of_numeric_to_int64(x, &v))
		{
			OFValue		acc;

			if (!s->seen)
			{
				s->value = v.value;
				s->dscale = v.dscale;
				s->seen = true;
				return;
			}
			acc.value = s->value;
			acc.dscale = s->dscale;
			if (of_add(&acc, &v, false))
			{
				s->value = acc.value;
				s->dscale = acc.dscale;
				return;
			}
		}
		/* from here on a numeric: 0 + x is x, as sum() of x alone */
		if (!s->seen)
		{
			s->value = 0;
			s->dscale = 0;
		}
		of_make_big(st, which, aggcontext);
	}
	s->seen = true;
	of_add_big(st, which, DatumGetNumeric(x), aggcontext);
}

static void
of_check_time(TimestampTz ts)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("buying_cycle() cannot use infinite order times")));
	if (ts < -OF_CYCLE_LIMIT || ts > OF_CYCLE_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("order time out of range for buying_cycle()"),
				 errdetail("Order times must lie within 2^53 microseconds (about 285 years) of 2000-01-01, between the years 1714 and 2285.")));
}

static inline int32
of_count(int32 n)
{
	if (unlikely(n == PG_INT32_MAX))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("integer out of range")));
	return n + 1;
}

/*
 * _order_facts_accum(state, order_state text, placed_at, amount,
 * refunded_amount, discounted, cost): one order row.  order_state is what
 * the facts query maps the shop's status to: 'completed', 'refunded',
 * 'cancelled' or anything else (not counted).
 */
Datum
segments_order_facts_accum(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext;
	OrderFacts *st;
	text	   *state;
	const char *s;
	int			slen;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "_order_facts_accum() called in non-aggregate context");

	if (PG_ARGISNULL(0))
	{
		st = (OrderFacts *) MemoryContextAllocZero(aggcontext, OF_INITIAL_SIZE);
		st->captimes = (OF_INITIAL_SIZE - OF_HEADER_SIZE) / sizeof(int64);
	}
	else
		st = (OrderFacts *) PG_GETARG_POINTER(0);

	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(st);
	state = PG_GETARG_TEXT_PP(1);
	s = VARDATA_ANY(state);
	slen = VARSIZE_ANY_EXHDR(state);

	if (slen == 9 && memcmp(s, "completed", 9) == 0)
	{
		st->completed = of_count(st->completed);
		if (!PG_ARGISNULL(5) && PG_GETARG_BOOL(5))
			st->discounted = of_count(st->discounted);
		if (!PG_ARGISNULL(3))
			of_sum_add(st, OF_SUM_GROSS, PG_GETARG_DATUM(3), aggcontext);
		if (!PG_ARGISNULL(4))
			of_sum_add(st, OF_SUM_REFUND, PG_GETARG_DATUM(4), aggcontext);
		/* margin: sum(amount - refunded_amount - cost) */
		if (!PG_ARGISNULL(3) && !PG_ARGISNULL(4) && !PG_ARGISNULL(6))
		{
			OFValue		a,
						r,
						c;
			OFSum	   *m = &st->sums[OF_SUM_MARGIN];

			if (!m->big &&
				of_numeric_to_int64(PG_GETARG_DATUM(3), &a) &&
				of_numeric_to_int64(PG_GETARG_DATUM(4), &r) &&
				of_numeric_to_int64(PG_GETARG_DATUM(6), &c) &&
				of_add(&a, &r, true) && of_add(&a, &c, true))
			{
				OFValue		acc;

				if (!m->seen)
				{
					m->value = a.value;
					m->dscale = a.dscale;
					m->seen = true;
					goto margin_done;
				}
				acc.value = m->value;
				acc.dscale = m->dscale;
				if (of_add(&acc, &a, false))
				{
					m->value = acc.value;
					m->dscale = acc.dscale;
					goto margin_done;
				}
			}
			{
				/* the numeric way, exactly what the SQL expression does */
				Numeric		x;

				x = numeric_sub_opt_error(DatumGetNumeric(PG_GETARG_DATUM(3)),
										  DatumGetNumeric(PG_GETARG_DATUM(4)), NULL);
				x = numeric_sub_opt_error(x, DatumGetNumeric(PG_GETARG_DATUM(6)), NULL);
				of_sum_add(st, OF_SUM_MARGIN, NumericGetDatum(x), aggcontext);
			}
	margin_done:
			;
		}
		if (!PG_ARGISNULL(2))
		{
			TimestampTz ts = PG_GETARG_TIMESTAMPTZ(2);

			of_check_time(ts);
			if (st->ntimes == 0 || ts < st->first)
				st->first = ts;
			if (st->ntimes == 0 || ts > st->last)
				st->last = ts;
			if (st->ntimes == st->captimes)
			{
				Size		oldsize = OF_HEADER_SIZE + (Size) st->captimes * sizeof(int64);
				Size		newsize = OF_HEADER_SIZE + (Size) st->captimes * 2 * sizeof(int64);
				OrderFacts *bigger;

				if (newsize > MaxAllocSize)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("too many orders for one customer")));
				/* round up to the power of two AllocSet would use anyway */
				newsize = Max(newsize, (Size) 2 * OF_INITIAL_SIZE);
				{
					Size		p2 = OF_INITIAL_SIZE;

					while (p2 < newsize)
						p2 *= 2;
					if (p2 <= MaxAllocSize)
						newsize = p2;
				}
				bigger = (OrderFacts *) MemoryContextAlloc(aggcontext, newsize);
				memcpy(bigger, st, oldsize);
				bigger->captimes = (newsize - OF_HEADER_SIZE) / sizeof(int64);
				pfree(st);
				st = bigger;
			}
			st->times[st->ntimes++] = ts;
		}
	}
	else if (slen == 8 && memcmp(s, "refunded", 8) == 0)
		st->refunded = of_count(st->refunded);
	else if (slen == 9 && memcmp(s, "cancelled", 9) == 0)
		st->cancelled = of_count(st->cancelled);

	PG_RETURN_POINTER(st);
}

static int
of_cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

static void
of_sort(int64 *v, int n)
{
	if (n <= 16)
	{
		for (int i = 1; i < n; i++)
		{
			int64		x = v[i];
			int			j = i;

			while (j > 0 && v[j - 1] > x)
			{
				v[j] = v[j - 1];
				j--;
			}
			v[j] = x;
		}
	}
	else
		qsort(v, n, sizeof(int64), of_cmp_int64);
}

static Datum
of_sum_result(OrderFacts *st, int which, bool *isnull)
{
	OFSum	   *s = &st->sums[which];

	*isnull = !s->seen;
	if (!s->seen)
		return (Datum) 0;
	if (s->big)
		return NumericGetDatum(st->bigsum[which]);
	return NumericGetDatum(of_int64_to_numeric(s->value, s->dscale));
}

/*
 * _order_facts_final(state): (first_order_at, last_order_at, orders,
 * refunded_orders, cancelled_orders, gross_revenue, refunded_amount,
 * discounted_orders, margin, median_gap_days, gap_count), each what the
 * separate aggregates over completed orders return: NULL sums without
 * values, and buying_cycle()'s median of the gaps between consecutive
 * completed order times.
 */
Datum
segments_order_facts_final(PG_FUNCTION_ARGS)
{
	OrderFacts *st;
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11];

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "_order_facts_final() called in non-aggregate context");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "_order_facts_final() must return a composite type");
	tupdesc = BlessTupleDesc(tupdesc);
	if (tupdesc->natts != 11)
		elog(ERROR, "_order_facts_final() result type has %d columns, not 11", tupdesc->natts);

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (OrderFacts *) PG_GETARG_POINTER(0);

	memset(nulls, 0, sizeof(nulls));
	nulls[0] = nulls[1] = st->ntimes == 0;
	values[0] = TimestampTzGetDatum(st->first);
	values[1] = TimestampTzGetDatum(st->last);
	values[2] = Int32GetDatum(st->completed);
	values[3] = Int32GetDatum(st->refunded);
	values[4] = Int32GetDatum(st->cancelled);
	values[5] = of_sum_result(st, OF_SUM_GROSS, &nulls[5]);
	values[6] = of_sum_result(st, OF_SUM_REFUND, &nulls[6]);
	values[7] = Int32GetDatum(st->discounted);
	values[8] = of_sum_result(st, OF_SUM_MARGIN, &nulls[8]);

	if (st->ntimes < 2)
	{
		nulls[9] = true;
		values[9] = (Datum) 0;
		values[10] = Int32GetDatum(0);
	}
	else
	{
		int32		ngaps = st->ntimes - 1;
		int64	   *gaps;
		int32		mid;
		float8		median_us;

		/* sorting the times in place is harmless: they are a multiset */
		of_sort(st->times, st->ntimes);
		gaps = (int64 *) palloc(sizeof(int64) * ngaps);
		for (int32 i = 0; i < ngaps; i++)
			gaps[i] = st->times[i + 1] - st->times[i];
		of_sort(gaps, ngaps);
		mid = ngaps / 2;
		if (ngaps % 2 == 1)
			median_us = (float8) gaps[mid];
		else
			median_us = (float8) (gaps[mid - 1] + gaps[mid]) / 2.0;
		values[9] = Float8GetDatum(median_us / (float8) USECS_PER_DAY);
		values[10] = Int32GetDatum(ngaps);
		pfree(gaps);
	}

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

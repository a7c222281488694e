/*-------------------------------------------------------------------------
 *
 * stoprules.c
 *	  Stop rules: for one campaign step due for one customer, decide
 *	  send, defer until a time, or skip with a reason.
 *
 * The same function decides twice: when the step becomes due (the tick) and
 * again in the transaction that hands the message to a sender (the claim),
 * so the rules live in one place.  It is a pure function of its arguments:
 * the callers read the facts, the caps and the consent, this code only
 * decides, which keeps it cheap (no SPI, no catalog access except the time
 * zone cache) and lets tests step the clock through `as_of`.
 *
 * Order of the rules: reasons that end the enrollment first (the campaign is
 * over, the buyer is in the holdout, converted, recovered the cart, or is
 * suppressed), then reasons that skip only this step (already sent, past its
 * not-after, no consent on this channel, offer beyond the margin guardrail,
 * product out of stock), then reasons to wait (facts not yet folded in, the
 * frequency cap, quiet hours in the buyer's own time zone).  Quiet hours
 * defer, never drop.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "access/htup_details.h"
#include "datatype/timestamp.h"
#include "funcapi.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(segments_decide_step);
PG_FUNCTION_INFO_V1(segments_quiet_hours_end);

#define MINUTES_PER_DAY (24 * 60)

/* Argument positions of decide_step(); keep in step with the SQL signature */
enum
{
	ARG_AS_OF,
	ARG_CAMPAIGN_STATUS,
	ARG_CAMPAIGN_EXPIRES_AT,
	ARG_HOLDOUT,
	ARG_SIGNAL_AT,
	ARG_LAST_ORDER_AT,
	ARG_CART_STATE,
	ARG_CONSENT,
	ARG_LAST_BOUNCED_AT,
	ARG_LAST_COMPLAINED_AT,
	ARG_CONSECUTIVE_IGNORED,
	ARG_SUNSET_AFTER,
	ARG_ALREADY_SENT,
	ARG_NOT_AFTER,
	ARG_OFFER_PERCENT,
	ARG_MAX_OFFER_PERCENT,
	ARG_IN_STOCK,
	ARG_FACTS_PENDING,
	ARG_LAST_SENT_ON_CHANNEL,
	ARG_FREQUENCY_CAP,
	ARG_TIME_ZONE,
	ARG_FALLBACK_TIME_ZONE,
	ARG_QUIET_START,
	ARG_QUIET_END,
	ARG_UNKNOWN_ZONE_MARGIN,
	DECIDE_STEP_NARGS
};

typedef enum
{
	DECIDE_SEND,
	DECIDE_DEFER,
	DECIDE_SKIP
} Decision;

static const char *const decision_names[] = {"send", "defer", "skip"};

typedef struct StepVerdict
{
	Decision	decision;
	const char *reason;			/* NULL for a plain send */
	TimestampTz defer_until;	/* for DECIDE_DEFER */
	bool		stops_enrollment;	/* skip ends the enrollment, not just the step */
} StepVerdict;

#define ARG_IS(n)		(!PG_ARGISNULL(n))
#define ARG_TS(n)		PG_GETARG_TIMESTAMPTZ(n)
#define ARG_BOOL_TRUE(n) (ARG_IS(n) && PG_GETARG_BOOL(n))

static inline bool
in_quiet_window(int minute, int start, int end)
{
	if (start == end)
		return false;			/* no quiet hours */
	if (start < end)
		return minute >= start && minute < end;
	return minute >= start || minute < end; /* spans midnight */
}

static int
minutes_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	int32		m = PG_GETARG_INT32(argno);

	if (m < 0 || m >= MINUTES_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a minute of the day between 0 and 1439, not %d", what, m)));
	return m;
}

/*
 * Resolve an IANA zone name; NULL when the name is unknown or empty.
 * pg_tzset() keeps its own cache, so repeated names cost a hash lookup.
 *
 * pg_tzset() also accepts POSIX TZ strings, where "UTC+3" means three hours
 * *behind* UTC: a buyer's "UTC+3" from a shop form would put quiet hours six
 * hours off.  Outside the tz database's own area names (which have a '/'),
 * a sign or an angle bracket marks such a string; treat it as unknown.
 */
static pg_tz *
lookup_zone(text *name)
{
	char	   *cname;

	if (name == NULL || VARSIZE_ANY_EXHDR(name) == 0 ||
		VARSIZE_ANY_EXHDR(name) >= TZ_STRLEN_MAX)
		return NULL;
	cname = text_to_cstring(name);
	if (strchr(cname, '/') == NULL && strpbrk(cname, "+-<>") != NULL &&
		strcmp(cname, "GMT+0") != 0 && strcmp(cname, "GMT-0") != 0)
		return NULL;
	return pg_tzset(cname);
}

/*
 * The first instant at or after `t` that is outside the quiet window
 * [start, end) of local wall-clock minutes in `zone`.  Returns `t` itself
 * when `t` is already outside.  Daylight-saving gaps and overlaps follow
 * PostgreSQL's own rule for local times (DetermineTimeZoneOffset), and the
 * result is checked again in local time: an end time that falls in a gap
 * lands after the gap, still outside the window.
 */
static TimestampTz
quiet_window_end(TimestampTz t, pg_tz *zone, int start, int end)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			pass;

	for (pass = 0; pass < 3; pass++)
	{
		TimestampTz candidate;
		int			minute;

		if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, zone) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		minute = tm.tm_hour * 60 + tm.tm_min;
		if (!in_quiet_window(minute, start, end))
			return t;

		/* the window's end on this local day, or on the next one */
		if (minute >= end)
		{
			int			julian = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) + 1;

			j2date(julian, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
		}
		tm.tm_hour = end / 60;
		tm.tm_min = end % 60;
		tm.tm_sec = 0;
		tzoff = DetermineTimeZoneOffset(&tm, zone);
		if (tm2timestamp(&tm, 0, &tzoff, &candidate) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		/* never go backwards, whatever the zone's history does */
		t = (candidate > t) ? candidate : t + USECS_PER_MINUTE;
	}
	return t;
}

/* The quiet window to apply: the buyer's zone, or a widened fallback */
static TimestampTz
quiet_hours_deferral(FunctionCallInfo fcinfo, TimestampTz t)
{
	int			start,
				end;
	pg_tz	   *zone;

	if (!ARG_IS(ARG_QUIET_START) || !ARG_IS(ARG_QUIET_END))
		return t;				/* no quiet hours configured */
	start = minutes_arg(fcinfo, ARG_QUIET_START, "quiet_start");
	end = minutes_arg(fcinfo, ARG_QUIET_END, "quiet_end");

	zone = lookup_zone(ARG_IS(ARG_TIME_ZONE) ? PG_GETARG_TEXT_PP(ARG_TIME_ZONE) : NULL);
	if (zone == NULL)
	{
		/*
		 * Unknown zone: the shop's zone with the window widened on both
		 * sides, so a buyer somewhere else is less likely to be woken up.
		 */
		int			margin = 0;

		zone = lookup_zone(ARG_IS(ARG_FALLBACK_TIME_ZONE) ? PG_GETARG_TEXT_PP(ARG_FALLBACK_TIME_ZONE) : NULL);
		if (zone == NULL)
			zone = pg_tzset("UTC");
		if (ARG_IS(ARG_UNKNOWN_ZONE_MARGIN))
			margin = PG_GETARG_INT32(ARG_UNKNOWN_ZONE_MARGIN);
		if (margin < 0 || margin > 12 * 60)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown_zone_margin must be between 0 and 720 minutes, not %d", margin)));
		if (start != end && margin > 0)
		{
			int			quiet_length = (end - start + MINUTES_PER_DAY) % MINUTES_PER_DAY;

			if (quiet_length + 2 * margin >= MINUTES_PER_DAY - 60)
				margin = (MINUTES_PER_DAY - 60 - quiet_length) / 2;	/* keep an hour open */
			if (margin < 0)
				margin = 0;		/* already under an hour open: never narrow it */
			start = (start - margin + MINUTES_PER_DAY) % MINUTES_PER_DAY;
			end = (end + margin) % MINUTES_PER_DAY;
		}
	}
	return quiet_window_end(t, zone, start, end);
}

static StepVerdict
verdict(Decision d, const char *reason, bool stops)
{
	StepVerdict v;

	v.decision = d;
	v.reason = reason;
	v.defer_until = 0;
	v.stops_enrollment = stops;
	return v;
}

static StepVerdict
decide(FunctionCallInfo fcinfo)
{
	TimestampTz as_of = ARG_TS(ARG_AS_OF);
	TimestampTz not_before;

	/* 1. the enrollment is over */
	if (ARG_IS(ARG_CAMPAIGN_STATUS))
	{
		char	   *status = text_to_cstring(PG_GETARG_TEXT_PP(ARG_CAMPAIGN_STATUS));

		if (strcmp(status, "paused") == 0)
			return verdict(DECIDE_SKIP, "campaign_paused", false);
		if (strcmp(status, "active") != 0)
			return verdict(DECIDE_SKIP, "campaign_not_active", true);
	}
	if (ARG_IS(ARG_CAMPAIGN_EXPIRES_AT) && as_of >= ARG_TS(ARG_CAMPAIGN_EXPIRES_AT))
		return verdict(DECIDE_SKIP, "campaign_expired", true);
	if (ARG_BOOL_TRUE(ARG_HOLDOUT))
		return verdict(DECIDE_SKIP, "holdout", true);
	if (ARG_IS(ARG_LAST_ORDER_AT) && ARG_IS(ARG_SIGNAL_AT) &&
		ARG_TS(ARG_LAST_ORDER_AT) > ARG_TS(ARG_SIGNAL_AT))
		return verdict(DECIDE_SKIP, ARG_IS(ARG_CART_STATE) ? "cart_recovered" : "converted", true);
	if (ARG_IS(ARG_CART_STATE))
	{
		char	   *cart = text_to_cstring(PG_GETARG_TEXT_PP(ARG_CART_STATE));

		if (strcmp(cart, "converted") == 0)
			return verdict(DECIDE_SKIP, "cart_recovered", true);
		if (strcmp(cart, "emptied") == 0 || strcmp(cart, "gone") == 0)
			return verdict(DECIDE_SKIP, "cart_emptied", true);
		if (strcmp(cart, "changed") == 0)
			return verdict(DECIDE_SKIP, "cart_changed", true);
		if (strcmp(cart, "open") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized cart state \"%s\"", cart),
					 errhint("Use open, converted, emptied, changed, gone or NULL.")));
	}
	if (ARG_IS(ARG_LAST_COMPLAINED_AT))
		return verdict(DECIDE_SKIP, "complained", true);
	if (ARG_IS(ARG_LAST_BOUNCED_AT))
		return verdict(DECIDE_SKIP, "bounced", true);
	if (ARG_IS(ARG_CONSECUTIVE_IGNORED) && ARG_IS(ARG_SUNSET_AFTER) &&
		PG_GETARG_INT32(ARG_SUNSET_AFTER) > 0 &&
		PG_GETARG_INT32(ARG_CONSECUTIVE_IGNORED) >= PG_GETARG_INT32(ARG_SUNSET_AFTER))
		return verdict(DECIDE_SKIP, "sunset", true);

	/* 2. this step is not sent, the next one may be */
	if (ARG_BOOL_TRUE(ARG_ALREADY_SENT))
		return verdict(DECIDE_SKIP, "already_sent", false);
	if (ARG_IS(ARG_NOT_AFTER) && as_of > ARG_TS(ARG_NOT_AFTER))
		return verdict(DECIDE_SKIP, "step_expired", false);
	if (!ARG_BOOL_TRUE(ARG_CONSENT))
		return verdict(DECIDE_SKIP, "no_consent", false);
	if (ARG_IS(ARG_OFFER_PERCENT) && PG_GETARG_FLOAT8(ARG_OFFER_PERCENT) > 0 &&
		(!ARG_IS(ARG_MAX_OFFER_PERCENT) ||
		 PG_GETARG_FLOAT8(ARG_OFFER_PERCENT) > PG_GETARG_FLOAT8(ARG_MAX_OFFER_PERCENT)))
		return verdict(DECIDE_SKIP, "offer_beyond_guardrail", false);
	if (ARG_IS(ARG_IN_STOCK) && !PG_GETARG_BOOL(ARG_IN_STOCK))
		return verdict(DECIDE_SKIP, "out_of_stock", false);

	/* 3. wait */
	if (ARG_BOOL_TRUE(ARG_FACTS_PENDING))
	{
		StepVerdict v = verdict(DECIDE_DEFER, "facts_pending", false);

		v.defer_until = as_of + USECS_PER_MINUTE;
		return v;
	}
	not_before = as_of;
	if (ARG_IS(ARG_LAST_SENT_ON_CHANNEL) && ARG_IS(ARG_FREQUENCY_CAP))
	{
		TimestampTz capped = DatumGetTimestampTz(
												 DirectFunctionCall2(timestamptz_pl_interval,
																	 TimestampTzGetDatum(ARG_TS(ARG_LAST_SENT_ON_CHANNEL)),
																	 PG_GETARG_DATUM(ARG_FREQUENCY_CAP)));

		if (capped > not_before)
			not_before = capped;
	}
	if (not_before > as_of)
	{
		StepVerdict v = verdict(DECIDE_DEFER, "frequency_cap", false);

		/* the cap ends at night: wait for the morning too */
		v.defer_until = quiet_hours_deferral(fcinfo, not_before);
		return v;
	}
	not_before = quiet_hours_deferral(fcinfo, as_of);
	if (not_before > as_of)
	{
		StepVerdict v = verdict(DECIDE_DEFER, "quiet_hours", false);

		v.defer_until = not_before;
		return v;
	}
	return verdict(DECIDE_SEND, NULL, false);
}

/*
 * decide_step(as_of, campaign_status, ..., unknown_zone_margin)
 *	 RETURNS segments.step_decision (decision, reason, defer_until,
 *	 stops_enrollment).  Not strict: a NULL argument means "not known / not
 *	 applicable" and each rule says what that implies.
 */
Datum
segments_decide_step(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	StepVerdict v;

	if (PG_NARGS() != DECIDE_STEP_NARGS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("decide_step() takes %d arguments, got %d", DECIDE_STEP_NARGS, PG_NARGS())));
	if (PG_ARGISNULL(ARG_AS_OF))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("as_of must not be NULL")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("decide_step() must return a composite type")));

	v = decide(fcinfo);
	values[0] = CStringGetTextDatum(decision_names[v.decision]);
	if (v.reason)
		values[1] = CStringGetTextDatum(v.reason);
	else
		nulls[1] = true;
	if (v.decision == DECIDE_DEFER)
		values[2] = TimestampTzGetDatum(v.defer_until);
	else
		nulls[2] = true;
	values[3] = BoolGetDatum(v.stops_enrollment);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * quiet_hours_end(at, time_zone, quiet_start, quiet_end)
 *	 The first instant at or after `at` outside the quiet window in that
 *	 zone; NULL for an unknown zone.  Exposed for tests and reports.
 */
Datum
segments_quiet_hours_end(PG_FUNCTION_ARGS)
{
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(0);
	pg_tz	   *zone = lookup_zone(PG_GETARG_TEXT_PP(1));
	int			start = minutes_arg(fcinfo, 2, "quiet_start");
	int			end = minutes_arg(fcinfo, 3, "quiet_end");

	if (zone == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(quiet_window_end(at, zone, start, end));
}

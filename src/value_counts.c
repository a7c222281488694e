/*-------------------------------------------------------------------------
 *
 * value_counts.c
 *	  The value_counts type and the tie-exact quantile aggregates built on
 *	  it: ntile_breaks(), ntile_score() and buying_cycle().
 *
 * value_counts is a multiset of finite float8 values kept as sorted
 * distinct values with int64 counts.  It is a concrete varlena type, not
 * "internal", because parallel query moves aggregate states between
 * processes as datums and Citus 13 moves them between nodes as text through
 * the type's I/O functions; both need nothing else from us.
 *
 * THE TIE RULE
 *
 * With higher_is_better = true (ascending), N values and B buckets, a value
 * v scores
 *
 *		score(v) = 1 + floor(B * L(v) / N)
 *
 * where L(v) is the number of values strictly less than v.  Equal values
 * therefore always share a score, the lowest value always scores 1, and a
 * shop where 60 % of the customers ordered once gives all of them F = 1.
 * This is SQL's 1 + floor(B * (rank() OVER (ORDER BY v) - 1) / N).
 *
 * ntile_breaks() returns breaks[1..B-1] with
 *
 *		breaks[k] = the smallest observed v with B * L(v) >= k * N
 *
 * (the first value whose score exceeds k) and ntile_score() returns
 * 1 + (the number of breaks <= v).  For every observed v that is exactly
 * 1 + floor(B * L(v) / N).  When no observed value scores above k (heavy
 * ties at the top), breaks[k] is nextafter(max, +Infinity): one ulp above
 * the largest value, so no observed value reaches that score and the array
 * stays finite.  The comparison B * L(v) >= k * N is done in integers as
 * L(v) >= ceil(k * N / B) with N = q * B + r, so nothing overflows.
 *
 * With higher_is_better = false (descending; "days since the last order",
 * where fewer is better) everything is mirrored: score(v) =
 * 1 + floor(B * G(v) / N) with G(v) the number of values strictly greater
 * than v, breaks[k] is the largest observed v with B * G(v) >= k * N (so the
 * breaks are non-increasing), a value scores 1 + (the number of breaks
 * >= v), and the fallback is nextafter(min, -Infinity).
 *
 * TEXT FORMAT (what value_counts_out writes and value_counts_in accepts)
 *
 *		v1;ntile;b5;asc;1:600,2:200,3.5:1		ntile state, 5 buckets
 *		v1;ntile;b4;desc;						empty ntile state, descending
 *		v1;cycle;757382400000000:2				buying_cycle() state
 *
 * "v1" is the format version, then the kind, for ntile the bucket count
 * ("b" and 1..SEGMENTS_MAX_BUCKETS) and the direction ("asc" is
 * higher_is_better = true), then comma-separated value:count pairs.  Values
 * are written in the shortest form that reads back to the same float8
 * (independent of extra_float_digits) and must be finite and strictly
 * ascending; counts are positive decimal integers and their sum must fit in
 * int64.  buying_cycle() values are order times in microseconds since
 * 2000-01-01 and must be integers within +-2^53.  No whitespace, no
 * trailing characters.  -0 is read as 0.  The binary format (send/recv)
 * carries the same fields: version, kind and flags bytes, int32 buckets,
 * int32 pair count, then float8/int64 pairs; it is validated identically.
 *
 * IN-MEMORY LAYOUT
 *
 * A 32-byte header and then 16-byte (value, count) pairs.  The first nsorted
 * pairs are sorted, strictly ascending and distinct; pairs nsorted..nitems-1
 * are raw appends with count 1.  The capacity is not stored: it is whatever
 * VARSIZE leaves room for, so it can never disagree with the allocation.
 * (The unused slack travels with the datum, e.g. through a parallel query's
 * tuple queue; it is zeroed when allocated.)  Output functions compact a
 * copy, so the text and binary forms are always fully sorted.  A kind byte
 * (ntile or cycle) replaces a "buckets not set yet" state: every state is
 * created by a row that sets its kind, buckets and direction, so there is
 * no half-initialised state to validate, and a state of one aggregate fed
 * to another one's support functions is an error, not a silent mix-up.
 *
 * The transition functions append to the state in place, which aggregate
 * transition functions may do.  When the state is full and the unsorted
 * tail is at least as long as the sorted run, the tail is radix-sorted on
 * the float8 bit pattern, collapsed to counts and merged into the run in
 * place; every appended value is sorted exactly once.  When the state is
 * still too full it is copied into one twice as big, allocated in the
 * current (per-tuple) memory context: nodeAgg sees a new pointer, copies the
 * value into the aggregate context and frees the old state, so we neither
 * repalloc nor free the old state ourselves.  Small states grow from 8 pairs
 * up to 4096 without compacting, so a per-customer buying_cycle() costs a
 * couple of hundred bytes and big ones compact at least 2048 values at a
 * time.  A state is limited to 1 GB (about 67 million distinct values).
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "common/shortest_dec.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/timestamp.h"

typedef struct VCPair
{
	float8		value;
	int64		count;
} VCPair;

typedef struct ValueCounts
{
	int32		vl_len_;		/* varlena header (do not touch directly) */
	uint8		version;		/* VC_VERSION */
	uint8		kind;			/* VC_KIND_NTILE or VC_KIND_CYCLE */
	uint8		flags;			/* VC_FLAG_DESCENDING */
	uint8		reserved;		/* zero */
	int32		buckets;		/* ntile: 1..SEGMENTS_MAX_BUCKETS; cycle: 0 */
	int32		nitems;			/* pairs in use */
	int32		nsorted;		/* leading pairs sorted and distinct */
	int32		compact_cap;	/* in-memory hint, see vc_make_room() */
	int64		total;			/* sum of all counts */
	VCPair		pairs[FLEXIBLE_ARRAY_MEMBER];
} ValueCounts;

StaticAssertDecl(offsetof(ValueCounts, pairs) == 32,
				 "value_counts header must stay 32 bytes");
StaticAssertDecl(sizeof(VCPair) == 16, "value_counts pairs must be 16 bytes");

#define VC_VERSION			1
#define VC_KIND_NTILE		1
#define VC_KIND_CYCLE		2
#define VC_FLAG_DESCENDING	0x01

#define VC_HEADER_SIZE		offsetof(ValueCounts, pairs)
#define VC_MAX_PAIRS		((int32) ((MaxAllocSize - VC_HEADER_SIZE) / sizeof(VCPair)))
#define VC_INITIAL_CAPACITY	8
/* below this capacity a full state grows instead of compacting */
#define VC_COMPACT_MIN		4096
/* at the size limit, give up when compaction frees less than this */
#define VC_MIN_FREE_AT_LIMIT (VC_MAX_PAIRS / 16)
/* sorts of at most this many keys use insertion sort */
#define VC_INSERTION_SORT_MAX 48

/* order times are exact in a float8 within +-2^53 microseconds */
#define VC_CYCLE_LIMIT		INT64CONST(9007199254740992)

#define VC_SIGN_BIT			UINT64CONST(0x8000000000000000)

PG_FUNCTION_INFO_V1(segments_value_counts_in);
PG_FUNCTION_INFO_V1(segments_value_counts_out);
PG_FUNCTION_INFO_V1(segments_value_counts_recv);
PG_FUNCTION_INFO_V1(segments_value_counts_send);
PG_FUNCTION_INFO_V1(segments_ntile_breaks_accum);
PG_FUNCTION_INFO_V1(segments_value_counts_combine);
PG_FUNCTION_INFO_V1(segments_ntile_breaks_final);
PG_FUNCTION_INFO_V1(segments_ntile_score);
PG_FUNCTION_INFO_V1(segments_buying_cycle_accum);
PG_FUNCTION_INFO_V1(segments_buying_cycle_final);


/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------
 */

/* pairs the allocation has room for */
static inline int32
vc_capacity(const ValueCounts *vc)
{
	return (int32) ((VARSIZE(vc) - VC_HEADER_SIZE) / sizeof(VCPair));
}

/* the aggregate a state belongs to, for messages */
static const char *
vc_kind_function(const ValueCounts *vc)
{
	return vc->kind == VC_KIND_CYCLE ? "buying_cycle()" : "ntile_breaks()";
}

/*
 * A new empty state with room for capacity pairs, in CurrentMemoryContext.
 * Zeroed so that no uninitialised byte ever leaves the backend.
 */
static ValueCounts *
vc_alloc(int32 capacity, uint8 kind, uint8 flags, int32 buckets)
{
	Size		size = VC_HEADER_SIZE + (Size) capacity * sizeof(VCPair);
	ValueCounts *vc;

	Assert(capacity >= 0 && capacity <= VC_MAX_PAIRS);
	vc = (ValueCounts *) palloc0(size);
	SET_VARSIZE(vc, size);
	vc->version = VC_VERSION;
	vc->kind = kind;
	vc->flags = flags;
	vc->buckets = buckets;
	return vc;
}

/* A copy of vc with a different capacity (at least vc->nitems). */
static ValueCounts *
vc_resized_copy(const ValueCounts *vc, int32 capacity)
{
	ValueCounts *res = vc_alloc(capacity, vc->kind, vc->flags, vc->buckets);

	Assert(capacity >= vc->nitems);
	res->nitems = vc->nitems;
	res->nsorted = vc->nsorted;
	res->compact_cap = vc->compact_cap;
	res->total = vc->total;
	memcpy(res->pairs, vc->pairs, (Size) vc->nitems * sizeof(VCPair));
	return res;
}

/*
 * Cheap structural checks on every state we are handed.  States only come
 * from our own functions or from value_counts_in/recv, so a failure here
 * means corruption, but a bounds violation must not turn into a crash.
 */
static void
vc_check(const ValueCounts *vc)
{
	if (VARSIZE(vc) < VC_HEADER_SIZE ||
		vc->version != VC_VERSION ||
		(vc->kind != VC_KIND_NTILE && vc->kind != VC_KIND_CYCLE) ||
		vc->nsorted < 0 || vc->nsorted > vc->nitems ||
		vc->nitems > vc_capacity(vc) ||
		vc->total < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupted value_counts state")));
}

/* Detoast (if needed) and check a value_counts datum. */
static inline ValueCounts *
vc_get(Datum d)
{
	struct varlena *p = (struct varlena *) DatumGetPointer(d);

	if (VARATT_IS_EXTENDED(p))
		p = pg_detoast_datum(p);
	vc_check((ValueCounts *) p);
	return (ValueCounts *) p;
}

/* in-place updates are only allowed on an aggregate's own state */
static void
vc_require_aggregate(FunctionCallInfo fcinfo, const char *fname)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s called in non-aggregate context", fname),
				 errhint("It is a support function of the segments aggregates; call the aggregate instead.")));
}

static void pg_attribute_noreturn()
vc_too_many_values(const ValueCounts *vc, int64 ndistinct)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s has too many distinct values", vc_kind_function(vc)),
			 errdetail("The aggregate state needs room for at least " INT64_FORMAT " distinct values; a state is limited to 1 GB, about %d distinct values at 16 bytes each.",
					   ndistinct, VC_MAX_PAIRS),
			 vc->kind == VC_KIND_CYCLE ?
			 errhint("Truncate the order times, for example to whole seconds, before aggregating.") :
			 errhint("Round the values before aggregating, for example money to whole cents.")));
}

/*
 * Order-preserving map of finite float8 values (with -0 already folded into
 * 0) onto uint64, so that sorting the keys as integers sorts the values.
 */
static inline uint64
vc_key(float8 v)
{
	uint64		u;

	memcpy(&u, &v, sizeof(u));
	return (u & VC_SIGN_BIT) ? ~u : (u | VC_SIGN_BIT);
}

static inline float8
vc_unkey(uint64 k)
{
	uint64		u = (k & VC_SIGN_BIT) ? (k & ~VC_SIGN_BIT) : ~k;
	float8		v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

/*
 * Sort n uint64 keys.  LSD radix sort, 8-bit digits (11-bit from 64k keys
 * on, 6 passes instead of 8), skipping every digit in which all keys agree
 * (most of them for small integers such as order counts or days); insertion
 * sort for tiny inputs.  Returns whichever of keys and scratch holds the
 * result.
 */
static uint64 *
vc_sort_keys(uint64 *keys, uint64 *scratch, int32 n)
{
	uint32		counts[8][1 << 11];
	int			shifts[8];
	int			npasses = 0;
	int			bits = n >= 65536 ? 11 : 8;
	uint32		mask = ((uint32) 1 << bits) - 1;
	uint64		all_or = 0;
	uint64		all_and = ~UINT64CONST(0);
	uint64		varying;
	uint64	   *src = keys;
	uint64	   *dst = scratch;

	if (n <= VC_INSERTION_SORT_MAX)
	{
		for (int32 i = 1; i < n; i++)
		{
			uint64		k = keys[i];
			int32		j = i;

			while (j > 0 && keys[j - 1] > k)
			{
				keys[j] = keys[j - 1];
				j--;
			}
			keys[j] = k;
		}
		return keys;
	}

	for (int32 i = 0; i < n; i++)
	{
		all_or |= keys[i];
		all_and &= keys[i];
	}
	varying = all_or ^ all_and;
	for (int shift = 0; shift < 64; shift += bits)
		if ((varying >> shift) & mask)
			shifts[npasses++] = shift;

	for (int p = 0; p < npasses; p++)
		memset(counts[p], 0, sizeof(uint32) * (mask + 1));
	for (int32 i = 0; i < n; i++)
	{
		uint64		k = keys[i];

		for (int p = 0; p < npasses; p++)
			counts[p][(k >> shifts[p]) & mask]++;
	}

	for (int p = 0; p < npasses; p++)
	{
		uint32	   *c = counts[p];
		int			shift = shifts[p];
		uint32		sum = 0;
		uint64	   *tmp;

		for (uint32 d = 0; d <= mask; d++)
		{
			uint32		t = c[d];

			c[d] = sum;
			sum += t;
		}
		for (int32 i = 0; i < n; i++)
		{
			uint64		k = src[i];

			dst[c[(k >> shift) & mask]++] = k;
		}
		tmp = src;
		src = dst;
		dst = tmp;
	}
	return src;
}

/*
 * Merge the sorted distinct pairs src[0..m) into the sorted run of vc, in
 * place.  vc->nsorted + m must fit in the capacity and src must not point
 * into vc.  Merging backwards from slot nsorted + m - 1 never overwrites an
 * unread pair of the run: while src has k unread pairs the write position
 * is at least k slots above the run's next unread pair.  Equal values are
 * collapsed, which leaves a gap that one memmove closes.
 *
 * Counts cannot overflow: callers keep vc->total, the sum of everything
 * merged, within int64.
 */
static void
vc_merge_inplace(ValueCounts *vc, const VCPair *src, int32 m)
{
	VCPair	   *p = vc->pairs;
	int32		i = vc->nsorted - 1;
	int32		j = m - 1;
	int32		top = vc->nsorted + m - 1;
	int32		w = top;
	int32		nhigh;

	Assert(vc->nsorted + (int64) m <= vc_capacity(vc));
	/* branch-free body: with random values the branches would mispredict */
	while (i >= 0 && j >= 0)
	{
		float8		x = p[i].value;
		float8		y = src[j].value;
		int64		cx = p[i].count;
		int64		cy = src[j].count;
		int			takex = x >= y;
		int			takey = x <= y;

		p[w].value = takex ? x : y;
		p[w].count = (takex ? cx : 0) + (takey ? cy : 0);
		w--;
		i -= takex;
		j -= takey;
	}
	if (j >= 0)
	{
		memcpy(&p[w - j], src, (Size) (j + 1) * sizeof(VCPair));
		w -= j + 1;
	}
	/* p[0..i] never moved; the merged upper part is p[w+1..top] */
	nhigh = top - w;
	if (w > i)
		memmove(&p[i + 1], &p[w + 1], (Size) nhigh * sizeof(VCPair));
	vc->nsorted = vc->nitems = i + 1 + nhigh;
}

/*
 * Sort the unsorted tail of vc, collapse it into (value, count) pairs and
 * merge it into the sorted run, in place.  Keeps the multiset and total.
 *
 * The scratch buffer holds 2 * ntail keys; once the keys are sorted into
 * its upper half, the run-length pairs are written from its start, never
 * catching up with the next unread key.  (PostgreSQL builds with
 * -fno-strict-aliasing, which makes this type punning well defined.)
 */
static void
vc_compact(ValueCounts *vc)
{
	int32		ns = vc->nsorted;
	int32		nt = vc->nitems - ns;
	uint64	   *buf;
	uint64	   *sorted;
	VCPair	   *tail;
	int32		m = 0;

	if (nt <= 0)
		return;

	buf = (uint64 *) palloc(sizeof(uint64) * 2 * (Size) nt);
	for (int32 i = 0; i < nt; i++)
		buf[i] = vc_key(vc->pairs[ns + i].value);
	sorted = vc_sort_keys(buf, buf + nt, nt);
	if (sorted != buf + nt)
	{
		memcpy(buf + nt, sorted, sizeof(uint64) * (Size) nt);
		sorted = buf + nt;
	}

	tail = (VCPair *) buf;
	for (int32 i = 0; i < nt;)
	{
		uint64		k = sorted[i];
		int32		j = i + 1;

		while (j < nt && sorted[j] == k)
			j++;
		tail[m].value = vc_unkey(k);
		tail[m].count = j - i;
		m++;
		i = j;
	}

	vc->nitems = ns;
	vc_merge_inplace(vc, tail, m);
	pfree(buf);
}

/* vc itself if it is fully sorted, else a compacted copy; vc is not changed. */
static const ValueCounts *
vc_compacted(const ValueCounts *vc)
{
	ValueCounts *copy;

	if (vc->nsorted == vc->nitems)
		return vc;
	copy = vc_resized_copy(vc, vc->nitems);
	vc_compact(copy);
	return copy;
}

/*
 * The compacted state for a final function.  Inside an aggregate the state
 * is compacted in place: the multiset does not change, so a window
 * aggregate can go on adding rows and call us again.  Called directly from
 * SQL the datum may point into a shared buffer, so a copy is compacted.
 */
static const ValueCounts *
vc_compacted_for_final(FunctionCallInfo fcinfo, ValueCounts *vc)
{
	if (vc->nsorted == vc->nitems)
		return vc;
	if (AggCheckCallContext(fcinfo, NULL))
	{
		vc_compact(vc);
		return vc;
	}
	return vc_compacted(vc);
}

/*
 * Merge sorted distinct pairs src[0..m) into the compacted state vc.  In
 * place when it fits, else into a new state (in CurrentMemoryContext) that
 * is returned; the caller sets total.
 */
static ValueCounts *
vc_merge(ValueCounts *vc, const VCPair *src, int32 m)
{
	int64		need = (int64) vc->nitems + m;
	int64		cap = vc_capacity(vc);
	int32		newcap;
	ValueCounts *res;
	const VCPair *a = vc->pairs;
	int32		na = vc->nitems;
	int32		i = 0,
				j = 0,
				w = 0;

	Assert(vc->nsorted == vc->nitems);
	if (need <= cap)
	{
		vc_merge_inplace(vc, src, m);
		return vc;
	}

	newcap = (int32) Min(Max(need, 2 * cap), (int64) VC_MAX_PAIRS);
	res = vc_alloc(newcap, vc->kind, vc->flags, vc->buckets);
	while (i < na || j < m)
	{
		if (w >= newcap)
			vc_too_many_values(vc, (int64) w + 1);
		if (j >= m || (i < na && a[i].value < src[j].value))
			res->pairs[w++] = a[i++];
		else if (i >= na || src[j].value < a[i].value)
			res->pairs[w++] = src[j++];
		else
		{
			res->pairs[w].value = a[i].value;
			res->pairs[w].count = a[i].count + src[j].count;
			w++;
			i++;
			j++;
		}
	}
	res->nitems = res->nsorted = w;
	res->total = vc->total;
	return res;
}

/*
 * Make room for at least one more pair.  Full states that are big enough
 * compact when the unsorted tail is at least as long as the sorted run (so
 * compaction costs O(1) amortised per value plus the sort) and grow x2 when
 * compaction leaves them more than half full.  Returns the state to use,
 * which is a new allocation when it grew.
 *
 * Compacting mostly distinct values frees nothing and costs a merge, so when
 * a compaction frees less than an eighth of the tail the next one waits
 * until the state has grown 4x (compact_cap).  Memory stays within 4x of
 * what eager compaction would use, and all-distinct input is sorted once
 * and merged about once instead of twice.
 */
static ValueCounts *
vc_make_room(ValueCounts *vc)
{
	int32		cap = vc_capacity(vc);
	int32		ntail = vc->nitems - vc->nsorted;
	int32		newcap;

	if (cap >= VC_MAX_PAIRS ||
		(cap >= VC_COMPACT_MIN && ntail >= vc->nsorted && cap >= vc->compact_cap))
	{
		int32		before = vc->nitems;

		vc_compact(vc);
		if (before - vc->nitems < ntail / 8)
			vc->compact_cap = (int32) Min((int64) cap * 4, (int64) VC_MAX_PAIRS);
		else
			vc->compact_cap = 0;
	}

	if (cap >= VC_COMPACT_MIN && vc->nitems <= cap / 2)
		return vc;

	if (cap >= VC_MAX_PAIRS)
	{
		/* compacted above; crawling on with a nearly full state is worse */
		if (cap - vc->nitems >= VC_MIN_FREE_AT_LIMIT)
			return vc;
		vc_too_many_values(vc, vc->nitems);
	}

	newcap = (int32) Min(Max((int64) cap * 2, (int64) VC_INITIAL_CAPACITY),
						 (int64) VC_MAX_PAIRS);
	return vc_resized_copy(vc, newcap);
}

/* Append one value with count 1; returns the (possibly new) state. */
static inline ValueCounts *
vc_append(ValueCounts *vc, float8 v)
{
	VCPair	   *p;

	if (unlikely(vc->nitems >= vc_capacity(vc)))
		vc = vc_make_room(vc);
	if (unlikely(vc->total == PG_INT64_MAX))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s value count out of range", vc_kind_function(vc))));
	p = &vc->pairs[vc->nitems++];
	p->value = v;
	p->count = 1;
	vc->total++;
	return vc;
}


/* ------------------------------------------------------------------------
 * Validation shared by value_counts_in and value_counts_recv
 * ------------------------------------------------------------------------
 */

static void pg_attribute_noreturn()
vc_bad_input(int code, const char *detail)
{
	if (code == ERRCODE_INVALID_TEXT_REPRESENTATION)
		ereport(ERROR,
				(errcode(code),
				 errmsg("invalid input syntax for type value_counts"),
				 errdetail_internal("%s", detail)));
	else
		ereport(ERROR,
				(errcode(code),
				 errmsg("invalid external binary data for type value_counts"),
				 errdetail_internal("%s", detail)));
}

static char *
vc_format_value(float8 v)
{
	char	   *buf = palloc(DOUBLE_SHORTEST_DECIMAL_LEN);

	double_to_shortest_decimal_buf(v, buf);
	return buf;
}

/* version, kind, flags and buckets of an incoming state */
static void
vc_validate_header(int version, int kind, int flags, int64 buckets, int code)
{
	if (version != VC_VERSION)
		vc_bad_input(code, psprintf("Format version %d is not supported; this build reads version %d.",
									version, VC_VERSION));
	if (kind == VC_KIND_NTILE)
	{
		if ((flags & ~VC_FLAG_DESCENDING) != 0)
			vc_bad_input(code, psprintf("Flags %d are not valid for an ntile state.", flags));
		if (buckets < 1 || buckets > SEGMENTS_MAX_BUCKETS)
			vc_bad_input(code, psprintf("The bucket count must be between 1 and %d.",
										SEGMENTS_MAX_BUCKETS));
	}
	else if (kind == VC_KIND_CYCLE)
	{
		if (flags != 0)
			vc_bad_input(code, psprintf("Flags %d are not valid for a buying cycle state.", flags));
		if (buckets != 0)
			vc_bad_input(code, "A buying cycle state has no bucket count.");
	}
	else
		vc_bad_input(code, psprintf("State kind %d is unknown.", kind));
}

/* the pairs of an incoming state; sets total and folds -0 into 0 */
static void
vc_validate_pairs(ValueCounts *vc, int code)
{
	int64		total = 0;

	for (int32 i = 0; i < vc->nitems; i++)
	{
		VCPair	   *p = &vc->pairs[i];

		if (isnan(p->value) || isinf(p->value))
			vc_bad_input(code, psprintf("Value %d is NaN or infinite; values must be finite.", i + 1));
		if (p->value == 0.0)
			p->value = 0.0;
		if (i > 0 && !(p->value > vc->pairs[i - 1].value))
			vc_bad_input(code, psprintf("Value %d (%s) does not exceed the value before it (%s); values must be strictly ascending.",
										i + 1, vc_format_value(p->value),
										vc_format_value(vc->pairs[i - 1].value)));
		if (vc->kind == VC_KIND_CYCLE &&
			(p->value != floor(p->value) ||
			 p->value < (float8) -VC_CYCLE_LIMIT ||
			 p->value > (float8) VC_CYCLE_LIMIT))
			vc_bad_input(code, psprintf("Value %d (%s) is not a whole number of microseconds within 2^53 of 2000-01-01.",
										i + 1, vc_format_value(p->value)));
		if (p->count <= 0)
			vc_bad_input(code, psprintf("Count %d is " INT64_FORMAT "; counts must be positive.",
										i + 1, p->count));
		if (pg_add_s64_overflow(total, p->count, &total))
			vc_bad_input(code, "The counts add up to more than a bigint can hold.");
	}
	vc->total = total;
}


/* ------------------------------------------------------------------------
 * Text and binary I/O
 * ------------------------------------------------------------------------
 */

/* parse an unsigned decimal integer at *pp; false on no digits or overflow */
static bool
vc_parse_uint(const char **pp, int64 *result)
{
	const char *p = *pp;
	int64		v = 0;

	if (*p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
	{
		if (pg_mul_s64_overflow(v, 10, &v) ||
			pg_add_s64_overflow(v, *p - '0', &v))
			return false;
		p++;
	}
	*pp = p;
	*result = v;
	return true;
}

static void pg_attribute_noreturn()
vc_syntax_error(const char *str, const char *p, const char *what)
{
	vc_bad_input(ERRCODE_INVALID_TEXT_REPRESENTATION,
				 psprintf("Expected %s at character %d.", what, (int) (p - str) + 1));
}

/*
 * Text input.  Strict: the grammar in the file header and nothing else,
 * then the same checks as value_counts_recv.  A parsed state has no slack.
 */
Datum
segments_value_counts_in(PG_FUNCTION_ARGS)
{
	const char *str = PG_GETARG_CSTRING(0);
	const char *p = str;
	int64		version;
	int			kind;
	int			flags = 0;
	int64		buckets = 0;
	int64		npairs = 0;
	ValueCounts *vc;

	if (*p != 'v')
		vc_syntax_error(str, p, "\"v1;\"");
	p++;
	if (!vc_parse_uint(&p, &version) || version > PG_INT32_MAX)
		vc_syntax_error(str, p, "a version number");
	if (*p != ';')
		vc_syntax_error(str, p, "\";\" after the version");
	p++;
	if (version != VC_VERSION)
		vc_validate_header((int) version, 0, 0, 0, ERRCODE_INVALID_TEXT_REPRESENTATION);

	if (strncmp(p, "ntile;", 6) == 0)
	{
		kind = VC_KIND_NTILE;
		p += 6;
		if (*p != 'b')
			vc_syntax_error(str, p, "\"b\" and a bucket count");
		p++;
		if (!vc_parse_uint(&p, &buckets))
			vc_syntax_error(str, p, "a bucket count");
		if (*p != ';')
			vc_syntax_error(str, p, "\";\" after the bucket count");
		p++;
		if (strncmp(p, "asc;", 4) == 0)
			p += 4;
		else if (strncmp(p, "desc;", 5) == 0)
		{
			flags = VC_FLAG_DESCENDING;
			p += 5;
		}
		else
			vc_syntax_error(str, p, "\"asc;\" or \"desc;\"");
	}
	else if (strncmp(p, "cycle;", 6) == 0)
	{
		kind = VC_KIND_CYCLE;
		p += 6;
	}
	else
		vc_syntax_error(str, p, "\"ntile;\" or \"cycle;\"");
	vc_validate_header((int) version, kind, flags, buckets,
					   ERRCODE_INVALID_TEXT_REPRESENTATION);

	/* size the state: one pair, plus one per comma */
	if (*p != '\0')
	{
		npairs = 1;
		for (const char *q = p; *q; q++)
			if (*q == ',')
				npairs++;
	}
	if (npairs > VC_MAX_PAIRS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value_counts input has too many values"),
				 errdetail("The input has " INT64_FORMAT " values; a state is limited to %d.",
						   npairs, VC_MAX_PAIRS)));
	vc = vc_alloc((int32) npairs, (uint8) kind, (uint8) flags, (int32) buckets);

	for (int32 i = 0; i < npairs; i++)
	{
		const char *start = p;
		char	   *end;
		float8		v;
		int64		count;

		if (i > 0)
		{
			if (*p != ',')
				vc_syntax_error(str, p, "\",\" between pairs");
			p++;
			start = p;
		}

		/* -?digits(.digits)?([eE][+-]?digits)? and nothing strtod adds */
		if (*p == '-')
			p++;
		if (*p < '0' || *p > '9')
			vc_syntax_error(str, p, "a number");
		while (*p >= '0' && *p <= '9')
			p++;
		if (*p == '.')
		{
			p++;
			if (*p < '0' || *p > '9')
				vc_syntax_error(str, p, "digits after the decimal point");
			while (*p >= '0' && *p <= '9')
				p++;
		}
		if (*p == 'e' || *p == 'E')
		{
			p++;
			if (*p == '+' || *p == '-')
				p++;
			if (*p < '0' || *p > '9')
				vc_syntax_error(str, p, "digits in the exponent");
			while (*p >= '0' && *p <= '9')
				p++;
		}
		errno = 0;
		v = strtod(start, &end);
		if (end != p)
			vc_syntax_error(str, start, "a number");
		/* like float8in: underflow to a denormal is fine, to zero is not */
		if (errno == ERANGE && (v == 0.0 || isinf(v)))
			vc_bad_input(ERRCODE_INVALID_TEXT_REPRESENTATION,
						 psprintf("Value %d at character %d is out of range for type double precision.",
								  i + 1, (int) (start - str) + 1));

		if (*p != ':')
			vc_syntax_error(str, p, "\":\" after the value");
		p++;
		if (!vc_parse_uint(&p, &count))
			vc_syntax_error(str, p, "a count that fits in a bigint");

		vc->pairs[i].value = v;
		vc->pairs[i].count = count;
	}
	if (*p != '\0')
		vc_syntax_error(str, p, "the end of the input");

	vc->nitems = vc->nsorted = (int32) npairs;
	vc_validate_pairs(vc, ERRCODE_INVALID_TEXT_REPRESENTATION);
	PG_RETURN_POINTER(vc);
}

/*
 * Text output: the exact text form, from a compacted copy so the state is
 * never changed and never printed unsorted.  Values use the shortest
 * round-trip representation regardless of extra_float_digits.
 */
Datum
segments_value_counts_out(PG_FUNCTION_ARGS)
{
	const ValueCounts *vc = vc_compacted(vc_get(PG_GETARG_DATUM(0)));
	StringInfoData s;
	char		buf[Max(DOUBLE_SHORTEST_DECIMAL_LEN, MAXINT8LEN + 1)];

	initStringInfo(&s);
	if (vc->kind == VC_KIND_NTILE)
		appendStringInfo(&s, "v%d;ntile;b%d;%s;", VC_VERSION, vc->buckets,
						 (vc->flags & VC_FLAG_DESCENDING) ? "desc" : "asc");
	else
		appendStringInfo(&s, "v%d;cycle;", VC_VERSION);

	for (int32 i = 0; i < vc->nitems; i++)
	{
		int			len;

		if (i > 0)
			appendStringInfoChar(&s, ',');
		len = double_to_shortest_decimal_bufn(vc->pairs[i].value, buf);
		appendBinaryStringInfo(&s, buf, len);
		appendStringInfoChar(&s, ':');
		len = pg_lltoa(vc->pairs[i].count, buf);
		appendBinaryStringInfo(&s, buf, len);
	}
	PG_RETURN_CSTRING(s.data);
}

/*
 * Binary input: version, kind, flags (bytes), buckets, pair count (int32),
 * then float8 value / int64 count pairs.  Validated exactly like text
 * input; the pair count must match the bytes that are left.
 */
Datum
segments_value_counts_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			version;
	int			kind;
	int			flags;
	int32		buckets;
	int32		npairs;
	ValueCounts *vc;

	if (buf->len - buf->cursor < 1)
		vc_bad_input(ERRCODE_INVALID_BINARY_REPRESENTATION, "The data is empty.");
	version = pq_getmsgbyte(buf);
	if (version != VC_VERSION)
		vc_validate_header(version, 0, 0, 0, ERRCODE_INVALID_BINARY_REPRESENTATION);
	if (buf->len - buf->cursor < 2 + 4 + 4)
		vc_bad_input(ERRCODE_INVALID_BINARY_REPRESENTATION,
					 "The header is truncated.");
	kind = pq_getmsgbyte(buf);
	flags = pq_getmsgbyte(buf);
	buckets = (int32) pq_getmsgint(buf, 4);
	npairs = (int32) pq_getmsgint(buf, 4);
	vc_validate_header(version, kind, flags, buckets,
					   ERRCODE_INVALID_BINARY_REPRESENTATION);
	if (npairs < 0 || npairs > VC_MAX_PAIRS ||
		(int64) npairs * 16 != (int64) (buf->len - buf->cursor))
		vc_bad_input(ERRCODE_INVALID_BINARY_REPRESENTATION,
					 psprintf("The pair count %d does not match the %d bytes that follow the header.",
							  npairs, buf->len - buf->cursor));

	vc = vc_alloc(npairs, (uint8) kind, (uint8) flags, buckets);
	for (int32 i = 0; i < npairs; i++)
	{
		vc->pairs[i].value = pq_getmsgfloat8(buf);
		vc->pairs[i].count = pq_getmsgint64(buf);
	}
	vc->nitems = vc->nsorted = npairs;
	vc_validate_pairs(vc, ERRCODE_INVALID_BINARY_REPRESENTATION);
	PG_RETURN_POINTER(vc);
}

/* Binary output, from a compacted copy like the text output. */
Datum
segments_value_counts_send(PG_FUNCTION_ARGS)
{
	const ValueCounts *vc = vc_compacted(vc_get(PG_GETARG_DATUM(0)));
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, VC_VERSION);
	pq_sendbyte(&buf, vc->kind);
	pq_sendbyte(&buf, vc->flags);
	pq_sendint32(&buf, vc->buckets);
	pq_sendint32(&buf, vc->nitems);
	for (int32 i = 0; i < vc->nitems; i++)
	{
		pq_sendfloat8(&buf, vc->pairs[i].value);
		/* pq_sendint64, not pq_sendint8: the latter sends one byte */
		pq_sendint64(&buf, vc->pairs[i].count);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}


/* ------------------------------------------------------------------------
 * ntile_breaks() and ntile_score()
 * ------------------------------------------------------------------------
 */

/*
 * Transition function of both ntile_breaks() overloads (PG_NARGS() tells
 * them apart).  The per-row path is an append to the state in place; the
 * bucket count and direction are checked on every row, NULL rows included,
 * so a bad argument fails the same way whatever the data.
 */
Datum
segments_ntile_breaks_accum(PG_FUNCTION_ARGS)
{
	ValueCounts *vc = NULL;
	int32		buckets;
	uint8		flags = 0;
	float8		v;

	vc_require_aggregate(fcinfo, "ntile_breaks_accum()");

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_breaks() bucket count must not be null")));
	buckets = PG_GETARG_INT32(2);
	if (buckets < 1 || buckets > SEGMENTS_MAX_BUCKETS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_breaks() bucket count must be between 1 and %d",
						SEGMENTS_MAX_BUCKETS),
				 errdetail("The bucket count was %d.", buckets)));
	if (PG_NARGS() > 3)
	{
		if (PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_breaks() higher_is_better must not be null"),
					 errhint("Pass true when higher values are better, false when lower values are better.")));
		if (!PG_GETARG_BOOL(3))
			flags = VC_FLAG_DESCENDING;
	}

	if (!PG_ARGISNULL(0))
	{
		vc = vc_get(PG_GETARG_DATUM(0));
		if (unlikely(vc->kind != VC_KIND_NTILE))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_breaks_accum() was given a buying_cycle() state")));
		if (unlikely(vc->buckets != buckets))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_breaks() bucket count must be the same for every row"),
					 errdetail("The aggregate started with %d buckets and a row asks for %d.",
							   vc->buckets, buckets)));
		if (unlikely(vc->flags != flags))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_breaks() higher_is_better must be the same for every row"),
					 errdetail("The aggregate started with higher_is_better = %s and a row asks for %s.",
							   vc->flags ? "false" : "true", flags ? "false" : "true")));
	}

	if (PG_ARGISNULL(1))
	{
		if (vc == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(vc);
	}

	v = PG_GETARG_FLOAT8(1);
	if (unlikely(isnan(v) || isinf(v)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_breaks() cannot rank NaN or infinite values"),
				 errhint("Filter them out or map them to NULL, for example with NULLIF(value, 'NaN').")));
	if (v == 0.0)
		v = 0.0;				/* fold -0 into 0: equal values, one key */

	if (vc == NULL)
		vc = vc_alloc(VC_INITIAL_CAPACITY, VC_KIND_NTILE, flags, buckets);
	PG_RETURN_POINTER(vc_append(vc, v));
}

/*
 * Combine function of all value_counts aggregates (parallel query, Citus).
 * Modifies the first state in place when it has room, which combine
 * functions may do like transition functions.  When the first state is
 * NULL we return a compacted copy of the second made in the current
 * context: nodeAgg copies any new pointer into the aggregate context itself
 * (a copy made there would only leak until the group ends).
 */
Datum
segments_value_counts_combine(PG_FUNCTION_ARGS)
{
	ValueCounts *a;
	ValueCounts *b;
	const ValueCounts *bc;
	int64		total;

	vc_require_aggregate(fcinfo, "value_counts_combine()");

	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	}
	b = vc_get(PG_GETARG_DATUM(1));
	if (PG_ARGISNULL(0))
	{
		if (b->nsorted == b->nitems)
			PG_RETURN_POINTER(vc_resized_copy(b, b->nitems));
		PG_RETURN_POINTER(vc_compacted(b));
	}
	a = vc_get(PG_GETARG_DATUM(0));

	if (a->kind != b->kind)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot combine an ntile_breaks() state with a buying_cycle() state")));
	if (a->buckets != b->buckets)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot combine ntile_breaks() states with different bucket counts"),
				 errdetail("One state has %d buckets and the other %d.",
						   a->buckets, b->buckets)));
	if (a->flags != b->flags)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot combine ntile_breaks() states with different higher_is_better")));
	if (pg_add_s64_overflow(a->total, b->total, &total))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s value count out of range", vc_kind_function(a))));

	if (a == b)
		b = vc_resized_copy(b, b->nitems);
	vc_compact(a);
	bc = vc_compacted(b);
	a = vc_merge(a, bc->pairs, bc->nitems);
	a->total = total;
	PG_RETURN_POINTER(a);
}

/*
 * Final function of ntile_breaks(): the B - 1 breakpoints of the tie rule,
 * found in one pass over the compacted state.
 */
Datum
segments_ntile_breaks_final(PG_FUNCTION_ARGS)
{
	const ValueCounts *vc = vc_get(PG_GETARG_DATUM(0));
	int32		nb;
	int32		n;
	int64		N;
	int64		q;
	int64		r;
	Datum	   *breaks;
	const VCPair *p;

	if (vc->kind != VC_KIND_NTILE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_breaks_final() was given a buying_cycle() state")));
	if (vc->total == 0)
		PG_RETURN_NULL();

	vc = vc_compacted_for_final(fcinfo, (ValueCounts *) vc);
	p = vc->pairs;
	n = vc->nitems;
	nb = vc->buckets;
	N = vc->total;
	q = N / nb;
	r = N % nb;
	breaks = (Datum *) palloc(sizeof(Datum) * Max(nb - 1, 1));

	if (!(vc->flags & VC_FLAG_DESCENDING))
	{
		int32		i = 0;
		int64		below = 0;	/* L(p[i].value) */

		for (int32 k = 1; k < nb; k++)
		{
			/* B * L >= k * N  <=>  L >= ceil(k * N / B) */
			int64		t = k * q + (k * r + nb - 1) / nb;

			while (i < n && below < t)
				below += p[i++].count;
			if (i < n)
				breaks[k - 1] = Float8GetDatum(p[i].value);
			else
			{
				float8		b = nextafter(p[n - 1].value, get_float8_infinity());

				if (isinf(b))
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("ntile_breaks() cannot place a breakpoint above the largest float8"),
							 errdetail("The top buckets are empty and the largest value is the largest finite float8."),
							 errhint("Scale the values down before aggregating.")));
				breaks[k - 1] = Float8GetDatum(b);
			}
		}
	}
	else
	{
		int32		i = n - 1;
		int64		above = 0;	/* G(p[i].value) */

		for (int32 k = 1; k < nb; k++)
		{
			int64		t = k * q + (k * r + nb - 1) / nb;

			while (i >= 0 && above < t)
				above += p[i--].count;
			if (i >= 0)
				breaks[k - 1] = Float8GetDatum(p[i].value);
			else
			{
				float8		b = nextafter(p[0].value, -get_float8_infinity());

				if (isinf(b))
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("ntile_breaks() cannot place a breakpoint below the smallest float8"),
							 errdetail("The top buckets are empty and the smallest value is the smallest finite float8."),
							 errhint("Scale the values down before aggregating.")));
				breaks[k - 1] = Float8GetDatum(b);
			}
		}
	}

	if (nb == 1)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(FLOAT8OID));
	PG_RETURN_ARRAYTYPE_P(construct_array(breaks, nb - 1, FLOAT8OID,
										  sizeof(float8), FLOAT8PASSBYVAL,
										  TYPALIGN_DOUBLE));
}

/*
 * The score 1..N of a value against breakpoints from ntile_breaks().  The
 * breaks are checked on every call (they are short): a wrong direction
 * would otherwise give silently wrong scores.
 */
Datum
segments_ntile_score(PG_FUNCTION_ARGS)
{
	float8		v = PG_GETARG_FLOAT8(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	bool		higher_is_better = PG_GETARG_BOOL(2);
	const float8 *b;
	int			nb;
	int			lo;
	int			hi;

	if (isnan(v) || isinf(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_score() cannot score NaN or infinite values")));
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ntile_score() breaks must be a one-dimensional array")));
	if (ARR_ELEMTYPE(arr) != FLOAT8OID)
		elog(ERROR, "ntile_score() breaks must be float8[]");
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ntile_score() breaks must not contain nulls")));

	nb = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	/* float8 is pass-by-value and double-aligned: no nulls, plain array */
	b = (const float8 *) (const void *) ARR_DATA_PTR(arr);
	for (int i = 0; i < nb; i++)
	{
		if (isnan(b[i]) || isinf(b[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_score() breaks must be finite")));
		if (i > 0 && (higher_is_better ? b[i] < b[i - 1] : b[i] > b[i - 1]))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ntile_score() breaks must be %s when higher_is_better is %s",
							higher_is_better ? "non-decreasing" : "non-increasing",
							higher_is_better ? "true" : "false"),
					 errhint("The breaks were probably computed with ntile_breaks(value, buckets, %s); pass the same direction to both.",
							 higher_is_better ? "false" : "true")));
	}

	/* 1 + the number of breaks at or on the worse side of v */
	lo = 0;
	hi = nb;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (higher_is_better ? b[mid] <= v : b[mid] >= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	PG_RETURN_INT32(lo + 1);
}


/* ------------------------------------------------------------------------
 * buying_cycle()
 * ------------------------------------------------------------------------
 */

/*
 * Transition function of buying_cycle(): order times as float8
 * microseconds, exact within +-2^53 us (about 285 years around 2000).
 */
Datum
segments_buying_cycle_accum(PG_FUNCTION_ARGS)
{
	ValueCounts *vc = NULL;
	TimestampTz ts;

	vc_require_aggregate(fcinfo, "buying_cycle_accum()");

	if (!PG_ARGISNULL(0))
	{
		vc = vc_get(PG_GETARG_DATUM(0));
		if (unlikely(vc->kind != VC_KIND_CYCLE))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("buying_cycle_accum() was given an ntile_breaks() state")));
	}
	if (PG_ARGISNULL(1))
	{
		if (vc == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(vc);
	}

	ts = PG_GETARG_TIMESTAMPTZ(1);
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("buying_cycle() cannot use infinite order times")));
	if (ts < -VC_CYCLE_LIMIT || ts > VC_CYCLE_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("order time out of range for buying_cycle()"),
				 errdetail("Order times must lie within 2^53 microseconds (about 285 years) of 2000-01-01, between the years 1714 and 2285.")));

	if (vc == NULL)
		vc = vc_alloc(VC_INITIAL_CAPACITY, VC_KIND_CYCLE, 0, 0);
	PG_RETURN_POINTER(vc_append(vc, (float8) ts));
}

/*
 * Final function of buying_cycle(): the median of the n - 1 gaps between
 * consecutive order times (equal times give gaps of 0), in days.  Gaps are
 * computed in int64 microseconds, so they are exact.  A NULL state (no
 * orders; reachable only if the function is declared non-strict) gives
 * (NULL, 0) like a single order.
 */
Datum
segments_buying_cycle_final(PG_FUNCTION_ARGS)
{
	const ValueCounts *vc = NULL;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int64		ngaps = 0;
	int64		nzero;
	int32		npos;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "buying_cycle_final() must return a composite type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (!PG_ARGISNULL(0))
	{
		vc = vc_get(PG_GETARG_DATUM(0));
		if (vc->kind != VC_KIND_CYCLE)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("buying_cycle_final() was given an ntile_breaks() state")));
		ngaps = vc->total - 1;
	}
	if (ngaps > PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("buying_cycle() gap count out of range")));

	if (ngaps < 1)
	{
		nulls[0] = true;
		values[0] = (Datum) 0;
		values[1] = Int32GetDatum(0);
	}
	else
	{
		uint64	   *gaps;
		uint64	   *sorted;
		int64		mid;
		float8		median_us;

		vc = vc_compacted_for_final(fcinfo, (ValueCounts *) vc);
		npos = vc->nitems - 1;
		nzero = ngaps - npos;

		/* the positive gaps, as uint64 keys (sorted as integers) */
		gaps = (uint64 *) palloc(sizeof(uint64) * 2 * (Size) Max(npos, 1));
		for (int32 i = 0; i < npos; i++)
			gaps[i] = (uint64) ((int64) vc->pairs[i + 1].value -
								(int64) vc->pairs[i].value);
		sorted = vc_sort_keys(gaps, gaps + npos, npos);

		/* the sorted gaps are nzero zeros followed by sorted[0..npos) */
#define GAP_AT(idx) ((idx) < nzero ? (int64) 0 : (int64) sorted[(idx) - nzero])
		mid = ngaps / 2;
		if (ngaps % 2 == 1)
			median_us = (float8) GAP_AT(mid);
		else
			median_us = (float8) (GAP_AT(mid - 1) + GAP_AT(mid)) / 2.0;
#undef GAP_AT

		values[0] = Float8GetDatum(median_us / (float8) USECS_PER_DAY);
		values[1] = Int32GetDatum((int32) ngaps);
		pfree(gaps);
	}

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

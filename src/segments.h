/*-------------------------------------------------------------------------
 *
 * segments.h
 *	  Shared declarations of the segments extension.
 *
 * Version gates live here and nowhere else, so the C files compile on
 * PostgreSQL 13 to 17 without scattered #if blocks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEGMENTS_H
#define SEGMENTS_H

#include "postgres.h"
#include "fmgr.h"

#if PG_VERSION_NUM < 130000
#error "segments requires PostgreSQL 13 or later"
#endif

/* MarkGUCPrefixReserved() replaced EmitWarningsOnPlaceholders() in 15 */
#if PG_VERSION_NUM >= 150000
#define SEGMENTS_RESERVE_GUC_PREFIX(prefix) MarkGUCPrefixReserved(prefix)
#else
#define SEGMENTS_RESERVE_GUC_PREFIX(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* RFM scores are quintiles: 1 (worst) .. 5 (best) */
#define SEGMENTS_RFM_SCORES 5

/* Upper bound on the bucket count of ntile_breaks() and friends */
#define SEGMENTS_MAX_BUCKETS 1000

#endif							/* SEGMENTS_H */

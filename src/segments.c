/*-------------------------------------------------------------------------
 *
 * segments.c
 *	  Module entry point of the segments extension.
 *
 * The library never needs preloading: everything it registers here is
 * registered on first use in a backend.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/* Our settings are segments.*; reserve the prefix against typos. */
	SEGMENTS_RESERVE_GUC_PREFIX("segments");
}

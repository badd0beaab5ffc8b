/*
 * cbw.h: the copy-before-write filter node (see cbw.c), for the jobs
 * that insert one above their source.
 */
#pragma once

#include "block.h"
#include "core/job/block-copy.h"

G_BEGIN_DECLS

/* The filter's copy engine (transfer none), for the backup job. */
VbkBlockCopy *vbk_cbw_block_copy(VbkBlockNode *filter);

/* Stop copying before writes to the source (the job is ending); waits
 * for copies in progress.  The node itself stays until unref'd. */
void vbk_cbw_detach(VbkBlockNode *filter);

/* on-cbw-error=break-snapshot: has a copy failed? */
bool vbk_cbw_snapshot_broken(VbkBlockNode *filter);

/* Mark [offset, offset+bytes) in the filter's "done" bitmap (a
 * VbkBlockCopyDoneFunc with the filter node as @opaque). */
void vbk_cbw_mark_done(uint64_t offset, uint64_t bytes, void *opaque);

G_END_DECLS

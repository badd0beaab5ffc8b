/*
 * block-copy.h: the copy engine of backup jobs and copy-before-write.
 *
 * A VbkBlockCopy copies parts of a source node to a target node of the
 * same size.  What still has to be copied is the "copy bitmap", an
 * anonymous disabled dirty bitmap (granularity = the copy cluster size)
 * attached to the source node, so that queries show it as QEMU's.
 *
 * Two kinds of callers copy through one state:
 *  - the background copy (vbk_block_copy_run()): a bounded pool of
 *    worker threads takes dirty chunks of up to max-chunk bytes, looks
 *    at their block status and copies data extents (read + write),
 *    zero extents (write-zeroes) in order;
 *  - copy-before-write (vbk_block_copy_range()): before a guest write
 *    lands, the dirty clusters it touches are copied in the caller's
 *    thread.
 * A cluster being copied is "claimed": its bits are cleared from the
 * copy bitmap and its range is listed as in flight.  Whoever wants a
 * range that overlaps an in-flight one waits for it, so no cluster is
 * ever copied twice and a guest write never overtakes the copy of the
 * data it overwrites.  A failed copy puts its bits back.
 *
 * Errors are -errno with the side (read of the source or write of the
 * target) so that the job can apply on-source-error/on-target-error.
 *
 * Locking: one mutex per state protects the in-flight list, counters and
 * rate limiter; the copy bitmap is only touched with that mutex held and
 * under the source node's bitmap lock (order: state lock, then bitmap
 * lock).  No I/O is done with the state lock held.
 */
#pragma once

#include "core/bitmap/dirty-bitmap.h"
#include "core/block/block.h"

G_BEGIN_DECLS

typedef struct VbkBlockCopy VbkBlockCopy;

/* The copy cluster when the target tells nothing smaller (QEMU's). */
#define VBK_BLOCK_COPY_CLUSTER_MIN (64 * 1024)
/* Workers actually started, whatever max-workers asks (2-core hosts). */
#define VBK_BLOCK_COPY_THREADS_MAX 8
/* Chunk size when max-chunk is 0 ("no limit"): the bounce buffer size. */
#define VBK_BLOCK_COPY_CHUNK_DEFAULT (1024 * 1024)

typedef struct {
    int64_t max_workers; /* x-perf max-workers, >= 1 (default 64) */
    int64_t max_chunk;   /* x-perf max-chunk, 0: no limit */
    /* backup compress: data goes to the target as compressed writes,
     * one copy cluster per chunk (a multiple of the target's clusters);
     * the target must support them */
    bool compress;
} VbkBlockCopyOptions;

/* Where a copy failed. */
typedef struct {
    int ret;      /* -errno */
    bool is_read; /* failed reading the source (else writing target) */
} VbkBlockCopyError;

/*
 * Create a state copying @source to @target.  The copy bitmap starts
 * all dirty.  The copy cluster is max(64 KiB, the target's cluster
 * size); chunks are max-chunk rounded down to clusters, at most 1 MiB
 * and at least one cluster.  Fails only when a length is unknown.
 */
VbkBlockCopy *vbk_block_copy_new(VbkBlockNode *source,
                                 VbkBlockNode *target,
                                 const VbkBlockCopyOptions *opts,
                                 GError **error);
/* Detach the copy bitmap from the source and free.  No copy may run. */
void vbk_block_copy_free(VbkBlockCopy *bc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkBlockCopy, vbk_block_copy_free)

uint64_t vbk_block_copy_cluster_size(VbkBlockCopy *bc);
uint64_t vbk_block_copy_length(VbkBlockCopy *bc);
VbkBlockNode *vbk_block_copy_source(VbkBlockCopy *bc);
VbkBlockNode *vbk_block_copy_target(VbkBlockCopy *bc);

/*
 * The copy bitmap (transfer none).  Changing it (clear, merge) is
 * allowed before any copy starts, under the source's bitmap lock.
 */
VbkDirtyBitmap *vbk_block_copy_bitmap(VbkBlockCopy *bc);
/* Bytes still to copy (dirty bytes of the copy bitmap). */
uint64_t vbk_block_copy_dirty_bytes(VbkBlockCopy *bc);

/*
 * sync=top: clear from the copy bitmap the clusters starting at @offset
 * that are wholly unallocated in the source's top layer.  *pnum receives
 * the bytes looked at (a multiple of the cluster size, or to the end).
 * Returns 1 when they were cleared, 0 when allocated, or -errno.
 */
int vbk_block_copy_reset_unallocated(VbkBlockCopy *bc,
                                     uint64_t offset,
                                     uint64_t *pnum);

/* Is the background copy waiting for its rate limit (QEMU's job is
 * then not "busy")? */
bool vbk_block_copy_throttled(VbkBlockCopy *bc);

/* Bytes per second for the background copy (0: unlimited). */
void vbk_block_copy_set_speed(VbkBlockCopy *bc, uint64_t speed);
/* Make vbk_block_copy_run() return soon (cancel, pause); sticky until
 * vbk_block_copy_resume(). */
void vbk_block_copy_interrupt(VbkBlockCopy *bc);
void vbk_block_copy_resume(VbkBlockCopy *bc);

/* Polled by the workers between chunks (with no I/O in progress): TRUE
 * makes vbk_block_copy_run() return 1 as an interrupt does. */
typedef bool (*VbkBlockCopyStopFunc)(void *opaque);
void vbk_block_copy_set_stop_func(VbkBlockCopy *bc,
                                  VbkBlockCopyStopFunc func,
                                  void *opaque);

/* Set the worker count and chunk size (as at creation) before a run. */
void vbk_block_copy_configure(VbkBlockCopy *bc,
                              const VbkBlockCopyOptions *opts);

/* Called after every range copied in full (a worker's chunk, a
 * copy-before-write run) with its bytes, from any thread, with no lock of
 * the state held.  A failed range counts nothing. */
typedef void (*VbkBlockCopyProgressFunc)(uint64_t bytes, void *opaque);
void vbk_block_copy_set_progress_func(VbkBlockCopy *bc,
                                      VbkBlockCopyProgressFunc func,
                                      void *opaque);

/*
 * The background copy: copy every dirty cluster with the worker pool.
 * Returns 0 when the copy bitmap is empty and nothing is in flight, 1
 * when interrupted (vbk_block_copy_interrupt()), or -errno with *err set
 * for the first failed chunk (its bits are dirty again: a later call
 * retries them).
 */
int vbk_block_copy_run(VbkBlockCopy *bc, VbkBlockCopyError *err);

/*
 * Copy-before-write: copy the dirty clusters of the cluster-aligned
 * hull of [offset, offset + bytes) now, waiting for in-flight copies
 * that overlap it.  @timeout_us > 0 bounds the wait for others
 * (-ETIMEDOUT).  @done (may be NULL) is told each range this call
 * copied.  Returns 0 or -errno (*err set when not NULL).
 */
typedef void (*VbkBlockCopyDoneFunc)(uint64_t offset,
                                     uint64_t bytes,
                                     void *opaque);
int vbk_block_copy_range(VbkBlockCopy *bc,
                         uint64_t offset,
                         uint64_t bytes,
                         int64_t timeout_us,
                         VbkBlockCopyDoneFunc done,
                         void *opaque,
                         VbkBlockCopyError *err);

G_END_DECLS

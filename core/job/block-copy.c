/*
 * block-copy.c: copy the dirty clusters of a source node to a target.
 *
 * The unit of work is a claimed range: a run of clusters whose bits were
 * cleared from the copy bitmap and which is listed in bc->inflight while
 * it is copied.  Claiming happens with bc->lock and the source's bitmap
 * lock held, so two claimers never get the same cluster.  A worker
 * claims the next dirty run (at most one chunk) after a cursor; a
 * copy-before-write caller first waits until no in-flight range overlaps
 * the clusters it is about to overwrite, then claims every dirty cluster
 * among them under one in-flight entry, so that no worker's copy of old
 * data can be overtaken by the guest write that follows.
 *
 * A claimed range is copied extent by extent following the block status
 * of the source through its backing chain: extents that read as zeroes
 * (ZERO, or unallocated in every layer) become write-zeroes on the
 * target, the rest a read into a bounce buffer and a write (compressed
 * for backup compress=true: then chunks and extents are whole copy
 * clusters, as the target's compressed writes need).  Worker
 * buffers are allocated once per state; copy-before-write uses one
 * buffer per call, bounded by the request.  Buffers are 4 KiB aligned
 * so that O_DIRECT nodes use them as they are (file.c would otherwise
 * copy through an aligned bounce and serialise unaligned writes).
 *
 * Rate limiting (speed) applies to the background copy only: 100 ms
 * slices of speed/10 bytes; a chunk that overshoots its slice delays the
 * next claim accordingly.
 */
#include <errno.h>
#include <string.h>

#include "block-copy.h"
#include "core/block/dirty.h"

#define SLICE_US         (G_USEC_PER_SEC / 10)
#define ROUND_DOWN(n, d) (((n) / (d)) * (d))
#define ROUND_UP(n, d)   ROUND_DOWN((n) + (d) -1, (d))
/* buffers fit O_DIRECT without a bounce (file.c) */
#define BC_BUF_ALIGN 4096

typedef struct {
    uint64_t start;
    uint64_t end;
} BcRange;

struct VbkBlockCopy {
    VbkBlockNode *source;
    VbkBlockNode *target;
    uint64_t len;
    uint64_t cluster;
    uint64_t chunk;
    int workers;
    bool compress; /* compressed writes, see compressed_extent() */
    VbkDirtyBitmap *bitmap; /* attached to source; bitmap lock */

    GMutex lock;      /* everything below */
    GCond cond;       /* in-flight ended, interrupt, speed */
    GArray *inflight; /* BcRange */
    uint64_t cursor;  /* where workers look for work next */
    bool interrupted;
    bool stopped;  /* the stop func said so in this run */
    int throttled; /* workers waiting for the rate limit */
    int run_ret;   /* first error of the current run */
    VbkBlockCopyError run_err;
    uint8_t **bufs; /* one chunk per worker, lazily */
    uint64_t speed;
    int64_t slice_end;
    uint64_t slice_bytes;
    VbkBlockCopyProgressFunc progress;
    void *progress_opaque;
    VbkBlockCopyStopFunc stop;
    void *stop_opaque;
};

VbkBlockCopy *
vbk_block_copy_new(VbkBlockNode *source,
                   VbkBlockNode *target,
                   const VbkBlockCopyOptions *opts,
                   GError **error)
{
    g_autoptr(VbkBlockCopy) bc = g_new0(VbkBlockCopy, 1);
    int64_t len = vbk_block_node_getlength(source);

    g_mutex_init(&bc->lock);
    g_cond_init(&bc->cond);
    bc->inflight = g_array_sized_new(FALSE, FALSE, sizeof(BcRange), 16);
    bc->source = vbk_block_node_ref(source);
    bc->target = vbk_block_node_ref(target);
    if (len < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO, "%s",
                    g_strerror((int) -len));
        return NULL;
    }
    bc->len = len;
    bc->cluster =
        MAX(VBK_BLOCK_COPY_CLUSTER_MIN, vbk_block_node_cluster_size(target));
    vbk_block_copy_configure(bc, opts);

    bc->bitmap = vbk_dirty_bitmap_new(NULL, bc->cluster, bc->len, error);
    if (!bc->bitmap)
        return NULL;
    vbk_dirty_bitmap_set_enabled(bc->bitmap, false);
    vbk_dirty_bitmap_mark(bc->bitmap, 0, bc->len);
    vbk_block_dirty_lock(source);
    vbk_block_dirty_attach_locked(source, bc->bitmap);
    vbk_block_dirty_unlock(source);
    return g_steal_pointer(&bc);
}

static void
free_buffers_locked(VbkBlockCopy *bc)
{
    if (!bc->bufs)
        return;
    for (int i = 0; i < bc->workers; i++)
        g_aligned_free(bc->bufs[i]);
    g_clear_pointer(&bc->bufs, g_free);
}

void
vbk_block_copy_configure(VbkBlockCopy *bc, const VbkBlockCopyOptions *opts)
{
    uint64_t chunk = opts && opts->max_chunk > 0 ? (uint64_t) opts->max_chunk
                                                 : VBK_BLOCK_COPY_CHUNK_DEFAULT;

    g_mutex_lock(&bc->lock);
    free_buffers_locked(bc);
    chunk = MIN(chunk, VBK_BLOCK_COPY_CHUNK_DEFAULT);
    bc->chunk = MAX(chunk - chunk % bc->cluster, bc->cluster);
    bc->compress = opts && opts->compress;
    if (bc->compress) /* QEMU: cluster-sized compressed writes */
        bc->chunk = bc->cluster;
    bc->workers = opts && opts->max_workers > 0
                      ? (int) MIN(opts->max_workers, VBK_BLOCK_COPY_THREADS_MAX)
                      : VBK_BLOCK_COPY_THREADS_MAX;
    g_mutex_unlock(&bc->lock);
}

void
vbk_block_copy_set_stop_func(VbkBlockCopy *bc,
                             VbkBlockCopyStopFunc func,
                             void *opaque)
{
    g_mutex_lock(&bc->lock);
    bc->stop = func;
    bc->stop_opaque = opaque;
    g_mutex_unlock(&bc->lock);
}

void
vbk_block_copy_free(VbkBlockCopy *bc)
{
    if (!bc)
        return;
    if (bc->bitmap) {
        vbk_block_dirty_lock(bc->source);
        vbk_block_dirty_detach_locked(bc->source, bc->bitmap);
        vbk_block_dirty_unlock(bc->source);
        vbk_dirty_bitmap_unref(bc->bitmap);
    }
    free_buffers_locked(bc);
    g_array_unref(bc->inflight);
    vbk_block_node_unref(bc->source);
    vbk_block_node_unref(bc->target);
    g_mutex_clear(&bc->lock);
    g_cond_clear(&bc->cond);
    g_free(bc);
}

uint64_t
vbk_block_copy_cluster_size(VbkBlockCopy *bc)
{
    return bc->cluster;
}

uint64_t
vbk_block_copy_length(VbkBlockCopy *bc)
{
    return bc->len;
}

VbkBlockNode *
vbk_block_copy_source(VbkBlockCopy *bc)
{
    return bc->source;
}

VbkBlockNode *
vbk_block_copy_target(VbkBlockCopy *bc)
{
    return bc->target;
}

VbkDirtyBitmap *
vbk_block_copy_bitmap(VbkBlockCopy *bc)
{
    return bc->bitmap;
}

uint64_t
vbk_block_copy_dirty_bytes(VbkBlockCopy *bc)
{
    uint64_t n;

    vbk_block_dirty_lock(bc->source);
    n = vbk_dirty_bitmap_count(bc->bitmap);
    vbk_block_dirty_unlock(bc->source);
    return n;
}

void
vbk_block_copy_set_speed(VbkBlockCopy *bc, uint64_t speed)
{
    g_mutex_lock(&bc->lock);
    bc->speed = speed;
    bc->slice_end = 0;
    bc->slice_bytes = 0;
    g_cond_broadcast(&bc->cond);
    g_mutex_unlock(&bc->lock);
}

bool
vbk_block_copy_throttled(VbkBlockCopy *bc)
{
    bool ret;

    g_mutex_lock(&bc->lock);
    ret = bc->throttled > 0;
    g_mutex_unlock(&bc->lock);
    return ret;
}

void
vbk_block_copy_interrupt(VbkBlockCopy *bc)
{
    g_mutex_lock(&bc->lock);
    bc->interrupted = true;
    g_cond_broadcast(&bc->cond);
    g_mutex_unlock(&bc->lock);
}

void
vbk_block_copy_resume(VbkBlockCopy *bc)
{
    g_mutex_lock(&bc->lock);
    bc->interrupted = false;
    g_mutex_unlock(&bc->lock);
}

void
vbk_block_copy_set_progress_func(VbkBlockCopy *bc,
                                 VbkBlockCopyProgressFunc func,
                                 void *opaque)
{
    g_mutex_lock(&bc->lock);
    bc->progress = func;
    bc->progress_opaque = opaque;
    g_mutex_unlock(&bc->lock);
}

int
vbk_block_copy_reset_unallocated(VbkBlockCopy *bc,
                                 uint64_t offset,
                                 uint64_t *pnum)
{
    uint64_t bytes = MIN(bc->len - offset, bc->chunk);
    uint64_t n = 0;
    uint32_t depth = 0;
    int ret;

    g_return_val_if_fail(offset % bc->cluster == 0 && offset < bc->len,
                         -EINVAL);
    ret = vbk_block_block_status_above(bc->source, offset, bytes, &n, &depth);
    if (ret < 0)
        return ret;
    if (depth == 1) {
        /* allocated in the top layer: keep the clusters it touches */
        *pnum = MIN(ROUND_UP(n, bc->cluster), bc->len - offset);
        return 0;
    }
    if (offset + n < bc->len && n < bc->cluster) {
        /* part of the first cluster is allocated further on */
        *pnum = bc->cluster;
        return 0;
    }
    if (offset + n < bc->len)
        n -= n % bc->cluster;
    g_mutex_lock(&bc->lock);
    vbk_block_dirty_lock(bc->source);
    vbk_dirty_bitmap_reset(bc->bitmap, offset, n);
    vbk_block_dirty_unlock(bc->source);
    g_mutex_unlock(&bc->lock);
    *pnum = n;
    return 1;
}

/* ---- copying one claimed range -------------------------------------- */

static void
report_progress(VbkBlockCopy *bc, uint64_t bytes)
{
    VbkBlockCopyProgressFunc func;
    void *opaque;

    g_mutex_lock(&bc->lock);
    func = bc->progress;
    opaque = bc->progress_opaque;
    g_mutex_unlock(&bc->lock);
    if (func)
        func(bytes, opaque);
}

/*
 * Compressed writes take whole target clusters, so in compress mode an
 * extent is whole copy clusters, as QEMU's block-copy makes every
 * extent: one shorter than a copy cluster is copied as one cluster of
 * data (to @end at most), a longer one is cut down to whole clusters.
 */
static void
compressed_extent(VbkBlockCopy *bc,
                  uint64_t off,
                  uint64_t end,
                  uint64_t *n,
                  int *st,
                  uint32_t *depth)
{
    if (*n < bc->cluster) {
        *n = MIN(bc->cluster, end - off);
        *st = VBK_BS_DATA | VBK_BS_ALLOCATED;
        *depth = 1;
    } else if (off + *n < end) {
        *n = ROUND_DOWN(*n, bc->cluster);
    }
}

/* Copy [start, end) extent by extent through @buf (@buflen bytes).  The
 * caller reports progress for the whole range once it succeeded.  On
 * failure *@copied (if given) tells how many bytes from @start were
 * copied before the failing extent: QEMU's block-copy splits a task at
 * each block-status boundary, so those count as done (iotest 257: a full
 * backup failing on its second data read has copied 15 clusters, the
 * first one and the zero clusters after it). */
static int
copy_range(VbkBlockCopy *bc,
           uint64_t start,
           uint64_t end,
           uint8_t *buf,
           uint64_t buflen,
           uint64_t *copied,
           VbkBlockCopyError *err)
{
    uint64_t off = start;

    while (off < end) {
        uint64_t n = 0;
        uint32_t depth = 0;
        int st, ret;

        st = vbk_block_block_status_above(bc->source, off,
                                          MIN(end - off, buflen), &n, &depth);
        if (copied)
            *copied = off - start;
        if (st < 0) {
            *err = (VbkBlockCopyError){st, true};
            return st;
        }
        n = MIN(MAX(n, 1), MIN(end - off, buflen));
        if (bc->compress)
            compressed_extent(bc, off, end, &n, &st, &depth);
        if ((st & VBK_BS_ZERO) || depth == 0) {
            ret =
                vbk_block_pwrite_zeroes(bc->target, off, n, VBK_REQ_MAY_UNMAP);
            if (ret < 0) {
                *err = (VbkBlockCopyError){ret, false};
                return ret;
            }
        } else {
            ret = vbk_block_pread(bc->source, off, n, buf);
            if (ret < 0) {
                *err = (VbkBlockCopyError){ret, true};
                return ret;
            }
            ret = vbk_block_pwrite(
                bc->target, off, n, buf,
                bc->compress ? VBK_REQ_WRITE_COMPRESSED : 0);
            if (ret < 0) {
                *err = (VbkBlockCopyError){ret, false};
                return ret;
            }
        }
        off += n;
    }
    return 0;
}

/* bc->lock held.  Put the bits of a failed copy back. */
static void
unclaim_locked(VbkBlockCopy *bc, uint64_t start, uint64_t end)
{
    vbk_block_dirty_lock(bc->source);
    vbk_dirty_bitmap_mark(bc->bitmap, start, end - start);
    vbk_block_dirty_unlock(bc->source);
}

/* bc->lock held. */
static void
inflight_remove_locked(VbkBlockCopy *bc, uint64_t start)
{
    for (guint i = 0; i < bc->inflight->len; i++) {
        if (g_array_index(bc->inflight, BcRange, i).start == start) {
            g_array_remove_index_fast(bc->inflight, i);
            break;
        }
    }
    g_cond_broadcast(&bc->cond);
}

/* ---- the background copy -------------------------------------------- */

/*
 * bc->lock held.  Wait while the current slice is used up; FALSE when
 * interrupted meanwhile.
 */
static bool
rate_limit_locked(VbkBlockCopy *bc)
{
    for (;;) {
        uint64_t quota = MAX(bc->speed / 10, 1);
        int64_t now = g_get_monotonic_time();

        if (bc->interrupted || bc->run_ret < 0 || bc->stopped)
            return false;
        if (bc->stop && bc->stop(bc->stop_opaque)) {
            bc->stopped = true;
            return false;
        }
        if (!bc->speed)
            return true;
        if (bc->slice_end == 0 || now >= bc->slice_end + SLICE_US) {
            /* idle for a while: start afresh */
            bc->slice_end = now + SLICE_US;
            bc->slice_bytes = 0;
        }
        if (bc->slice_bytes < quota)
            return true;
        if (now >= bc->slice_end) {
            bc->slice_bytes -= quota;
            bc->slice_end += SLICE_US;
            continue;
        }
        bc->throttled++;
        g_cond_wait_until(&bc->cond, &bc->lock, bc->slice_end);
        bc->throttled--;
    }
}

/* bc->lock held.  Claim the next dirty run of at most one chunk. */
static bool
claim_next_locked(VbkBlockCopy *bc, BcRange *r)
{
    uint64_t s = 0, n = 0;
    bool found;

    vbk_block_dirty_lock(bc->source);
    found = vbk_dirty_bitmap_next_dirty_area(bc->bitmap, bc->cursor, bc->len,
                                             bc->chunk, &s, &n);
    if (!found && bc->cursor > 0)
        found = vbk_dirty_bitmap_next_dirty_area(bc->bitmap, 0, bc->len,
                                                 bc->chunk, &s, &n);
    if (found) {
        n = MIN(ROUND_UP(s + n, bc->cluster), bc->len) - s;
        vbk_dirty_bitmap_reset(bc->bitmap, s, n);
    }
    vbk_block_dirty_unlock(bc->source);
    if (!found)
        return false;
    r->start = s;
    r->end = s + n;
    bc->cursor = r->end < bc->len ? r->end : 0;
    g_array_append_val(bc->inflight, *r);
    return true;
}

typedef struct {
    VbkBlockCopy *bc;
    uint8_t *buf;
} BcWorker;

static gpointer
worker_main(gpointer data)
{
    BcWorker *w = data;
    VbkBlockCopy *bc = w->bc;
    BcRange r;

    g_mutex_lock(&bc->lock);
    while (rate_limit_locked(bc)) {
        VbkBlockCopyError err = {0, false};
        uint64_t copied = 0;
        int ret;

        if (!claim_next_locked(bc, &r)) {
            if (bc->inflight->len == 0)
                break;
            /* others may fail and give clusters back */
            g_cond_wait(&bc->cond, &bc->lock);
            continue;
        }
        bc->slice_bytes += r.end - r.start;
        g_mutex_unlock(&bc->lock);
        ret = copy_range(bc, r.start, r.end, w->buf, bc->chunk, &copied, &err);
        copied = ROUND_DOWN(copied, bc->cluster);
        if (ret == 0)
            report_progress(bc, r.end - r.start);
        else if (copied > 0)
            report_progress(bc, copied);
        g_mutex_lock(&bc->lock);
        if (ret < 0) {
            /* the extents before the failing one stay copied */
            unclaim_locked(bc, r.start + copied, r.end);
            if (bc->run_ret == 0) {
                bc->run_ret = ret;
                bc->run_err = err;
            }
        }
        inflight_remove_locked(bc, r.start);
    }
    g_cond_broadcast(&bc->cond);
    g_mutex_unlock(&bc->lock);
    return NULL;
}

int
vbk_block_copy_run(VbkBlockCopy *bc, VbkBlockCopyError *err)
{
    BcWorker w[VBK_BLOCK_COPY_THREADS_MAX];
    GThread *t[VBK_BLOCK_COPY_THREADS_MAX];
    int ret;

    g_mutex_lock(&bc->lock);
    bc->run_ret = 0;
    bc->stopped = false;
    if (!bc->bufs) {
        bc->bufs = g_new0(uint8_t *, bc->workers);
        for (int i = 0; i < bc->workers; i++)
            bc->bufs[i] = g_aligned_alloc(1, bc->chunk, BC_BUF_ALIGN);
    }
    g_mutex_unlock(&bc->lock);

    for (int i = 0; i < bc->workers; i++) {
        w[i] = (BcWorker){bc, bc->bufs[i]};
        t[i] = g_thread_new("block-copy", worker_main, &w[i]);
    }
    for (int i = 0; i < bc->workers; i++)
        g_thread_join(t[i]);

    g_mutex_lock(&bc->lock);
    ret = bc->run_ret;
    if (ret < 0 && err)
        *err = bc->run_err;
    else if (ret == 0 && (bc->interrupted || bc->stopped))
        ret = 1;
    g_mutex_unlock(&bc->lock);
    return ret;
}

/* ---- copy-before-write ---------------------------------------------- */

/* bc->lock held. */
static bool
overlaps_inflight_locked(VbkBlockCopy *bc, uint64_t start, uint64_t end)
{
    for (guint i = 0; i < bc->inflight->len; i++) {
        BcRange *r = &g_array_index(bc->inflight, BcRange, i);

        if (r->start < end && start < r->end)
            return true;
    }
    return false;
}

/* bc->lock held, nothing in flight over [start, end): claim its dirty
 * runs into @runs. */
static void
claim_hull_locked(VbkBlockCopy *bc, uint64_t start, uint64_t end, GArray **runs)
{
    uint64_t pos = start, s, n;

    vbk_block_dirty_lock(bc->source);
    while (pos < end && vbk_dirty_bitmap_next_dirty_area(bc->bitmap, pos, end,
                                                         end - pos, &s, &n)) {
        BcRange r = {s, MIN(ROUND_UP(s + n, bc->cluster), end)};

        vbk_dirty_bitmap_reset(bc->bitmap, r.start, r.end - r.start);
        if (!*runs) /* only now: a write to copied clusters allocates none */
            *runs = g_array_new(FALSE, FALSE, sizeof(BcRange));
        g_array_append_val(*runs, r);
        pos = r.end;
    }
    vbk_block_dirty_unlock(bc->source);
    if (*runs) {
        BcRange hull = {start, end};
        g_array_append_val(bc->inflight, hull);
    }
}

int
vbk_block_copy_range(VbkBlockCopy *bc,
                     uint64_t offset,
                     uint64_t bytes,
                     int64_t timeout_us,
                     VbkBlockCopyDoneFunc done,
                     void *opaque,
                     VbkBlockCopyError *err)
{
    uint64_t start = ROUND_DOWN(offset, bc->cluster);
    uint64_t end = MIN(ROUND_UP(offset + bytes, bc->cluster), bc->len);
    int64_t deadline = timeout_us > 0 ? g_get_monotonic_time() + timeout_us : 0;
    g_autoptr(GArray) runs = NULL;
    uint8_t *buf = NULL;
    VbkBlockCopyError local = {0, false};
    guint i;
    int ret = 0;

    if (bytes == 0 || start >= end)
        return 0;
    g_mutex_lock(&bc->lock);
    while (overlaps_inflight_locked(bc, start, end)) {
        if (!deadline) {
            g_cond_wait(&bc->cond, &bc->lock);
        } else if (!g_cond_wait_until(&bc->cond, &bc->lock, deadline) &&
                   overlaps_inflight_locked(bc, start, end)) {
            g_mutex_unlock(&bc->lock);
            local = (VbkBlockCopyError){-ETIMEDOUT, false};
            if (err)
                *err = local;
            return -ETIMEDOUT;
        }
    }
    claim_hull_locked(bc, start, end, &runs);
    g_mutex_unlock(&bc->lock);
    if (!runs)
        return 0;

    buf = g_aligned_alloc(1, MIN(bc->chunk, end - start), BC_BUF_ALIGN);
    for (i = 0; i < runs->len && ret == 0; i++) {
        BcRange *r = &g_array_index(runs, BcRange, i);

        ret = copy_range(bc, r->start, r->end, buf, MIN(bc->chunk, end - start),
                         NULL, &local);
        if (ret == 0)
            report_progress(bc, r->end - r->start);
        if (ret == 0 && done)
            done(r->start, r->end - r->start, opaque);
    }

    g_aligned_free(buf);
    g_mutex_lock(&bc->lock);
    if (ret < 0) {
        /* what failed and what was not tried yet is to copy again */
        for (guint j = i - 1; j < runs->len; j++) {
            BcRange *r = &g_array_index(runs, BcRange, j);
            unclaim_locked(bc, r->start, r->end);
        }
        if (err)
            *err = local;
    }
    inflight_remove_locked(bc, start);
    g_mutex_unlock(&bc->lock);
    return ret;
}

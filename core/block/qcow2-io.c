/*
 * qcow2-io.c: the qcow2 request paths — read, write, write-zeroes,
 * discard and block status.
 *
 * Locking (see qcow2.h): metadata is looked up and changed under the
 * state lock; data cluster reads, backing reads and writes in place run
 * after it is dropped.
 *
 * Every request walks its range extent by extent, where an extent is a
 * run of clusters inside one L2 table that map the same way (see
 * vbk_qcow2_l2_lookup): e.g. a 1 MiB read over 64 KiB clusters might be
 * "3 clusters unallocated, 12 contiguous data clusters, 1 compressed".
 *
 * Writes land in place only on a plain data cluster that is ours alone
 * (COPIED).  Everything else (unallocated, zero, compressed, shared)
 * gets fresh clusters: allocate (refcount 1), write the data — a partial
 * first or last cluster is completed from what it read as before (the
 * backing file, zeroes, the old data or the decompressed cluster) —
 * then point the L2 entries at them and only then release the old
 * clusters.  A crash in between leaks clusters, never corrupts.
 *
 * Zeroes: v3 images mark whole clusters with the zero flag (keeping the
 * host cluster when unmapping is not allowed); v2 has no zero flag, so
 * whole clusters are deallocated when there is no backing file and real
 * zeroes are written otherwise.  Partial clusters are written as data
 * unless they already read as zeroes.  Discard drops whole clusters:
 * zero-flagged on a v3 image with a backing file (so the backing does
 * not show through), unallocated otherwise.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>

#define QCOW2_ZERO_CHUNK (1u << 20)

/* Read @len bytes at @off from the backing chain, zeroes past its end. */
static int
qcow2_read_backing(VbkBlockNode *bs, uint64_t off, uint64_t len, uint8_t *buf)
{
    int64_t blen;
    uint64_t n = 0;
    int ret;

    if (bs->backing) {
        blen = vbk_block_node_getlength(bs->backing);
        if (blen < 0)
            return blen;
        if (off < (uint64_t) blen) {
            n = MIN(len, (uint64_t) blen - off);
            vbk_block_event(bs->file, VBK_EVENT_READ_BACKING_AIO);
            ret = vbk_block_pread(bs->backing, off, n, buf);
            if (ret < 0)
                return ret;
        }
    }
    memset(buf + n, 0, len - n);
    return 0;
}

/* What the guest cluster at @cluster_off, mapped by @entry, reads as. */
static int
qcow2_read_old_cluster(VbkBlockNode *bs,
                       uint64_t cluster_off,
                       uint64_t entry,
                       uint8_t *buf)
{
    VbkQcow2State *s = bs->opaque;

    switch (vbk_qcow2_entry_type(s, entry)) {
    case QCOW2_CL_UNALLOCATED:
        return qcow2_read_backing(bs, cluster_off, s->cluster_size, buf);
    case QCOW2_CL_NORMAL:
        return vbk_block_pread(bs->file, entry & QCOW2_OFFSET_MASK,
                               s->cluster_size, buf);
    case QCOW2_CL_COMPRESSED:
        return vbk_qcow2_read_compressed(bs, entry, buf);
    default:
        memset(buf, 0, s->cluster_size);
        return 0;
    }
}

/*
 * Read one extent at @offset (at most @bytes); *pnum gets its length.
 * Called with the lock held; returns with it released.  Data clusters
 * and the backing file are read outside the lock: data clusters under
 * the data lock as readers, so that they cannot be freed meanwhile.
 */
static int
qcow2_pread_extent(VbkBlockNode *bs,
                   uint64_t offset,
                   uint64_t bytes,
                   uint8_t *buf,
                   uint64_t *pnum)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t in_cluster = offset & (s->cluster_size - 1);
    g_autofree uint8_t *bounce = NULL;
    uint64_t entry, n;
    int ret;

    ret = vbk_qcow2_l2_lookup(bs, offset, bytes, &entry, &n);
    *pnum = n;
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    switch (vbk_qcow2_entry_type(s, entry)) {
    case QCOW2_CL_NORMAL:
        g_rw_lock_reader_lock(&s->data_lock);
        g_mutex_unlock(&s->lock);
        vbk_block_event(bs->file, VBK_EVENT_READ_AIO);
        ret = vbk_block_pread(bs->file,
                              (entry & QCOW2_OFFSET_MASK) + in_cluster, n, buf);
        g_rw_lock_reader_unlock(&s->data_lock);
        return ret;
    case QCOW2_CL_COMPRESSED:
        bounce = g_try_malloc(s->cluster_size);
        ret = bounce ? vbk_qcow2_read_compressed(bs, entry, bounce) : -ENOMEM;
        if (ret == 0)
            memcpy(buf, bounce + in_cluster, n);
        g_mutex_unlock(&s->lock);
        return ret;
    case QCOW2_CL_UNALLOCATED:
        g_mutex_unlock(&s->lock);
        return qcow2_read_backing(bs, offset, n, buf);
    default:
        g_mutex_unlock(&s->lock);
        memset(buf, 0, n);
        return 0;
    }
}

int
vbk_qcow2_co_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    VbkQcow2State *s = bs->opaque;
    uint8_t *p = buf;
    uint64_t n;
    int ret;

    while (bytes > 0) {
        g_mutex_lock(&s->lock);
        ret = qcow2_pread_extent(bs, offset, bytes, p, &n);
        if (ret < 0)
            return ret;
        offset += n;
        p += n;
        bytes -= n;
    }
    return 0;
}

/* Entry of the i-th cluster of an extent that starts with @first. */
static uint64_t
qcow2_extent_entry(VbkQcow2State *s, uint64_t first, uint64_t i)
{
    VbkQcow2ClusterType t = vbk_qcow2_entry_type(s, first);

    if (t == QCOW2_CL_NORMAL || t == QCOW2_CL_ZERO_ALLOC)
        return first + i * s->cluster_size;
    return first;
}

/*
 * Point the @k clusters from @offset (one extent starting with @first)
 * at @entries, then release what they referenced before.
 */
static int qcow2_release(VbkBlockNode *bs,
                         uint64_t k,
                         uint64_t first,
                         const uint64_t *entries,
                         bool unmap);

static int
qcow2_remap(VbkBlockNode *bs,
            uint64_t offset,
            uint64_t k,
            uint64_t first,
            const uint64_t *entries,
            bool unmap)
{
    int ret;

    ret = vbk_qcow2_l2_set(bs, offset, k, entries);
    if (ret < 0)
        return ret;
    return qcow2_release(bs, k, first, entries, unmap);
}

/* Release what the extent starting with @first referenced before it was
 * remapped to @entries. */
static int
qcow2_release(VbkBlockNode *bs,
              uint64_t k,
              uint64_t first,
              const uint64_t *entries,
              bool unmap)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t rc;
    int ret;

    for (uint64_t i = 0; i < k; i++) {
        uint64_t old = qcow2_extent_entry(s, first, i);
        uint64_t host = old & QCOW2_OFFSET_MASK;
        if ((entries[i] & QCOW2_OFFSET_MASK) == host &&
            vbk_qcow2_entry_type(s, old) != QCOW2_CL_COMPRESSED)
            continue; /* same host cluster kept */
        ret = vbk_qcow2_free_entry(bs, old);
        if (ret < 0)
            return ret;
        if (unmap && vbk_qcow2_entry_type(s, old) == QCOW2_CL_NORMAL &&
            vbk_qcow2_get_refcount(bs, host >> s->cluster_bits, &rc) == 0 &&
            rc == 0)
            vbk_block_pdiscard(bs->file, host, s->cluster_size);
    }
    return 0;
}

/* Write a partial cluster @i of a new run: old content plus new bytes. */
static int
qcow2_write_partial(VbkBlockNode *bs,
                    uint64_t cl_off,
                    uint64_t entry,
                    uint64_t host,
                    uint64_t offset,
                    uint64_t n,
                    const uint8_t *buf)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t a = MAX(offset, cl_off);
    uint64_t b = MIN(offset + n, cl_off + s->cluster_size);
    g_autofree uint8_t *bounce = g_try_malloc(s->cluster_size);
    int ret;

    if (!bounce)
        return -ENOMEM;
    vbk_block_event(bs->file, VBK_EVENT_COW_READ);
    ret = qcow2_read_old_cluster(bs, cl_off, entry, bounce);
    if (ret < 0)
        return ret;
    memcpy(bounce + (a - cl_off), buf + (a - offset), b - a);
    vbk_block_event(bs->file, VBK_EVENT_COW_WRITE);
    return vbk_block_pwrite(bs->file, host, s->cluster_size, bounce, 0);
}

/* Write [offset, offset+n) of one extent into newly allocated clusters. */
static int
qcow2_write_new(VbkBlockNode *bs,
                uint64_t offset,
                uint64_t n,
                const uint8_t *buf,
                uint64_t first)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t start = offset & ~(cs - 1);
    uint64_t k = (offset + n - start + cs - 1) / cs;
    uint64_t full_a = (offset + cs - 1) & ~(cs - 1);
    uint64_t full_b = (offset + n) & ~(cs - 1);
    g_autofree uint64_t *entries = g_try_new(uint64_t, k);
    int64_t host;
    int ret = 0;

    if (!entries)
        return -ENOMEM;
    host = vbk_qcow2_alloc_clusters(bs, k);
    if (host < 0)
        return host;
    if (offset != start)
        ret = qcow2_write_partial(bs, start, first, host, offset, n, buf);
    if (ret == 0 && full_b > full_a) {
        vbk_block_event(bs->file, VBK_EVENT_WRITE_AIO);
        ret = vbk_block_pwrite(bs->file, host + (full_a - start),
                               full_b - full_a, buf + (full_a - offset), 0);
    }
    if (ret == 0 && full_b < offset + n && (full_b != start || offset == start))
        ret = qcow2_write_partial(
            bs, full_b, qcow2_extent_entry(s, first, (full_b - start) / cs),
            host + (full_b - start), offset, n, buf);
    if (ret < 0) {
        vbk_qcow2_free_clusters(bs, host, k);
        return ret;
    }
    vbk_qcow2_note_file_end(s, host + k * cs);
    for (uint64_t i = 0; i < k; i++)
        entries[i] = (host + i * cs) | QCOW2_OFLAG_COPIED;
    ret = vbk_qcow2_l2_set(bs, start, k, entries);
    if (ret < 0) {
        vbk_qcow2_free_clusters(bs, host, k);
        return ret;
    }
    return qcow2_release(bs, k, first, entries, false);
}

/* Is the in-place target of an extent free of our metadata?  Under the
 * lock. */
static bool
qcow2_in_place_valid(VbkQcow2State *s,
                     uint64_t offset,
                     uint64_t n,
                     uint64_t entry)
{
    uint64_t in_cluster = offset & (s->cluster_size - 1);
    uint64_t host = entry & QCOW2_OFFSET_MASK;

    for (uint64_t c = 0; c < in_cluster + n; c += s->cluster_size) {
        if (!vbk_qcow2_data_offset_valid(s, host + c))
            return false;
    }
    return true;
}

/* Write in place over data clusters that are ours alone (validated). */
static int
qcow2_write_in_place(VbkBlockNode *bs,
                     uint64_t in_cluster,
                     uint64_t n,
                     const uint8_t *buf,
                     uint64_t entry)
{
    vbk_block_event(bs->file, VBK_EVENT_WRITE_AIO);
    return vbk_block_pwrite(bs->file, (entry & QCOW2_OFFSET_MASK) + in_cluster,
                            n, buf, 0);
}

static int
qcow2_pwrite_locked(VbkBlockNode *bs,
                    uint64_t offset,
                    uint64_t bytes,
                    const uint8_t *buf)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t entry, n;
    int ret;

    while (bytes > 0) {
        ret = vbk_qcow2_l2_lookup(bs, offset, bytes, &entry, &n);
        if (ret < 0)
            return ret;
        if (vbk_qcow2_entry_type(s, entry) == QCOW2_CL_NORMAL &&
            (entry & QCOW2_OFLAG_COPIED))
            ret = qcow2_in_place_valid(s, offset, n, entry)
                      ? qcow2_write_in_place(bs, offset & (s->cluster_size - 1),
                                             n, buf, entry)
                      : -EIO;
        else
            ret = qcow2_write_new(bs, offset, n, buf, entry);
        if (ret < 0)
            return ret;
        offset += n;
        buf += n;
        bytes -= n;
    }
    return 0;
}

/* Under the lock: wait until no allocating write outside the lock
 * covers a cluster of [offset, offset+bytes). */
static void
qcow2_wait_alloc(VbkQcow2State *s, uint64_t offset, uint64_t bytes)
{
    uint64_t a = offset & ~(s->cluster_size - 1);
    uint64_t b = offset + bytes;
    bool busy = true;

    while (busy && s->alloc_inflight) {
        busy = false;
        for (guint i = 0; i < s->alloc_inflight->len && !busy; i++) {
            const uint64_t *r =
                &g_array_index(s->alloc_inflight, uint64_t, 2 * i);

            busy = r[0] < b && a < r[1];
        }
        if (busy) {
            s->alloc_waiters++;
            g_cond_wait(&s->alloc_cond, &s->lock);
            s->alloc_waiters--;
        }
    }
}

/* For qcow2-compress-write.c and qcow2-shrink.c, which keep to the same
 * rule. */
void
vbk_qcow2_wait_alloc(VbkQcow2State *s, uint64_t offset, uint64_t bytes)
{
    qcow2_wait_alloc(s, offset, bytes);
}

static void
qcow2_alloc_done(VbkQcow2State *s, uint64_t start)
{
    for (guint i = 0; i < s->alloc_inflight->len; i++) {
        if (g_array_index(s->alloc_inflight, uint64_t, 2 * i) == start) {
            g_array_remove_index_fast(s->alloc_inflight, i);
            break;
        }
    }
    if (s->alloc_waiters) /* a broadcast costs a syscall even to nobody */
        g_cond_broadcast(&s->alloc_cond);
}

/*
 * Called and returns with the lock held.  A cluster-aligned extent that
 * needs fresh clusters: allocate them, then write the data with the lock
 * dropped (so that writers to other ranges, backup workers among them,
 * run in parallel), then link the L2 entries and release the old ones.
 * The guest range is listed in alloc_inflight meanwhile, which keeps any
 * other metadata change of it waiting; the fresh clusters are referenced
 * by nobody else, and data_lock keeps the file from being cut under the
 * write.
 */
static int
qcow2_write_new_unlocked(VbkBlockNode *bs,
                         uint64_t offset,
                         uint64_t n,
                         const uint8_t *buf,
                         uint64_t first)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t k = n / s->cluster_size;
    uint64_t range[2] = {offset, offset + n};
    g_autofree uint64_t *entries = g_try_new(uint64_t, k);
    int64_t host;
    int ret;

    if (!entries)
        return -ENOMEM;
    host = vbk_qcow2_alloc_clusters(bs, k);
    if (host < 0)
        return host;
    g_array_append_vals(s->alloc_inflight, range, 1);
    g_rw_lock_reader_lock(&s->data_lock);
    g_mutex_unlock(&s->lock);
    vbk_block_event(bs->file, VBK_EVENT_WRITE_AIO);
    ret = vbk_block_pwrite(bs->file, host, n, buf, 0);
    g_rw_lock_reader_unlock(&s->data_lock);
    g_mutex_lock(&s->lock);
    if (ret == 0) {
        vbk_qcow2_note_file_end(s, host + n);
        for (uint64_t i = 0; i < k; i++)
            entries[i] = (host + i * s->cluster_size) | QCOW2_OFLAG_COPIED;
        ret = vbk_qcow2_l2_set(bs, offset, k, entries);
    }
    if (ret < 0)
        vbk_qcow2_free_clusters(bs, host, k);
    else
        ret = qcow2_release(bs, k, first, entries, false);
    qcow2_alloc_done(s, offset);
    return ret;
}

int
vbk_qcow2_co_pwrite(VbkBlockNode *bs,
                    uint64_t offset,
                    uint64_t bytes,
                    const void *buf,
                    VbkRequestFlags flags)
{
    VbkQcow2State *s = bs->opaque;
    const uint8_t *p = buf;
    uint64_t entry, n;
    int ret;

    /* FUA is handled by the dispatch layer (a flush after the write).
     * Writes in place run outside the lock, as reads do. */
    if (flags & VBK_REQ_WRITE_COMPRESSED)
        return vbk_qcow2_pwrite_compressed(bs, offset, bytes, buf);
    while (bytes > 0) {
        g_mutex_lock(&s->lock);
        qcow2_wait_alloc(s, offset, bytes);
        ret = vbk_qcow2_l2_lookup(bs, offset, bytes, &entry, &n);
        if (ret == 0 && vbk_qcow2_entry_type(s, entry) == QCOW2_CL_NORMAL &&
            (entry & QCOW2_OFLAG_COPIED)) {
            uint64_t in_cluster = offset & (s->cluster_size - 1);
            bool valid = qcow2_in_place_valid(s, offset, n, entry);

            g_rw_lock_reader_lock(&s->data_lock);
            g_mutex_unlock(&s->lock);
            ret = valid ? qcow2_write_in_place(bs, in_cluster, n, p, entry)
                        : -EIO;
            g_rw_lock_reader_unlock(&s->data_lock);
        } else if (ret == 0 && s->alloc_inflight &&
                   ((offset | n) & (s->cluster_size - 1)) == 0) {
            ret = qcow2_write_new_unlocked(bs, offset, n, p, entry);
            g_mutex_unlock(&s->lock);
        } else {
            if (ret == 0)
                ret = qcow2_write_new(bs, offset, n, p, entry);
            g_mutex_unlock(&s->lock);
        }
        if (ret < 0)
            return ret;
        offset += n;
        p += n;
        bytes -= n;
    }
    return 0;
}

/* Does [offset, offset+n) of one extent already read as zeroes? */
static bool
qcow2_reads_zero(VbkBlockNode *bs, uint64_t offset, uint64_t n, uint64_t entry)
{
    VbkQcow2State *s = bs->opaque;
    int64_t blen;

    switch (vbk_qcow2_entry_type(s, entry)) {
    case QCOW2_CL_ZERO_PLAIN:
    case QCOW2_CL_ZERO_ALLOC:
        return true;
    case QCOW2_CL_UNALLOCATED:
        if (!bs->backing)
            return true;
        blen = vbk_block_node_getlength(bs->backing);
        return blen >= 0 && offset >= (uint64_t) blen;
    default:
        return false;
    }
}

/* Write real zeroes over [offset, offset+bytes). */
static int
qcow2_write_zero_data(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    g_autofree uint8_t *zero = g_try_malloc0(MIN(bytes, QCOW2_ZERO_CHUNK));
    int ret;

    if (!zero)
        return -ENOMEM;
    while (bytes > 0) {
        uint64_t n = MIN(bytes, QCOW2_ZERO_CHUNK);
        ret = qcow2_pwrite_locked(bs, offset, n, zero);
        if (ret < 0)
            return ret;
        offset += n;
        bytes -= n;
    }
    return 0;
}

/* New entry that makes a whole cluster read as zeroes, per the rules
 * in the file comment; returns false when nothing needs to change. */
static bool
qcow2_zero_entry(VbkBlockNode *bs, uint64_t old, bool may_unmap, uint64_t *out)
{
    VbkQcow2State *s = bs->opaque;
    VbkQcow2ClusterType t = vbk_qcow2_entry_type(s, old);

    if (s->hdr.version < 3) {
        *out = 0;
        return t != QCOW2_CL_UNALLOCATED;
    }
    if (t == QCOW2_CL_ZERO_PLAIN || (t == QCOW2_CL_ZERO_ALLOC && !may_unmap))
        return false;
    if (!may_unmap && t == QCOW2_CL_NORMAL && (old & QCOW2_OFLAG_COPIED)) {
        *out = old | QCOW2_OFLAG_ZERO;
        return true;
    }
    *out = QCOW2_OFLAG_ZERO;
    return true;
}

/* Zero the whole clusters of one extent [offset, offset+n). */
static int
qcow2_zero_clusters(VbkBlockNode *bs,
                    uint64_t offset,
                    uint64_t n,
                    uint64_t entry,
                    bool may_unmap)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t k = n >> s->cluster_bits;
    g_autofree uint64_t *entries = g_try_new(uint64_t, k);
    bool change = false;

    if (!entries)
        return -ENOMEM;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t old = qcow2_extent_entry(s, entry, i);
        if (qcow2_zero_entry(bs, old, may_unmap, &entries[i]))
            change = true;
        else
            entries[i] = old;
    }
    if (!change)
        return 0;
    return qcow2_remap(bs, offset, k, entry, entries, false);
}

/* Whole-cluster part of an extent at @offset of @n bytes: the bytes
 * from @offset that may be handled by changing L2 entries, 0 if none. */
static uint64_t
qcow2_whole_clusters(VbkBlockNode *bs, uint64_t offset, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;

    if (offset & (cs - 1))
        return 0;
    if (offset + n == s->hdr.size)
        return n; /* the last cluster's tail past the end is invisible */
    return n & ~(cs - 1);
}

int
vbk_qcow2_zeroes_locked(VbkBlockNode *bs,
                        uint64_t offset,
                        uint64_t bytes,
                        VbkRequestFlags flags)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    bool real_zeroes = s->hdr.version < 3 && bs->backing;
    uint64_t entry, n, whole;
    int ret = 0;

    if (real_zeroes && (flags & VBK_REQ_NO_FALLBACK))
        return -ENOTSUP;
    while (bytes > 0) {
        ret = vbk_qcow2_l2_lookup(bs, offset, bytes, &entry, &n);
        if (ret < 0)
            return ret;
        whole = real_zeroes ? 0 : qcow2_whole_clusters(bs, offset, n);
        if (whole) {
            n = whole;
            ret = qcow2_zero_clusters(bs, offset, (n + cs - 1) & ~(cs - 1),
                                      entry, flags & VBK_REQ_MAY_UNMAP);
        } else {
            if (!real_zeroes)
                n = MIN(n, cs - (offset & (cs - 1)));
            if (qcow2_reads_zero(bs, offset, n, entry))
                ret = 0;
            else if (flags & VBK_REQ_NO_FALLBACK)
                ret = -ENOTSUP; /* writing zeroes as data is not fast */
            else
                ret = qcow2_write_zero_data(bs, offset, n);
        }
        if (ret < 0)
            return ret;
        offset += n;
        bytes -= n;
    }
    return 0;
}

int
vbk_qcow2_co_pwrite_zeroes(VbkBlockNode *bs,
                           uint64_t offset,
                           uint64_t bytes,
                           VbkRequestFlags flags)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    qcow2_wait_alloc(s, offset, bytes);
    return vbk_qcow2_zeroes_locked(bs, offset, bytes, flags);
}

/* Discard the whole clusters of one extent. */
static int
qcow2_discard_clusters(VbkBlockNode *bs,
                       uint64_t offset,
                       uint64_t k,
                       uint64_t entry)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t target =
        (s->hdr.version >= 3 && bs->backing) ? QCOW2_OFLAG_ZERO : 0;
    g_autofree uint64_t *entries = g_try_new(uint64_t, k);
    bool change = false;

    if (!entries)
        return -ENOMEM;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t old = qcow2_extent_entry(s, entry, i);
        entries[i] = target;
        if (old != target)
            change = true;
    }
    if (!change)
        return 0;
    return qcow2_remap(bs, offset, k, entry, entries, bs->discard_unmap);
}

int
vbk_qcow2_co_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + bytes;
    uint64_t entry, n;
    int ret;

    qcow2_wait_alloc(s, offset, bytes);
    end = end >= s->hdr.size ? (end + cs - 1) & ~(cs - 1) : end & ~(cs - 1);
    offset = (offset + cs - 1) & ~(cs - 1);
    while (offset < end) {
        ret = vbk_qcow2_l2_lookup(bs, offset, end - offset, &entry, &n);
        if (ret < 0)
            return ret;
        ret = qcow2_discard_clusters(bs, offset, n >> s->cluster_bits, entry);
        if (ret < 0)
            return ret;
        offset += n;
    }
    return 0;
}

int
vbk_qcow2_co_block_status(VbkBlockNode *bs,
                          uint64_t offset,
                          uint64_t bytes,
                          uint64_t *pnum,
                          uint64_t *map,
                          VbkBlockNode **file)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    uint64_t entry, n;
    uint64_t host;
    int ret;

    ret = vbk_qcow2_l2_lookup(bs, offset, bytes, &entry, &n);
    if (ret < 0)
        return ret;
    *pnum = n;
    host = (entry & QCOW2_OFFSET_MASK) + (offset & (s->cluster_size - 1));
    switch (vbk_qcow2_entry_type(s, entry)) {
    case QCOW2_CL_UNALLOCATED:
        return 0;
    case QCOW2_CL_ZERO_PLAIN:
        return VBK_BS_ZERO | VBK_BS_ALLOCATED;
    case QCOW2_CL_COMPRESSED:
        return VBK_BS_DATA | VBK_BS_ALLOCATED;
    case QCOW2_CL_ZERO_ALLOC:
        ret = VBK_BS_ZERO | VBK_BS_ALLOCATED | VBK_BS_OFFSET_VALID;
        break;
    default:
        ret = VBK_BS_DATA | VBK_BS_ALLOCATED | VBK_BS_OFFSET_VALID;
        break;
    }
    if (map)
        *map = host;
    if (file)
        *file = bs->file;
    return ret;
}

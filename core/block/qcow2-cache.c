/*
 * qcow2-cache.c: a write-back LRU cache of cluster-sized metadata tables.
 *
 * The driver keeps two caches, one of L2 tables and one of refcount
 * blocks.  A table is identified by its host offset; a miss reads the
 * whole cluster from the file child, evicting the least recently used
 * slot.  Updates are write-back: the caller changes the cached bytes and
 * calls vbk_qcow2_cache_dirty() with the range it touched; the slot
 * remembers the union of dirty byte ranges and is written (the enclosing
 * aligned sectors only) when it is evicted, when the whole cache is
 * written back (flush, close, before a table pointer in L1, reftable or
 * header is switched) — never at once.  A failed write leaves the slot
 * dirty, so a later write-back tries again.
 *
 * Ordering.  A cache may depend on the other one: everything dirty in
 * the other must be on disk (written, then a flush of the file child as
 * a barrier) before any slot of this one is written.
 *   - L2 -> refcounts: an L2 entry that points at a new host cluster
 *     makes the L2 cache depend on the refcount cache, so the
 *     increments reach the disk first (a crash may leak, never leaves a
 *     referenced cluster with refcount 0).
 *   - refcounts -> L2: a decrement makes the refcount cache depend on
 *     the L2 cache, so the cleared L2 entries reach the disk first.
 * Setting a dependency whose target already depends on the setter first
 * writes that target's own dependency out (vbk_qcow2_cache_depend), so
 * there is never a cycle and at most one barrier per write-back.
 * Writing one slot or the whole cache first resolves the cache's
 * dependency.  vbk_qcow2_meta_flush() writes the L2 cache and the
 * refcount cache in that order (each resolving its dependency) and
 * flushes the file child.
 *
 * A pointer returned by vbk_qcow2_cache_get() stays valid until the next
 * get on the same cache; callers hold at most one table per cache.
 * Writing back never evicts, so it keeps those pointers valid.
 *
 * Every offset read from the image is checked before it is used as a
 * table (vbk_qcow2_meta_offset_valid): aligned, past the header, inside
 * the file and not overlapping the L1 or refcount table.  Data cluster
 * offsets are checked likewise before a write lands there.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>

typedef struct {
    uint64_t offset; /* 0: empty slot */
    uint64_t used;   /* LRU tick */
    uint8_t *table;
    uint64_t dirty_lo; /* dirty bytes [dirty_lo, dirty_hi); clean if equal */
    uint64_t dirty_hi;
} QcowCacheSlot;

struct VbkQcow2Cache {
    QcowCacheSlot *slots;
    unsigned int n;
    size_t table_size;
    uint64_t tick;
    VbkBlockEvent event;    /* fired before each table write */
    VbkQcow2Cache *depends; /* to write (and sync) before ours */
    unsigned int ndirty;
    bool unsynced; /* written since our last barrier */
};

VbkQcow2Cache *
vbk_qcow2_cache_new(unsigned int n, size_t table_size, VbkBlockEvent event)
{
    VbkQcow2Cache *c = g_new0(VbkQcow2Cache, 1);

    c->n = n;
    c->table_size = table_size;
    c->event = event;
    c->slots = g_new0(QcowCacheSlot, n);
    return c;
}

void
vbk_qcow2_cache_free(VbkQcow2Cache *c)
{
    if (!c)
        return;
    for (unsigned int i = 0; i < c->n; i++)
        g_aligned_free(c->slots[i].table);
    g_free(c->slots);
    g_free(c);
}

static void
qcow2_slot_clean(VbkQcow2Cache *c, QcowCacheSlot *slot)
{
    if (slot->dirty_hi > slot->dirty_lo)
        c->ndirty--;
    slot->dirty_lo = slot->dirty_hi = 0;
}

/* Forget every table, dirty or not (the caller rewrote them). */
void
vbk_qcow2_cache_clear(VbkQcow2Cache *c)
{
    for (unsigned int i = 0; i < c->n; i++) {
        qcow2_slot_clean(c, &c->slots[i]);
        c->slots[i].offset = 0;
    }
    c->depends = NULL;
}

/* Forget the table at @offset (its cluster was freed): unwritten
 * changes of a table nobody references are dropped. */
void
vbk_qcow2_cache_drop(VbkQcow2Cache *c, uint64_t offset)
{
    for (unsigned int i = 0; i < c->n; i++) {
        if (c->slots[i].offset == offset) {
            qcow2_slot_clean(c, &c->slots[i]);
            c->slots[i].offset = 0;
        }
    }
}

bool
vbk_qcow2_cache_is_dirty(VbkQcow2Cache *c)
{
    return c->ndirty > 0;
}

/* Bytes [@start, @start+@len) of the cached @table were changed. */
void
vbk_qcow2_cache_dirty(VbkQcow2Cache *c,
                      const uint8_t *table,
                      uint64_t start,
                      uint64_t len)
{
    for (unsigned int i = 0; i < c->n; i++) {
        QcowCacheSlot *slot = &c->slots[i];

        if (slot->table != table || slot->offset == 0)
            continue;
        if (slot->dirty_hi <= slot->dirty_lo) {
            c->ndirty++;
            slot->dirty_lo = start;
            slot->dirty_hi = start + len;
        } else {
            slot->dirty_lo = MIN(slot->dirty_lo, start);
            slot->dirty_hi = MAX(slot->dirty_hi, start + len);
        }
        return;
    }
    g_assert_not_reached();
}

static int qcow2_cache_resolve(VbkBlockNode *bs, VbkQcow2Cache *c);

/* Write the dirty part of @slot; the cache's dependency is resolved. */
static int
qcow2_slot_write(VbkBlockNode *bs, VbkQcow2Cache *c, QcowCacheSlot *slot)
{
    int ret;

    if (slot->dirty_hi <= slot->dirty_lo)
        return 0;
    vbk_block_event(bs->file, c->event);
    ret = vbk_qcow2_meta_write(bs, slot->offset, slot->table, slot->dirty_lo,
                               slot->dirty_hi - slot->dirty_lo);
    if (ret < 0)
        return ret;
    qcow2_slot_clean(c, slot);
    c->unsynced = true;
    return 0;
}

/* Write every dirty table of @c, its dependency first. */
int
vbk_qcow2_cache_write(VbkBlockNode *bs, VbkQcow2Cache *c)
{
    int ret = qcow2_cache_resolve(bs, c);

    for (unsigned int i = 0; ret == 0 && c->ndirty && i < c->n; i++)
        ret = qcow2_slot_write(bs, c, &c->slots[i]);
    return ret;
}

/* Make what @c depends on durable: write it, then a barrier. */
static int
qcow2_cache_resolve(VbkBlockNode *bs, VbkQcow2Cache *c)
{
    int ret;

    if (!c->depends)
        return 0;
    ret = vbk_qcow2_cache_write(bs, c->depends);
    if (ret == 0 && c->depends->unsynced)
        ret = vbk_block_flush(bs->file);
    if (ret == 0) {
        c->depends->unsynced = c->unsynced = false;
        c->depends = NULL;
    }
    return ret;
}

/*
 * From now on nothing of @c may be written before what is dirty in @dep
 * is on disk.  When @dep itself waits for @c, @dep's wait is resolved
 * first (there are only two caches, so this breaks any cycle).
 */
int
vbk_qcow2_cache_depend(VbkBlockNode *bs, VbkQcow2Cache *c, VbkQcow2Cache *dep)
{
    int ret;

    if (c->depends == dep || (!dep->ndirty && !dep->unsynced))
        return 0;
    if (dep->depends && (ret = qcow2_cache_resolve(bs, dep)) < 0)
        return ret;
    if (c->depends && (ret = qcow2_cache_resolve(bs, c)) < 0)
        return ret;
    c->depends = dep;
    return 0;
}

/* Write both caches in dependency order (the driver's flush: the
 * dispatch layer flushes the file child afterwards). */
int
vbk_qcow2_meta_writeback(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;
    int ret = vbk_qcow2_cache_write(bs, s->l2_cache);

    if (ret == 0)
        ret = vbk_qcow2_cache_write(bs, s->rb_cache);
    return ret;
}

/* Write both caches, then flush the file child. */
int
vbk_qcow2_meta_flush(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;
    int ret = vbk_qcow2_meta_writeback(bs);

    if (ret == 0)
        ret = vbk_block_flush(bs->file);
    if (ret == 0)
        s->l2_cache->unsynced = s->rb_cache->unsynced = false;
    return ret;
}

/*
 * The table at @offset.  @fresh: the cluster was just allocated, start
 * from zeroes instead of reading it.  Evicting a dirty table writes it
 * first (after the cache's dependency).
 */
int
vbk_qcow2_cache_get(VbkBlockNode *bs,
                    VbkQcow2Cache *c,
                    uint64_t offset,
                    bool fresh,
                    uint8_t **table)
{
    QcowCacheSlot *victim = NULL;
    int ret;

    for (unsigned int i = 0; i < c->n; i++) {
        QcowCacheSlot *slot = &c->slots[i];
        if (slot->offset == offset) {
            slot->used = ++c->tick;
            if (fresh) {
                memset(slot->table, 0, c->table_size);
                qcow2_slot_clean(c, slot);
            }
            *table = slot->table;
            return 0;
        }
        if (!victim || slot->offset == 0 ||
            (victim->offset != 0 && slot->used < victim->used))
            victim = slot;
    }
    if (victim->dirty_hi > victim->dirty_lo) {
        ret = qcow2_cache_resolve(bs, c);
        if (ret == 0)
            ret = qcow2_slot_write(bs, c, victim);
        if (ret < 0)
            return ret;
    }
    if (!victim->table)
        victim->table = g_aligned_alloc(1, c->table_size, 4096); /* O_DIRECT */
    victim->offset = 0;
    if (fresh) {
        memset(victim->table, 0, c->table_size);
    } else {
        ret = vbk_block_pread(bs->file, offset, c->table_size, victim->table);
        if (ret < 0)
            return ret;
    }
    victim->offset = offset;
    victim->used = ++c->tick;
    *table = victim->table;
    return 0;
}

static uint64_t
qcow2_meta_align(VbkBlockNode *bs, uint64_t cluster_size)
{
    uint64_t align = 512;

    if (bs->file && bs->file->request_alignment > align)
        align = bs->file->request_alignment;
    return MIN(align, cluster_size);
}

/* Write bytes [@start, @start+@len) of the cluster-sized @table that
 * lives at @table_offset, widened to the file's alignment. */
int
vbk_qcow2_meta_write(VbkBlockNode *bs,
                     uint64_t table_offset,
                     const uint8_t *table,
                     uint64_t start,
                     uint64_t len)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t align = qcow2_meta_align(bs, s->cluster_size);
    uint64_t a = start & ~(align - 1);
    uint64_t b = (start + len + align - 1) & ~(align - 1);
    int ret;

    if (b > s->cluster_size)
        b = s->cluster_size;
    ret = vbk_block_pwrite(bs->file, table_offset + a, b - a, table + a, 0);
    if (ret < 0)
        return ret;
    vbk_qcow2_note_file_end(s, table_offset + b);
    return 0;
}

/* Fill @n clusters at @offset with zeroes (new metadata clusters). */
int
vbk_qcow2_write_cluster_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    g_autofree uint8_t *zero = g_malloc0(s->cluster_size);
    int ret;

    for (uint64_t i = 0; i < n; i++) {
        ret = vbk_block_pwrite(bs->file, offset + i * s->cluster_size,
                               s->cluster_size, zero, 0);
        if (ret < 0)
            return ret;
    }
    vbk_qcow2_note_file_end(s, offset + n * s->cluster_size);
    return 0;
}

void
vbk_qcow2_note_file_end(VbkQcow2State *s, uint64_t end)
{
    if (end > s->file_size)
        s->file_size = end;
}

static bool
qcow2_overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* A data cluster may live anywhere a table of ours does not. */
bool
vbk_qcow2_data_offset_valid(VbkQcow2State *s, uint64_t offset)
{
    uint64_t cs = s->cluster_size;

    if (offset < cs || (offset & (cs - 1)) || offset > (uint64_t) INT64_MAX)
        return false;
    if (qcow2_overlaps(offset, cs, s->hdr.l1_table_offset,
                       (uint64_t) s->l1_size * 8))
        return false;
    if (qcow2_overlaps(offset, cs, s->hdr.refcount_table_offset,
                       s->reftable_entries * 8))
        return false;
    return true;
}

/* An L2 table or refcount block must also be inside the file. */
bool
vbk_qcow2_meta_offset_valid(VbkQcow2State *s, uint64_t offset)
{
    return vbk_qcow2_data_offset_valid(s, offset) &&
           offset + s->cluster_size <= s->file_size;
}

/* Patch @len bytes at @off of the header, rewriting whole sectors. */
int
vbk_qcow2_header_patch(VbkBlockNode *bs,
                       uint64_t off,
                       const uint8_t *data,
                       size_t len)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t align = qcow2_meta_align(bs, s->cluster_size);
    g_autofree uint8_t *sector = g_malloc(align);
    int ret;

    g_assert(off + len <= align);
    ret = vbk_block_pread(bs->file, 0, align, sector);
    if (ret < 0)
        return ret;
    memcpy(sector + off, data, len);
    return vbk_block_pwrite(bs->file, 0, align, sector, 0);
}

int
vbk_qcow2_header_write_u64(VbkBlockNode *bs, uint64_t off, uint64_t v)
{
    uint8_t buf[8];

    qcow2_put_be64(buf, v);
    return vbk_qcow2_header_patch(bs, off, buf, 8);
}

int
vbk_qcow2_header_write_u32(VbkBlockNode *bs, uint64_t off, uint32_t v)
{
    uint8_t buf[4];

    qcow2_put_be32(buf, v);
    return vbk_qcow2_header_patch(bs, off, buf, 4);
}

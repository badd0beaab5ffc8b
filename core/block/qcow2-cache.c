/*
 * qcow2-cache.c: a small LRU cache of cluster-sized metadata tables.
 *
 * The driver keeps two caches, one of L2 tables and one of refcount
 * blocks.  A table is identified by its host offset; a miss reads the
 * whole cluster from the file child, evicting the least recently used
 * slot.  Updates are write-through: the caller changes the cached bytes
 * and calls vbk_qcow2_meta_write() with the range it touched, which
 * writes the enclosing aligned sectors at once.  So a slot is never
 * dirty and eviction never writes.
 *
 * A pointer returned by vbk_qcow2_cache_get() stays valid until the next
 * get on the same cache; callers hold at most one table per cache.
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
} QcowCacheSlot;

struct VbkQcow2Cache {
    QcowCacheSlot *slots;
    unsigned int n;
    size_t table_size;
    uint64_t tick;
};

VbkQcow2Cache *
vbk_qcow2_cache_new(unsigned int n, size_t table_size)
{
    VbkQcow2Cache *c = g_new0(VbkQcow2Cache, 1);

    c->n = n;
    c->table_size = table_size;
    c->slots = g_new0(QcowCacheSlot, n);
    return c;
}

void
vbk_qcow2_cache_free(VbkQcow2Cache *c)
{
    if (!c)
        return;
    for (unsigned int i = 0; i < c->n; i++)
        g_free(c->slots[i].table);
    g_free(c->slots);
    g_free(c);
}

void
vbk_qcow2_cache_clear(VbkQcow2Cache *c)
{
    for (unsigned int i = 0; i < c->n; i++)
        c->slots[i].offset = 0;
}

void
vbk_qcow2_cache_drop(VbkQcow2Cache *c, uint64_t offset)
{
    for (unsigned int i = 0; i < c->n; i++) {
        if (c->slots[i].offset == offset)
            c->slots[i].offset = 0;
    }
}

/*
 * The table at @offset.  @fresh: the cluster was just allocated, start
 * from zeroes instead of reading it.
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
            if (fresh)
                memset(slot->table, 0, c->table_size);
            *table = slot->table;
            return 0;
        }
        if (!victim || slot->offset == 0 ||
            (victim->offset != 0 && slot->used < victim->used))
            victim = slot;
    }
    if (!victim->table)
        victim->table = g_malloc(c->table_size);
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

/*
 * qcow2.h: state shared by the files of the qcow2 driver.
 *
 * The driver is split by concept:
 *   qcow2-header.c   decode/validate and encode the header and extensions
 *   qcow2-cache.c    write-back LRU cache of L2 tables and refcount
 *                    blocks with ordering dependencies, offset validation
 *   qcow2-refcount.c refcount table/blocks, cluster allocation and freeing
 *   qcow2-rebuild.c  rebuilding refcounts of a dirty (lazy refcount) image
 *   qcow2-cluster.c  L1/L2 lookup, L2 allocation and entry updates
 *   qcow2-io.c       read, write, write-zeroes, discard, block status
 *   qcow2-compress-write.c  compressed cluster writes (byte-packed)
 *   qcow2-shrink.c   shrinking the virtual size
 *   qcow2.c          the driver table: open, close, create, grow, info
 *
 * Locking: VbkQcow2State.lock guards every field below and all metadata
 * on disk; request entry points hold it while they look up or change
 * metadata.  Reads of data clusters, of the backing file, and writes in
 * place over data clusters run outside it; data_lock (held as reader
 * around them, as writer while clusters are freed) keeps a cluster from
 * being freed and reused under such an access.  Lock order: lock, then
 * data_lock.  Both metadata caches are used under @lock only.
 *
 * Metadata updates of L2 tables and refcount blocks stay in the
 * write-back caches until a flush, close, eviction or a switch of a
 * table pointer (L1 entry, reftable, header) writes them; the caches
 * keep the on-disk order safe (qcow2-cache.c): refcount increments are
 * synced before an L2 entry that points at the new clusters is written,
 * a new L2 table and its refcount before the L1 entry pointing at it,
 * and cleared L2 entries before the refcount decrements of what they
 * referenced.  The L1 table, the reftable and the header are written
 * through.  So a crash (process kill or power loss) can leak clusters
 * but never corrupt the image, and everything written before the last
 * completed flush reads back.
 */
#pragma once

#include "block-int.h"

G_BEGIN_DECLS

#define QCOW2_MAGIC                0x514649fbu

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_SUPPORTED                                               \
    (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_COMPRESSION)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0)
#define QCOW2_AUTOCLEAR_RAW_DATA    (1ull << 1)

#define QCOW2_EXT_END               0x00000000u
#define QCOW2_EXT_BACKING_FMT       0xe2792acau
#define QCOW2_EXT_FEATURES          0x6803f857u
#define QCOW2_EXT_BITMAPS           0x23852875u
#define QCOW2_EXT_CRYPTO            0x0537be77u
#define QCOW2_EXT_DATA_FILE         0x44415441u

#define QCOW2_COMPRESSION_ZLIB      0
#define QCOW2_COMPRESSION_ZSTD      1

#define QCOW2_OFLAG_COPIED          (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED      (1ull << 62)
#define QCOW2_OFLAG_ZERO            (1ull << 0)
#define QCOW2_OFFSET_MASK           0x00fffffffffffe00ull

#define QCOW2_V2_HEADER_LEN         72
#define QCOW2_V3_HEADER_LEN         104
#define QCOW2_HEADER_LEN_WRITTEN    112
#define QCOW2_MIN_CLUSTER_BITS      9
#define QCOW2_MAX_CLUSTER_BITS      21
#define QCOW2_MAX_L1_BYTES          (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES    (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS         65536
#define QCOW2_MAX_BACKING_NAME      1023
#define QCOW2_FEATURE_NAME_LEN      46

typedef struct {
    uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[QCOW2_FEATURE_NAME_LEN + 1];
} VbkQcow2FeatureName;

/* The decoded header; every field was checked by the decoder. */
typedef struct {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible;
    uint64_t compatible;
    uint64_t autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    char *backing_file;            /* NULL when none */
    char *backing_fmt;             /* NULL when no extension */
    VbkQcow2FeatureName *features; /* from the image's name table */
    size_t n_features;
    bool has_bitmaps; /* bitmaps extension present */
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    bool bitmaps_stale;            /* extension present, autoclear bit 0
                                    * clear: ignored (qcow2-bitmap.c) */
} VbkQcow2Header;

typedef enum {
    QCOW2_CL_UNALLOCATED,
    QCOW2_CL_ZERO_PLAIN, /* zero flag, no host cluster */
    QCOW2_CL_ZERO_ALLOC, /* zero flag with a preallocated host cluster */
    QCOW2_CL_NORMAL,
    QCOW2_CL_COMPRESSED,
} VbkQcow2ClusterType;

typedef struct VbkQcow2Cache VbkQcow2Cache;

typedef struct {
    GMutex lock;
    /* data clusters are read and written in place outside @lock, holding
     * this as readers; freeing clusters takes it as writer */
    GRWLock data_lock;
    /* guest ranges [start, end) whose fresh clusters are being written
     * outside @lock (qcow2-io.c); writes, zeroes and discards touching
     * them wait on @alloc_cond */
    GArray *alloc_inflight;
    GCond alloc_cond;
    unsigned int alloc_waiters; /* threads waiting on @alloc_cond */
    VbkQcow2Header hdr;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_bits; /* log2 of entries per L2 table */
    uint64_t l2_entries;
    uint32_t refcount_bits; /* 1 << refcount_order */
    uint32_t rb_bits;       /* log2 of entries per refcount block */
    uint64_t rb_entries;
    uint64_t refcount_max;
    uint32_t csize_shift; /* compressed descriptor layout */
    uint64_t csize_mask;
    uint64_t coffset_mask;
    uint64_t *l1; /* host order, l1_size entries */
    uint32_t l1_size;
    uint64_t *reftable; /* host order */
    uint64_t reftable_entries;
    VbkQcow2Cache *l2_cache;
    VbkQcow2Cache *rb_cache;
    uint64_t l2_cache_bytes; /* options; 0: default size */
    uint64_t rb_cache_bytes;
    uint64_t free_hint; /* lowest cluster index that may be free */
    /* qcow2-compress-write.c: where the next compressed cluster may be
     * packed (inside a host cluster already holding compressed data),
     * 0 when none; reset when that cluster is freed */
    uint64_t free_byte_offset;
    uint64_t file_size; /* bytes of the file child we know of */
    bool writable;
    GPtrArray *bitmap_dir;   /* qcow2-bitmap.c: directory entries, in
                              * directory order; changed only under both
                              * the node's bitmap lock and this lock */
} VbkQcow2State;

/* ---- qcow2-header.c ---- */
bool vbk_qcow2_header_decode(const uint8_t *buf,
                             size_t len,
                             uint64_t file_size,
                             VbkQcow2Header *h,
                             GError **error);
bool vbk_qcow2_header_encode(const VbkQcow2Header *h,
                             uint8_t *buf,
                             size_t cluster_size,
                             GError **error);
void vbk_qcow2_header_clear(VbkQcow2Header *h);
char *
vbk_qcow2_feature_list(const VbkQcow2Header *h, uint8_t type, uint64_t mask);

/* ---- qcow2-cache.c ---- */
VbkQcow2Cache *
vbk_qcow2_cache_new(unsigned int n, size_t table_size, VbkBlockEvent event);
void vbk_qcow2_cache_free(VbkQcow2Cache *c);
int vbk_qcow2_cache_get(VbkBlockNode *bs,
                        VbkQcow2Cache *c,
                        uint64_t offset,
                        bool fresh,
                        uint8_t **table);
void vbk_qcow2_cache_dirty(VbkQcow2Cache *c,
                           const uint8_t *table,
                           uint64_t start,
                           uint64_t len);
bool vbk_qcow2_cache_is_dirty(VbkQcow2Cache *c);
int
vbk_qcow2_cache_depend(VbkBlockNode *bs, VbkQcow2Cache *c, VbkQcow2Cache *dep);
int vbk_qcow2_cache_write(VbkBlockNode *bs, VbkQcow2Cache *c);
int vbk_qcow2_meta_writeback(VbkBlockNode *bs);
int vbk_qcow2_meta_flush(VbkBlockNode *bs);
void vbk_qcow2_cache_drop(VbkQcow2Cache *c, uint64_t offset);
void vbk_qcow2_cache_clear(VbkQcow2Cache *c);
int vbk_qcow2_meta_write(VbkBlockNode *bs,
                         uint64_t table_offset,
                         const uint8_t *table,
                         uint64_t start,
                         uint64_t len);
int
vbk_qcow2_write_cluster_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t n);
bool vbk_qcow2_meta_offset_valid(VbkQcow2State *s, uint64_t offset);
bool vbk_qcow2_data_offset_valid(VbkQcow2State *s, uint64_t offset);
void vbk_qcow2_note_file_end(VbkQcow2State *s, uint64_t end);
int vbk_qcow2_header_patch(VbkBlockNode *bs,
                           uint64_t off,
                           const uint8_t *data,
                           size_t len);
int vbk_qcow2_header_write_u64(VbkBlockNode *bs, uint64_t off, uint64_t v);
int vbk_qcow2_header_write_u32(VbkBlockNode *bs, uint64_t off, uint32_t v);

/* ---- qcow2-refcount.c ---- */
bool vbk_qcow2_refcount_load(VbkBlockNode *bs, GError **error);
uint64_t vbk_qcow2_rb_get(VbkQcow2State *s, const uint8_t *rb, uint64_t i);
void vbk_qcow2_rb_set(VbkQcow2State *s, uint8_t *rb, uint64_t i, uint64_t v);
int
vbk_qcow2_get_refcount(VbkBlockNode *bs, uint64_t cluster, uint64_t *refcount);
int64_t vbk_qcow2_alloc_clusters(VbkBlockNode *bs, uint64_t n);
int vbk_qcow2_free_clusters(VbkBlockNode *bs, uint64_t offset, uint64_t n);
void vbk_qcow2_compressed_range(VbkQcow2State *s,
                                uint64_t entry,
                                uint64_t *coffset,
                                uint64_t *csize);
int vbk_qcow2_free_entry(VbkBlockNode *bs, uint64_t entry);
int vbk_qcow2_ref_clusters(VbkBlockNode *bs, uint64_t cluster, uint64_t n);

/* ---- qcow2-rebuild.c ---- */
bool vbk_qcow2_rebuild_refcounts(VbkBlockNode *bs, GError **error);

/* ---- qcow2-cluster.c ---- */
VbkQcow2ClusterType vbk_qcow2_entry_type(VbkQcow2State *s, uint64_t entry);
int vbk_qcow2_l2_lookup(VbkBlockNode *bs,
                        uint64_t offset,
                        uint64_t bytes,
                        uint64_t *entry,
                        uint64_t *pnum);
int vbk_qcow2_l2_prepare(VbkBlockNode *bs,
                         uint64_t offset,
                         uint8_t **l2,
                         uint64_t *l2_offset);
int vbk_qcow2_l2_set(VbkBlockNode *bs,
                     uint64_t offset,
                     uint64_t n,
                     const uint64_t *entries);
bool vbk_qcow2_grow_l1(VbkBlockNode *bs, uint64_t min_size, GError **error);
int vbk_qcow2_read_compressed(VbkBlockNode *bs, uint64_t entry, uint8_t *out);

/* ---- qcow2-shrink.c ---- */
bool vbk_qcow2_shrink(VbkBlockNode *bs, uint64_t size, GError **error);

/* ---- qcow2-io.c ---- */
int vbk_qcow2_co_pread(VbkBlockNode *bs,
                       uint64_t offset,
                       uint64_t bytes,
                       void *buf);
int vbk_qcow2_co_pwrite(VbkBlockNode *bs,
                        uint64_t offset,
                        uint64_t bytes,
                        const void *buf,
                        VbkRequestFlags flags);
int vbk_qcow2_co_pwrite_zeroes(VbkBlockNode *bs,
                               uint64_t offset,
                               uint64_t bytes,
                               VbkRequestFlags flags);
int vbk_qcow2_zeroes_locked(VbkBlockNode *bs,
                            uint64_t offset,
                            uint64_t bytes,
                            VbkRequestFlags flags);
int vbk_qcow2_co_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes);
/* Under the lock: wait for the allocating writes in flight (outside the
 * lock) that touch [offset, offset+bytes) (qcow2-shrink.c,
 * qcow2-compress-write.c). */
void vbk_qcow2_wait_alloc(VbkQcow2State *s, uint64_t offset, uint64_t bytes);
int vbk_qcow2_co_block_status(VbkBlockNode *bs,
                              uint64_t offset,
                              uint64_t bytes,
                              uint64_t *pnum,
                              uint64_t *map,
                              VbkBlockNode **file);

/* ---- qcow2-compress-write.c ---- */
int vbk_qcow2_pwrite_compressed(VbkBlockNode *bs,
                                uint64_t offset,
                                uint64_t bytes,
                                const uint8_t *buf);

static inline uint64_t
qcow2_be64(const uint8_t *p)
{
    return ((uint64_t) p[0] << 56) | ((uint64_t) p[1] << 48) |
           ((uint64_t) p[2] << 40) | ((uint64_t) p[3] << 32) |
           ((uint64_t) p[4] << 24) | ((uint64_t) p[5] << 16) |
           ((uint64_t) p[6] << 8) | p[7];
}

static inline uint32_t
qcow2_be32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
           ((uint32_t) p[2] << 8) | p[3];
}

static inline void
qcow2_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = v & 0xff;
        v >>= 8;
    }
}

static inline void
qcow2_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = v & 0xff;
        v >>= 8;
    }
}

/* Entry @i of a big-endian table of u64. */
static inline uint64_t
qcow2_table_get(const uint8_t *table, uint64_t i)
{
    return qcow2_be64(table + i * 8);
}

static inline void
qcow2_table_set(uint8_t *table, uint64_t i, uint64_t v)
{
    qcow2_put_be64(table + i * 8, v);
}

G_END_DECLS

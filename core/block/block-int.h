/*
 * block-int.h: what a block driver sees — the driver table and the node.
 *
 * Only core/block/ includes this header.  A driver is a static const
 * VbkBlockDriver with designated initialisers; NULL callbacks mean "not
 * supported" and the dispatch layer (io.c) answers -ENOTSUP, or for
 * filters forwards to bs->file.  The dispatch layer checks ranges and
 * flags once; drivers may assume valid requests.  Drivers never call each
 * other; they reach their children only through vbk_block_pread() & co.
 */
#pragma once

#include "block.h"
#include "bitmap/hbitmap.h"

G_BEGIN_DECLS

/* @d must be a power of two for the mask forms; these work for any d. */
#define VBK_ROUND_DOWN(n, d) (((n) / (d)) * (d))
#define VBK_ROUND_UP(n, d)   VBK_ROUND_DOWN((n) + (d) - 1, (d))
#define VBK_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

/*
 * blkdebug events (QEMU's BlkdebugEvent, same names and order).  Format
 * drivers fire them on their file child at the points QEMU does, e.g.
 * vbk_block_event(bs->file, VBK_EVENT_L2_UPDATE) before writing an L2
 * entry; a blkdebug node below turns them into state changes and errors.
 */
typedef enum {
    VBK_EVENT_L1_UPDATE,
    VBK_EVENT_L1_GROW_ALLOC_TABLE,
    VBK_EVENT_L1_GROW_WRITE_TABLE,
    VBK_EVENT_L1_GROW_ACTIVATE_TABLE,
    VBK_EVENT_L2_LOAD,
    VBK_EVENT_L2_UPDATE,
    VBK_EVENT_L2_UPDATE_COMPRESSED,
    VBK_EVENT_L2_ALLOC_COW_READ,
    VBK_EVENT_L2_ALLOC_WRITE,
    VBK_EVENT_READ_AIO,
    VBK_EVENT_READ_BACKING_AIO,
    VBK_EVENT_READ_COMPRESSED,
    VBK_EVENT_WRITE_AIO,
    VBK_EVENT_WRITE_COMPRESSED,
    VBK_EVENT_VMSTATE_LOAD,
    VBK_EVENT_VMSTATE_SAVE,
    VBK_EVENT_COW_READ,
    VBK_EVENT_COW_WRITE,
    VBK_EVENT_REFTABLE_LOAD,
    VBK_EVENT_REFTABLE_GROW,
    VBK_EVENT_REFTABLE_UPDATE,
    VBK_EVENT_REFBLOCK_LOAD,
    VBK_EVENT_REFBLOCK_UPDATE,
    VBK_EVENT_REFBLOCK_UPDATE_PART,
    VBK_EVENT_REFBLOCK_ALLOC,
    VBK_EVENT_REFBLOCK_ALLOC_HOOKUP,
    VBK_EVENT_REFBLOCK_ALLOC_WRITE,
    VBK_EVENT_REFBLOCK_ALLOC_WRITE_BLOCKS,
    VBK_EVENT_REFBLOCK_ALLOC_WRITE_TABLE,
    VBK_EVENT_REFBLOCK_ALLOC_SWITCH_TABLE,
    VBK_EVENT_CLUSTER_ALLOC,
    VBK_EVENT_CLUSTER_ALLOC_BYTES,
    VBK_EVENT_CLUSTER_FREE,
    VBK_EVENT_FLUSH_TO_OS,
    VBK_EVENT_FLUSH_TO_DISK,
    VBK_EVENT_PWRITEV_RMW_HEAD,
    VBK_EVENT_PWRITEV_RMW_AFTER_HEAD,
    VBK_EVENT_PWRITEV_RMW_TAIL,
    VBK_EVENT_PWRITEV_RMW_AFTER_TAIL,
    VBK_EVENT_PWRITEV,
    VBK_EVENT_PWRITEV_ZERO,
    VBK_EVENT_PWRITEV_DONE,
    VBK_EVENT_EMPTY_IMAGE_PREPARE,
    VBK_EVENT_L1_SHRINK_WRITE_TABLE,
    VBK_EVENT_L1_SHRINK_FREE_L2_CLUSTERS,
    VBK_EVENT_COR_WRITE,
    VBK_EVENT_CLUSTER_ALLOC_SPACE,
    VBK_EVENT_NONE,
    VBK_EVENT__MAX,
} VbkBlockEvent;

/* QEMU's event names ("l2_update"); NULL when out of range. */
const char *vbk_block_event_name(VbkBlockEvent event);
/* Parse an event name; -1 when unknown. */
int vbk_block_event_from_name(const char *name);

/*
 * Fire @event at @bs: the first node from @bs down its file children that
 * has a debug_event callback (a blkdebug node) receives it.  Cheap when
 * there is none: a walk of the file chain.
 */
void vbk_block_event(VbkBlockNode *bs, VbkBlockEvent event);

struct VbkBlockDriver {
    const char *format_name;
    size_t instance_size;      /* bytes of bs->opaque, zero-filled */
    bool is_filter;            /* I/O defaults forward to bs->file */
    bool is_format;            /* has a "file" child and may have backing */
    bool supports_backing;     /* understands a "backing" child */
    /* pwrite takes VBK_REQ_WRITE_COMPRESSED (the dispatch layer refuses
     * it with -ENOTSUP for every other driver, filters included, as
     * QEMU's filters here do not forward compressed writes) */
    bool supports_compressed_writes;
    /* option key of the file child when it is not "file" (blkdebug:
     * "image"); such a driver opens it with
     * vbk_block_open_file_child_key() */
    const char *file_key;
    /* keys this driver accepts in its blockdev-add options (besides the
     * common ones and 'file'/'backing'), NULL-terminated */
    const char *const *options;

    /*
     * Open: @opts is the node's own a{sv}.  Format drivers call
     * vbk_block_open_child(bs, opts, "file", ...) themselves, and (when
     * supports_backing) vbk_block_open_backing().
     */
    bool (*open)(VbkBlockNode *bs, GVariant *opts, GError **error);
    /* Close: flush and release everything; children are unref'd by core. */
    void (*close)(VbkBlockNode *bs);

    int (*pread)(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                 void *buf);
    int (*pwrite)(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                  const void *buf, VbkRequestFlags flags);
    int (*pwrite_zeroes)(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                         VbkRequestFlags flags);
    int (*pdiscard)(VbkBlockNode *bs, uint64_t offset, uint64_t bytes);
    int (*flush)(VbkBlockNode *bs);
    /* See vbk_block_block_status(); sets map and file for OFFSET_VALID. */
    int (*block_status)(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                        uint64_t *pnum, uint64_t *map, VbkBlockNode **file);
    int64_t (*getlength)(VbkBlockNode *bs);
    int64_t (*allocated_size)(VbkBlockNode *bs);
    bool (*truncate)(VbkBlockNode *bs, uint64_t size, GError **error);
    /* blockdev-reopen: become read-only or read-write (reopen.c calls it
     * with the file child already read-write, or no read-write parent
     * left); NULL when the driver keeps no state that depends on it */
    bool (*reopen)(VbkBlockNode *bs, bool read_only, GError **error);
    bool (*format_info)(VbkBlockNode *bs, VbkFormatInfo *info);
    uint32_t (*cluster_size)(VbkBlockNode *bs);
    /* persistent dirty bitmaps: may a new one be stored (QEMU's checks
     * and messages)?  remove one from the image at once. */
    bool (*can_store_new_bitmap)(VbkBlockNode *bs, const char *name,
                                 uint64_t granularity, GError **error);
    bool (*remove_persistent_bitmap)(VbkBlockNode *bs, const char *name,
                                     GError **error);
    /* blkdebug: an event fired on this node (see vbk_block_event()) */
    void (*debug_event)(VbkBlockNode *bs, VbkBlockEvent event);
};

struct VbkBlockNode {
    gint refcnt;
    char *node_name;           /* never NULL: generated when anonymous */
    bool auto_named;           /* node-name was generated */
    /* read-only / node-name were in the node's own options (not
     * inherited from a parent) at open or at the last reopen; QEMU keeps
     * such "explicit options" and reopen.c follows its rules on them */
    bool ro_explicit;
    bool name_explicit;
    const VbkBlockDriver *drv;
    void *opaque;              /* drv->instance_size bytes */
    char *filename;            /* what queries show as "file" */
    bool read_only;
    bool cache_direct;         /* cache.direct (O_DIRECT on file nodes) */
    bool cache_no_flush;
    bool discard_unmap;        /* discard=unmap: pass discards down */
    VbkBlockNode *file;        /* "file" child, owned reference */
    VbkBlockNode *backing;     /* "backing" child, owned reference */
    char *backing_filename;    /* as recorded by the format, for queries */
    uint32_t request_alignment; /* 1 unless O_DIRECT etc. */
    int parents;               /* nodes holding this as a child */

    /* dirty bitmaps (dirty.c): all under dirty_lock */
    GMutex dirty_lock;
    GPtrArray *dirty_bitmaps;  /* VbkDirtyBitmap, owning, newest first */
    VbkHBitmap *dirty_log;     /* pending writes, see dirty.c */
    uint64_t dirty_log_granularity;
    uint64_t dirty_log_size;   /* bytes covered by the log */
    gint dirty_active;         /* atomic: a bitmap records */

    /* copy-before-write filters watching this node (cbw.c) */
    GSList *before_write;
};

/* dirty.c: mark the node's recording bitmaps (io.c, after each write) */
void vbk_block_dirty_mark(VbkBlockNode *bs, uint64_t offset, uint64_t bytes);
/* dirty.c: follow a resize; drop every bitmap when the node closes */
void vbk_block_dirty_truncate(VbkBlockNode *bs, uint64_t size);
void vbk_block_dirty_release_all(VbkBlockNode *bs);

/* cbw.c: let every copy-before-write filter above @bs copy the old data
 * of [offset, offset+bytes) first (io.c, before writes, write-zeroes and
 * discards reach the driver).  0 or -errno: the request must fail. */
int vbk_block_before_write(VbkBlockNode *bs, uint64_t offset, uint64_t bytes);

/* block.c: refuse keys of @opts that @drv does not take, with QAPI's
 * "Parameter '<prefix><key>' is unexpected". */
bool vbk_block_check_keys(GVariant *opts, const VbkBlockDriver *drv,
                          const char *prefix, GError **error);

/* Registered drivers, looked up by format_name (block.c). */
const VbkBlockDriver *vbk_block_driver_find(const char *name);

extern const VbkBlockDriver vbk_drv_file;
extern const VbkBlockDriver vbk_drv_raw;
extern const VbkBlockDriver vbk_drv_null_co;
extern const VbkBlockDriver vbk_drv_qcow2;
extern const VbkBlockDriver vbk_drv_blkdebug;
extern const VbkBlockDriver vbk_drv_cbw;

/*
 * Open (or look up) the child @key of @opts and attach it to @parent's
 * bs->file.  A string value names an existing node; an a{sv} is opened
 * inline.  When @required and the key is absent: "Parameter 'file' is
 * missing" (QEMU's words).
 */
bool vbk_block_open_file_child(VbkBlockNode *parent, GVariant *opts,
                               bool required, GError **error);
/* The same for a driver whose file child has another key (blkdebug's
 * "image"). */
bool vbk_block_open_file_child_key(VbkBlockNode *parent, GVariant *opts,
                                   const char *key, bool required,
                                   GError **error);

/*
 * Attach the backing child of a format node.  @opts' "backing" key wins:
 * null/"" means none, a string references a node, an a{sv} opens inline.
 * Without the key, @header_filename (from the image) is opened relative
 * to the parent's file name, with format @header_format (NULL: probe).
 */
bool vbk_block_open_backing(VbkBlockNode *parent, GVariant *opts,
                            const char *header_filename,
                            const char *header_format, GError **error);

/* Option helpers: FALSE with QEMU's message when the type is wrong. */
bool vbk_opts_get_string(GVariant *opts, const char *key, const char **out,
                         GError **error);
bool vbk_opts_get_uint64(GVariant *opts, const char *key, uint64_t *out,
                         GError **error);
bool vbk_opts_get_bool(GVariant *opts, const char *key, bool *out,
                       GError **error);
/* Returns 1 when found (out set), 0 when absent, -1 on type error. */
int vbk_opts_lookup_string(GVariant *opts, const char *key, const char **out,
                           GError **error);
int vbk_opts_lookup_uint64(GVariant *opts, const char *key, uint64_t *out,
                           GError **error);
int vbk_opts_lookup_bool(GVariant *opts, const char *key, bool *out,
                         GError **error);

/* Path of @rel relative to the directory of @base (as QEMU's
 * bdrv_get_full_backing_filename); absolute @rel is returned as is. */
char *vbk_block_path_combine(const char *base, const char *rel);

G_END_DECLS

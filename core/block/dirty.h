/*
 * dirty.h: dirty bitmaps attached to block nodes (QEMU's bdrv_*dirty*).
 *
 * Every write, write-zeroes and discard through a node marks all of its
 * recording bitmaps — failed requests too, as QEMU does.  The operations
 * below take a node name and a bitmap name and report errors in QEMU's
 * words, so that the QMP door and the libvirt driver share them.
 *
 * Thread safety: each node has one bitmap lock; every function here takes
 * it.  Code that must work on a node's VbkDirtyBitmap objects directly
 * (backup jobs, the qcow2 bitmap store, NBD exports) brackets that work
 * with vbk_block_dirty_lock()/unlock(), which also brings the bitmaps up
 * to date (see dirty.c on the pending-write log).
 */
#pragma once

#include "block.h"
#include "bitmap/dirty-bitmap.h"

G_BEGIN_DECLS

/* A merge source: @node NULL means the target's node. */
typedef struct {
    const char *node;
    const char *name;
} VbkBitmapRef;

/* One entry of "dirty-bitmaps" in query-block / query-named-block-nodes. */
typedef struct {
    char *name;              /* NULL for anonymous bitmaps */
    uint64_t count;          /* dirty bytes */
    uint64_t granularity;
    bool recording;
    bool busy;
    bool persistent;
    bool inconsistent;
} VbkDirtyBitmapInfo;

void vbk_dirty_bitmap_info_free(VbkDirtyBitmapInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkDirtyBitmapInfo, vbk_dirty_bitmap_info_free)

/* block-dirty-bitmap-add.  @granularity 0: the default for the node. */
bool vbk_block_dirty_bitmap_add(const char *node, const char *name,
                                uint64_t granularity, bool persistent,
                                bool disabled, GError **error);
/* block-dirty-bitmap-remove (also deletes a persistent one from disk). */
bool vbk_block_dirty_bitmap_remove(const char *node, const char *name,
                                   GError **error);
/* block-dirty-bitmap-clear; with @backup, for a transaction's abort. */
bool vbk_block_dirty_bitmap_clear(const char *node, const char *name,
                                  VbkHBitmap **backup, GError **error);
bool vbk_block_dirty_bitmap_enable(const char *node, const char *name,
                                   GError **error);
bool vbk_block_dirty_bitmap_disable(const char *node, const char *name,
                                    GError **error);
/* block-dirty-bitmap-merge: target |= every source; all or nothing. */
bool vbk_block_dirty_bitmap_merge(const char *node, const char *target,
                                  const VbkBitmapRef *sources,
                                  size_t n_sources, VbkHBitmap **backup,
                                  GError **error);
/* Undo a clear or merge of @name with the backup it returned. */
void vbk_block_dirty_bitmap_restore(const char *node, const char *name,
                                    VbkHBitmap *backup);
/* x-debug-block-dirty-bitmap-sha256.  (transfer full) */
char *vbk_block_dirty_bitmap_sha256(const char *node, const char *name,
                                    GError **error);

/*
 * The node's bitmaps for queries, newest first, as QEMU lists them.
 * Returns: (transfer full) (element-type VbkDirtyBitmapInfo).
 */
GPtrArray *vbk_block_dirty_bitmap_query(VbkBlockNode *bs);

/* ---- for jobs, formats and exports ------------------------------------ */

/* Take the node's bitmap lock, with every bitmap up to date. */
void vbk_block_dirty_lock(VbkBlockNode *bs);
void vbk_block_dirty_unlock(VbkBlockNode *bs);
/* Under the lock: find by name, (transfer none) or NULL. */
VbkDirtyBitmap *vbk_block_dirty_find_locked(VbkBlockNode *bs,
                                            const char *name);
/* Under the lock: attach a bitmap (takes a reference) as newest. */
void vbk_block_dirty_attach_locked(VbkBlockNode *bs, VbkDirtyBitmap *bm);
/* Under the lock: detach (drops the node's reference). */
void vbk_block_dirty_detach_locked(VbkBlockNode *bs, VbkDirtyBitmap *bm);
/* Under the lock: the node's bitmaps, newest first (transfer none). */
GPtrArray *vbk_block_dirty_bitmaps_locked(VbkBlockNode *bs);
/*
 * Under the lock: after changing which bitmaps record (enable, disable,
 * successor protocol) nothing else is needed; the pending log was merged
 * when the lock was taken.
 */

G_END_DECLS

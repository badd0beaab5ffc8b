/*
 * block.h: vbackup's block graph, the public C API of core/block.
 *
 * A block node is an instance of a driver (file, raw, null-co, qcow2,
 * later blkdebug and copy-before-write) with an optional "file" child
 * (the node a format or filter driver reads its bytes from) and an
 * optional "backing" child (the COW backing of a format node):
 *
 *     qcow2 "disk0" --file--> file "disk0-file"  (/var/.../disk0.qcow2)
 *        \--backing--> qcow2 "#block12" --file--> file "#block11"
 *
 * Nodes are reference counted; the graph keeps a registry of every node
 * by node-name (anonymous nodes get a generated "#blockNNN" name, as in
 * QEMU).  Both front doors (QMP and the libvirt driver) call the same
 * functions declared here; only the files of core/block reach into a driver.
 *
 * Conventions:
 *  - control paths (open, create, resize, graph changes) report through
 *    GError (domain VBK_BLOCK_ERROR) and return FALSE/NULL;
 *  - the I/O path (vbk_block_pread() and friends) returns 0 or -errno and
 *    allocates nothing per request that is not bounded by the request.
 *
 * Thread safety: the registry is protected by a graph mutex.  I/O entry
 * points may be called from any thread; each driver documents and takes
 * its own locks (e.g. qcow2's metadata mutex).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <vbackup/vbackup.h>

G_BEGIN_DECLS

typedef struct VbkBlockNode VbkBlockNode;
typedef struct VbkBlockDriver VbkBlockDriver;

/* Request flags for writes and write-zeroes. */
typedef enum {
    VBK_REQ_FUA = 1 << 0,         /* write through before completing */
    VBK_REQ_MAY_UNMAP = 1 << 1,   /* write-zeroes may deallocate */
    VBK_REQ_NO_FALLBACK = 1 << 2, /* write-zeroes must be fast or fail */
    /* write whole clusters (or the image's last partial one) compressed:
     * only drivers that advertise it (qcow2); others -ENOTSUP */
    VBK_REQ_WRITE_COMPRESSED = 1 << 3,
} VbkRequestFlags;

/*
 * Block-status flags, as QEMU's BDRV_BLOCK_*:
 *  DATA      the range reads from data stored in this node (or below it)
 *  ZERO      the range reads as zeroes
 *  OFFSET_VALID  *map holds the offset of the range in *file
 *  ALLOCATED the range is allocated in this layer (not from backing)
 *  EOF       the range reaches the end of the node
 */
typedef enum {
    VBK_BS_DATA = 1 << 0,
    VBK_BS_ZERO = 1 << 1,
    VBK_BS_OFFSET_VALID = 1 << 2,
    VBK_BS_ALLOCATED = 1 << 3,
    VBK_BS_EOF = 1 << 4,
} VbkBlockStatus;

/* Maximum bytes of one request through the dispatch layer. */
#define VBK_BLOCK_MAX_REQUEST (1u << 30)

/* ---- Graph ---------------------------------------------------------- */

/*
 * Open a node from blockdev-add style options.
 *
 * @opts: a GVariant of type a{sv} with QEMU's blockdev-add keys, e.g.
 *   {'driver': <'qcow2'>, 'node-name': <'disk0'>,
 *    'file': <{'driver': <'file'>, 'filename': <'/tmp/a.qcow2'>}>}
 *   A child ('file', 'backing') is either a string (the node-name of an
 *   existing node) or an inline a{sv}; 'backing' may also be null (the
 *   GVariant "maybe" nothing, or the string "") to open without backing.
 *   Integer values may be any GVariant integer type; booleans 'b'.
 *   Common keys: driver, node-name, read-only, auto-read-only, cache
 *   ({direct, no-flush}), discard ('ignore'|'unmap'), detect-zeroes,
 *   force-share.  Unknown keys fail with QEMU's message.
 *
 * Returns: (transfer full) the node, registered by name, or NULL.
 */
VbkBlockNode *vbk_block_node_open(GVariant *opts, GError **error);

/*
 * Open an image file by path as QEMU's -drive file=PATH,format=FMT
 * would: a file node plus a format node on top, backing chain opened
 * from the image header. @format may be NULL for probing.
 */
VbkBlockNode *vbk_block_node_open_image(const char *filename,
                                        const char *format,
                                        bool read_only,
                                        const char *node_name,
                                        GError **error);

/*
 * blockdev-reopen: give the nodes named by the @n option sets @opts
 * (blockdev-add style a{sv}, each with its node-name) those options;
 * read-only and discard may change.  All are checked before any change
 * (see reopen.c for the rules and QEMU's messages).
 */
bool vbk_block_reopen_multiple(GVariant *const *opts, guint n,
                               GError **error);

/* blockdev-del: drop the registry's reference of a node nobody uses. */
bool vbk_block_node_delete(const char *node_name, GError **error);

/* Is @name the format_name of a driver vbackup has? */
bool vbk_block_driver_known(const char *name);

/* Look up a node by node-name. Returns: (transfer none) or NULL. */
VbkBlockNode *vbk_block_node_find(const char *node_name);

/* As find, but sets QEMU's "Cannot find device=... nor node-name=..." */
VbkBlockNode *vbk_block_node_lookup(const char *device_or_node,
                                    GError **error);

VbkBlockNode *vbk_block_node_ref(VbkBlockNode *bs);
void vbk_block_node_unref(VbkBlockNode *bs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkBlockNode, vbk_block_node_unref)

/*
 * Snapshot of all named nodes, in creation order.
 * Returns: (transfer full) array of referenced nodes (free func unref).
 */
GPtrArray *vbk_block_node_list(void);

/* Close every node (at exit): flushes and stores persistent state. */
void vbk_block_graph_close_all(void);

/* ---- Node accessors ------------------------------------------------- */

const char *vbk_block_node_name(VbkBlockNode *bs);
const char *vbk_block_node_driver_name(VbkBlockNode *bs);
/* The file name this node shows in queries ("json:{...}" never needed). */
const char *vbk_block_node_filename(VbkBlockNode *bs);
VbkBlockNode *vbk_block_node_file(VbkBlockNode *bs);     /* transfer none */
VbkBlockNode *vbk_block_node_backing(VbkBlockNode *bs);  /* transfer none */
bool vbk_block_node_is_read_only(VbkBlockNode *bs);
bool vbk_block_node_is_filter(VbkBlockNode *bs);
bool vbk_block_node_cache_direct(VbkBlockNode *bs);
/* The virtual size in bytes, or -errno. */
int64_t vbk_block_node_getlength(VbkBlockNode *bs);
/* Bytes allocated on the host for this node ("actual-size"), or -errno. */
int64_t vbk_block_node_allocated_size(VbkBlockNode *bs);
/* The cluster size of a format node, 0 when it has none. */
uint32_t vbk_block_node_cluster_size(VbkBlockNode *bs);
/* Does the node take VBK_REQ_WRITE_COMPRESSED writes (QEMU's
 * bdrv_supports_compressed_writes)? */
bool vbk_block_node_supports_compressed_writes(VbkBlockNode *bs);

/* ---- I/O (returns 0 or -errno) -------------------------------------- */

int vbk_block_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                    void *buf);
int vbk_block_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                     const void *buf, VbkRequestFlags flags);
int vbk_block_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset,
                            uint64_t bytes, VbkRequestFlags flags);
int vbk_block_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes);
int vbk_block_flush(VbkBlockNode *bs);

/*
 * Block status of [offset, offset+bytes) in @bs alone.  Returns the
 * VbkBlockStatus flags of the first extent (>= 0) and sets *pnum to its
 * length (1 <= *pnum <= bytes); or -errno.  @map/@file may be NULL.
 */
int vbk_block_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                           uint64_t *pnum, uint64_t *map,
                           VbkBlockNode **file);

/*
 * Block status through the backing chain: like vbk_block_block_status
 * but a range unallocated in @bs is resolved in its backing nodes.
 * *depth receives the allocation depth of the extent: 1 allocated in
 * @bs, 2 in its backing, ..., 0 unallocated anywhere (qemu's
 * qemu:allocation-depth).  Returned flags are those of the layer that
 * holds the data.
 */
int vbk_block_block_status_above(VbkBlockNode *bs, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint32_t *depth);

/* block_resize: grow (or shrink, where the driver allows) the node. */
bool vbk_block_truncate(VbkBlockNode *bs, uint64_t size, GError **error);

/* ---- Image creation (blockdev-create) ------------------------------- */

typedef struct {
    uint64_t size;
    uint32_t cluster_size;   /* 0: default 65536 */
    int version;             /* 0: default 3; or 2 */
    int refcount_bits;       /* 0: default 16 */
    const char *backing_file;
    const char *backing_fmt;
    bool lazy_refcounts;
    bool zstd;               /* compression-type zstd (else deflate) */
} VbkQcow2CreateOptions;

/* blockdev-create driver=file: create (truncate) a file of @size bytes. */
bool vbk_file_create(const char *filename, uint64_t size, GError **error);

/* blockdev-create driver=qcow2: format the node @file as a qcow2 image. */
bool vbk_qcow2_create(VbkBlockNode *file, const VbkQcow2CreateOptions *opts,
                      GError **error);

/* ---- Format-specific information (query-named-block-nodes, info) ---- */

/* A persistent bitmap as the image's bitmap directory lists it now
 * (qemu-img info's format-specific "bitmaps"). */
typedef struct {
    char *name;
    uint64_t granularity;
    bool in_use;             /* flag "in-use" */
    bool enabled;            /* flag "auto" */
} VbkFormatBitmap;

typedef struct {
    const char *format;      /* "qcow2" */
    int version;             /* 2 or 3 */
    uint32_t cluster_size;
    int refcount_bits;
    bool lazy_refcounts;
    bool corrupt;
    bool extended_l2;
    bool zstd;
    char *backing_file;      /* from the header, or NULL */
    char *backing_fmt;
    /* (element-type VbkFormatBitmap) in directory order; NULL when the
     * image has no bitmap directory */
    GPtrArray *bitmaps;
} VbkFormatInfo;

void vbk_format_info_clear(VbkFormatInfo *info);
/* Append a bitmap named @name to @info (for drivers).  (transfer none) */
VbkFormatBitmap *vbk_format_info_add_bitmap(VbkFormatInfo *info,
                                            const char *name);
/* Fill @info for a format node; FALSE when the driver has none. */
bool vbk_block_node_format_info(VbkBlockNode *bs, VbkFormatInfo *info);

G_END_DECLS

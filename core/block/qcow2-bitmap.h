/*
 * qcow2-bitmap.h: persistent dirty bitmaps in qcow2 images (the bitmaps
 * extension 0x23852875, its directory, bitmap tables and data clusters).
 * See qcow2-bitmap.c for the on-disk rules and the crash-safe ordering.
 */
#pragma once

#include "qcow2.h"

G_BEGIN_DECLS

#define QCOW2_BME_FLAG_IN_USE     (1u << 0)
#define QCOW2_BME_FLAG_AUTO       (1u << 1)
#define QCOW2_BME_RESERVED_FLAGS  0xfffffffcu
#define QCOW2_BME_TYPE_DIRTY      1
#define QCOW2_BME_MIN_GRAN_BITS   9
#define QCOW2_BME_MAX_GRAN_BITS   31
#define QCOW2_BME_MAX_NAME_SIZE   1023
#define QCOW2_BME_MAX_TABLE_SIZE  0x8000000u
#define QCOW2_BME_MAX_PHYS_SIZE   0x20000000ull
#define QCOW2_BME_TABLE_RESERVED  0xff000000000001feull
#define QCOW2_BME_TABLE_ALL_ONES  1ull
#define QCOW2_MAX_BITMAPS         65535
#define QCOW2_MAX_BITMAP_DIR_SIZE (1024u * 65535u)

/* One decoded, validated bitmap directory entry. */
typedef struct {
    uint64_t table_offset;
    uint32_t table_size; /* entries */
    uint32_t flags;
    uint8_t gran_bits;
    char *name;
} VbkQcow2BitmapEntry;

/* ---- qcow2-bitmap-dir.c: on-disk form ---- */

void vbk_qcow2_bitmap_entry_free(gpointer entry);
VbkQcow2BitmapEntry *vbk_qcow2_bitmap_entry_copy(const VbkQcow2BitmapEntry *e);
/* Bytes of a directory entry with a name of @name_len bytes. */
uint64_t vbk_qcow2_bitmap_entry_size(size_t name_len);
/* Encode @dir (element-type VbkQcow2BitmapEntry); *size gets its bytes.
 * (transfer full) */
uint8_t *vbk_qcow2_bitmap_dir_encode(GPtrArray *dir, uint64_t *size);

/* The 24 bytes of the extension (@len must be 24); FALSE with QEMU's
 * message.  Sets h->has_bitmaps, or h->bitmaps_stale when autoclear bit 0
 * is clear (the extension is then ignored, as QEMU does). */
bool vbk_qcow2_bitmaps_ext_decode(const uint8_t *data,
                                  uint32_t len,
                                  VbkQcow2Header *h,
                                  GError **error);

/*
 * Decode the directory (@size bytes at @buf, announced to hold @nb
 * entries) of an image with clusters of 2^@cluster_bits bytes, a virtual
 * size of @disk_size and a file of @file_size bytes.
 * Returns: (transfer full) (element-type VbkQcow2BitmapEntry) or NULL.
 */
GPtrArray *vbk_qcow2_bitmap_dir_decode(const uint8_t *buf,
                                       uint64_t size,
                                       uint32_t nb,
                                       uint32_t cluster_bits,
                                       uint64_t disk_size,
                                       uint64_t file_size,
                                       GError **error);

/* ---- qcow2-bitmap.c: life cycle ---- */

/* Open: load the image's bitmaps into the node (see qcow2-bitmap.c). */
bool vbk_qcow2_bitmaps_load(VbkBlockNode *bs, GError **error);
/* Close: store the node's persistent bitmaps.  FALSE on an I/O error
 * (the image then keeps them in_use: they reload as inconsistent). */
bool vbk_qcow2_bitmaps_store(VbkBlockNode *bs, GError **error);
/* blockdev-reopen: make the persistent bitmaps read-only (or not) */
void vbk_qcow2_bitmaps_set_readonly(VbkBlockNode *bs, bool readonly);
/* blockdev-reopen read-write: mark the bitmaps loaded read-only in_use
 * on disk and make them writable (QEMU's qcow2_reopen_bitmaps_rw). */
bool vbk_qcow2_bitmaps_reopen_rw(VbkBlockNode *bs, GError **error);
/* Drop the in-memory directory (state teardown). */
void vbk_qcow2_bitmaps_free(VbkQcow2State *s);
/* What the directory lists now, for format-specific info (caller holds
 * VbkQcow2State.lock). */
void vbk_qcow2_bitmaps_format_info(VbkQcow2State *s, VbkFormatInfo *info);
/* Resize: QEMU's refusal when persistent bitmaps cannot follow. */
bool vbk_qcow2_bitmaps_truncate_check(VbkBlockNode *bs, GError **error);

/* The driver hooks (called under the node's bitmap lock). */
bool vbk_qcow2_can_store_new_bitmap(VbkBlockNode *bs,
                                    const char *name,
                                    uint64_t granularity,
                                    GError **error);
bool vbk_qcow2_remove_persistent_bitmap(VbkBlockNode *bs,
                                        const char *name,
                                        GError **error);

G_END_DECLS

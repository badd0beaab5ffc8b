/*
 * raw.c: the "raw" format driver — the bytes of its file child, as is.
 *
 * Every request goes straight to bs->file; block status reports the
 * child's extents with OFFSET_VALID so that callers can see through it.
 */
#include <glib/gi18n-lib.h>

#include "block-int.h"

static bool
raw_open(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    return vbk_block_open_file_child(bs, opts, true, error);
}

static int
raw_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    vbk_block_event(bs->file, VBK_EVENT_READ_AIO);
    return vbk_block_pread(bs->file, offset, bytes, buf);
}

static int
raw_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
           const void *buf, VbkRequestFlags flags)
{
    vbk_block_event(bs->file, VBK_EVENT_WRITE_AIO);
    return vbk_block_pwrite(bs->file, offset, bytes, buf, flags);
}

static int
raw_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                  VbkRequestFlags flags)
{
    return vbk_block_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int
raw_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    return vbk_block_pdiscard(bs->file, offset, bytes);
}

static int
raw_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                 uint64_t *pnum, uint64_t *map, VbkBlockNode **file)
{
    int ret = vbk_block_block_status(bs->file, offset, bytes, pnum, NULL, NULL);

    if (ret < 0)
        return ret;
    *map = offset;
    *file = bs->file;
    return (ret & (VBK_BS_DATA | VBK_BS_ZERO)) | VBK_BS_OFFSET_VALID;
}

static int64_t
raw_getlength(VbkBlockNode *bs)
{
    return vbk_block_node_getlength(bs->file);
}

static bool
raw_truncate(VbkBlockNode *bs, uint64_t size, GError **error)
{
    return vbk_block_truncate(bs->file, size, error);
}

const VbkBlockDriver vbk_drv_raw = {
    .format_name = "raw",
    .is_format = true,
    .open = raw_open,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .block_status = raw_block_status,
    .getlength = raw_getlength,
    .truncate = raw_truncate,
};

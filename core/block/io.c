/*
 * io.c: the dispatch layer of the block graph's data path.
 *
 * Every read, write, write-zeroes, discard, flush and block-status request
 * enters here, is checked once (range, size, read-only, discard mode) and
 * is then handed to the node's driver.  A driver that leaves an operation
 * NULL gets the generic behaviour:
 *
 *   filters            forward to bs->file
 *   pwrite_zeroes      a write of a shared zero buffer, in bounded pieces
 *   block_status       "all data" for the whole range
 *   flush              nothing to do for the node itself
 *
 * Flush fires flush_to_os and flush_to_disk at the file child (for a
 * blkdebug node there), write fires pwritev/pwritev_done and write-zeroes
 * pwritev_zero, as QEMU's generic layer does.  A compressed write
 * (VBK_REQ_WRITE_COMPRESSED) reaches only drivers that advertise it;
 * the others answer -ENOTSUP (qemu-io: "Operation not supported").
 *
 * After the driver, flush recurses into the file child, as QEMU's
 * bdrv_co_flush() does.  Discard is a no-op on nodes opened with
 * discard=ignore (the default), as QEMU does without BDRV_O_UNMAP.
 *
 * Everything here returns 0 (or flags) or -errno and allocates nothing
 * per request.
 */
#include <glib/gi18n-lib.h>
#include <errno.h>
#include <string.h>

#include "block-int.h"

/* a read-only zero buffer for write-zeroes fallbacks */
#define ZERO_BUF_SIZE (1u << 20)
static const void *
zero_buffer(void)
{
    static gsize once;
    static void *buf;

    if (g_once_init_enter(&once)) {
        buf = g_malloc0(ZERO_BUF_SIZE);
        g_once_init_leave(&once, 1);
    }
    return buf;
}

int64_t
vbk_block_node_getlength(VbkBlockNode *bs)
{
    if (bs->drv->getlength)
        return bs->drv->getlength(bs);
    if (bs->file)
        return vbk_block_node_getlength(bs->file);
    return -ENOMEDIUM;
}

int64_t
vbk_block_node_allocated_size(VbkBlockNode *bs)
{
    if (bs->drv->allocated_size)
        return bs->drv->allocated_size(bs);
    if (bs->file)
        return vbk_block_node_allocated_size(bs->file);
    return -ENOTSUP;
}

/*
 * Check a request against the node.  Protocol nodes and the filters above
 * them may be written past their end: that is how an image file grows
 * (qcow2 -> blkdebug -> file grows through the filter, as in QEMU).
 */
static int
check_request(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, bool write)
{
    int64_t len;

    if (bytes > VBK_BLOCK_MAX_REQUEST || offset > INT64_MAX - bytes)
        return -EINVAL;
    if (write && bs->read_only)
        return -EACCES;
    if (write && !bs->drv->is_format)
        return 0;
    len = vbk_block_node_getlength(bs);
    if (len < 0)
        return (int) len;
    if (offset + bytes > (uint64_t) len)
        return write ? -ENOSPC : -EIO;
    return 0;
}

int
vbk_block_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    int ret;

    if (bytes == 0)
        return 0;
    if (bs->file || bs->drv->is_format) {
        ret = check_request(bs, offset, bytes, false);
        if (ret < 0)
            return ret;
    } else if (bytes > VBK_BLOCK_MAX_REQUEST || offset > INT64_MAX - bytes) {
        return -EINVAL;
    }
    if (bs->drv->pread)
        return bs->drv->pread(bs, offset, bytes, buf);
    if (bs->drv->is_filter && bs->file)
        return vbk_block_pread(bs->file, offset, bytes, buf);
    return -ENOTSUP;
}

int
vbk_block_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                 const void *buf, VbkRequestFlags flags)
{
    int ret;

    if (bytes == 0)
        return 0;
    ret = check_request(bs, offset, bytes, true);
    if (ret == 0)
        ret = vbk_block_before_write(bs, offset, bytes);
    if (ret < 0)
        return ret;
    vbk_block_event(bs, VBK_EVENT_PWRITEV);
    if ((flags & VBK_REQ_WRITE_COMPRESSED) &&
        !bs->drv->supports_compressed_writes)
        ret = -ENOTSUP;
    else if (bs->drv->pwrite)
        ret = bs->drv->pwrite(bs, offset, bytes, buf, flags & ~VBK_REQ_FUA);
    else if (bs->drv->is_filter && bs->file)
        ret = vbk_block_pwrite(bs->file, offset, bytes, buf, flags);
    else
        ret = -ENOTSUP;
    /* failed writes mark the bitmaps too, as QEMU does */
    vbk_block_dirty_mark(bs, offset, bytes);
    vbk_block_event(bs, VBK_EVENT_PWRITEV_DONE);
    if (ret == 0 && (flags & VBK_REQ_FUA))
        ret = vbk_block_flush(bs);
    return ret;
}

static int
write_zeroes_fallback(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                      VbkRequestFlags flags)
{
    const void *zero = zero_buffer();

    if (flags & VBK_REQ_NO_FALLBACK)
        return -ENOTSUP;
    while (bytes > 0) {
        uint64_t n = MIN(bytes, ZERO_BUF_SIZE);
        int ret = vbk_block_pwrite(bs, offset, n, zero, 0);

        if (ret < 0)
            return ret;
        offset += n;
        bytes -= n;
    }
    return 0;
}

int
vbk_block_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                        VbkRequestFlags flags)
{
    int ret;

    if (bytes == 0)
        return 0;
    ret = check_request(bs, offset, bytes, true);
    if (ret < 0)
        return ret;
    if (!bs->discard_unmap)
        flags &= ~VBK_REQ_MAY_UNMAP;
    ret = vbk_block_before_write(bs, offset, bytes);
    if (ret < 0)
        return ret;
    vbk_block_event(bs, VBK_EVENT_PWRITEV_ZERO);
    if (bs->drv->pwrite_zeroes) {
        ret = bs->drv->pwrite_zeroes(bs, offset, bytes, flags & ~VBK_REQ_FUA);
        if (ret == -ENOTSUP)
            ret = write_zeroes_fallback(bs, offset, bytes, flags);
    } else if (bs->drv->is_filter && bs->file) {
        ret = vbk_block_pwrite_zeroes(bs->file, offset, bytes, flags);
    } else {
        ret = write_zeroes_fallback(bs, offset, bytes, flags);
    }
    vbk_block_dirty_mark(bs, offset, bytes);
    if (ret == 0 && (flags & VBK_REQ_FUA))
        ret = vbk_block_flush(bs);
    return ret;
}

int
vbk_block_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret;

    if (bytes == 0)
        return 0;
    ret = check_request(bs, offset, bytes, true);
    if (ret < 0)
        return ret;
    if (!bs->discard_unmap)
        return 0;
    ret = vbk_block_before_write(bs, offset, bytes);
    if (ret < 0)
        return ret;
    if (bs->drv->pdiscard)
        ret = bs->drv->pdiscard(bs, offset, bytes);
    else if (bs->drv->is_filter && bs->file)
        ret = vbk_block_pdiscard(bs->file, offset, bytes);
    /* else: discard is advisory */
    vbk_block_dirty_mark(bs, offset, bytes);
    return ret;
}

int
vbk_block_flush(VbkBlockNode *bs)
{
    int ret = 0;

    if (bs->read_only)
        return 0;
    /* as QEMU: the events go to the primary child before each phase */
    if (bs->file)
        vbk_block_event(bs->file, VBK_EVENT_FLUSH_TO_OS);
    if (bs->file)
        vbk_block_event(bs->file, VBK_EVENT_FLUSH_TO_DISK);
    if (bs->drv->flush)
        ret = bs->drv->flush(bs);
    if (ret == 0 && bs->file && !bs->cache_no_flush)
        ret = vbk_block_flush(bs->file);
    return ret;
}

int
vbk_block_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                       uint64_t *pnum, uint64_t *map, VbkBlockNode **file)
{
    int64_t len = vbk_block_node_getlength(bs);
    uint64_t local_map = 0;
    VbkBlockNode *local_file = NULL;
    int ret;

    if (len < 0)
        return (int) len;
    if (offset >= (uint64_t) len || bytes == 0) {
        *pnum = 0;
        return VBK_BS_EOF;
    }
    bytes = MIN(bytes, (uint64_t) len - offset);
    bytes = MIN(bytes, (uint64_t) VBK_BLOCK_MAX_REQUEST);
    *pnum = 0;
    if (bs->drv->block_status) {
        ret = bs->drv->block_status(bs, offset, bytes, pnum, &local_map,
                                    &local_file);
    } else if (bs->drv->is_filter && bs->file) {
        ret = vbk_block_block_status(bs->file, offset, bytes, pnum,
                                     &local_map, &local_file);
    } else {
        *pnum = bytes;
        ret = VBK_BS_DATA;
    }
    if (ret < 0)
        return ret;
    g_assert(*pnum > 0 && *pnum <= bytes);
    /* nodes without COW semantics own every byte they hold */
    if (!bs->drv->supports_backing)
        ret |= VBK_BS_ALLOCATED;
    if (offset + *pnum == (uint64_t) len)
        ret |= VBK_BS_EOF;
    if (map)
        *map = local_map;
    if (file)
        *file = local_file;
    return ret;
}

int
vbk_block_block_status_above(VbkBlockNode *bs, uint64_t offset,
                             uint64_t bytes, uint64_t *pnum, uint32_t *depth)
{
    uint32_t d = 1;
    int ret;

    ret = vbk_block_block_status(bs, offset, bytes, pnum, NULL, NULL);
    if (ret < 0)
        return ret;
    if (*pnum == 0) {
        *depth = 0;
        return ret;
    }
    bytes = *pnum;
    for (VbkBlockNode *cur = bs; cur;) {
        if (ret & VBK_BS_ALLOCATED) {
            *depth = d;
            *pnum = bytes;
            return ret & ~VBK_BS_EOF;
        }
        cur = cur->backing;
        d++;
        if (!cur)
            break;
        ret = vbk_block_block_status(cur, offset, bytes, pnum, NULL, NULL);
        if (ret < 0)
            return ret;
        if (*pnum == 0) {
            /* past the end of the backing: reads as zeroes */
            *depth = 0;
            *pnum = bytes;
            return VBK_BS_ZERO;
        }
        bytes = *pnum;
    }
    *depth = 0;
    *pnum = bytes;
    return VBK_BS_ZERO;
}

bool
vbk_block_truncate(VbkBlockNode *bs, uint64_t size, GError **error)
{
    if (bs->read_only) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Image is read-only"));
        return false;
    }
    if (size > INT64_MAX) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Image size cannot be negative"));
        return false;
    }
    if (bs->drv->truncate || (bs->drv->is_filter && bs->file)) {
        bool ok = bs->drv->truncate ? bs->drv->truncate(bs, size, error)
                                    : vbk_block_truncate(bs->file, size, error);
        if (ok)
            vbk_block_dirty_truncate(bs, size);
        return ok;
    }
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED, "%s",
                _("Image format driver does not support resize"));
    return false;
}

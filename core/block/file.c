/*
 * file.c: the "file" protocol driver — a node backed by a host file.
 *
 * Reads and writes are pread/pwrite on one descriptor; reads past the end
 * of the file return zeroes (the file grows when a format writes past
 * it).  Block status comes from SEEK_DATA/SEEK_HOLE, discard punches holes
 * and write-zeroes uses fallocate() where the file system allows.
 *
 * cache.direct=on opens with O_DIRECT.  Requests whose buffer, offset or
 * length are not aligned to the direct-I/O alignment go through an aligned
 * bounce buffer; unaligned writes become read-modify-write of the covering
 * blocks, serialised against every other write by an rwlock (aligned
 * writes take it shared, read-modify-write exclusive) so that no write is
 * lost under a concurrent RMW of the same block.
 */
#include <glib/gi18n-lib.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block-int.h"

#define DIRECT_ALIGN 4096u

typedef struct {
    int fd;
    bool is_blockdev;
    GRWLock rmw_lock;      /* O_DIRECT only: see the file comment */
} FileState;

static const char *const file_options[] = {
    "filename", "aio", "aio-max-batch", "locking", "pr-manager",
    "x-check-cache-dropped", "drop-cache", NULL,
};

static bool
file_open(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    FileState *s = bs->opaque;
    const char *filename;
    struct stat st;
    int flags;

    if (!vbk_opts_get_string(opts, "filename", &filename, error))
        return false;
    flags = (bs->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (bs->cache_direct)
        flags |= O_DIRECT;
    s->fd = open(filename, flags);
    if (s->fd < 0) {
        int err = errno;
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not open '%s': %s"), filename, g_strerror(err));
        return false;
    }
    if (fstat(s->fd, &st) == 0 && S_ISBLK(st.st_mode))
        s->is_blockdev = true;
    g_rw_lock_init(&s->rmw_lock);
    bs->filename = g_strdup(filename);
    bs->request_alignment = bs->cache_direct ? DIRECT_ALIGN : 1;
    return true;
}

/*
 * blockdev-reopen: a descriptor with the new access mode takes the old
 * one's number (dup2), so requests in flight keep a valid descriptor.
 */
static bool
file_reopen(VbkBlockNode *bs, bool read_only, GError **error)
{
    FileState *s = bs->opaque;
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    int fd, err;

    if (bs->cache_direct)
        flags |= O_DIRECT;
    fd = open(bs->filename, flags);
    if (fd < 0 || dup3(fd, s->fd, O_CLOEXEC) < 0) {
        err = errno;
        if (fd >= 0)
            close(fd);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not reopen file: %s"), g_strerror(err));
        return false;
    }
    close(fd);
    return true;
}

static void
file_close(VbkBlockNode *bs)
{
    FileState *s = bs->opaque;

    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    g_rw_lock_clear(&s->rmw_lock);
}

/* Full pread; bytes past EOF read as zeroes. */
static int
full_pread(int fd, void *buf, size_t bytes, uint64_t offset)
{
    char *p = buf;

    while (bytes > 0) {
        ssize_t n = pread(fd, p, bytes, (off_t) offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, bytes);
            return 0;
        }
        p += n;
        bytes -= (size_t) n;
        offset += (uint64_t) n;
    }
    return 0;
}

static int
full_pwrite(int fd, const void *buf, size_t bytes, uint64_t offset)
{
    const char *p = buf;

    while (bytes > 0) {
        ssize_t n = pwrite(fd, p, bytes, (off_t) offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        bytes -= (size_t) n;
        offset += (uint64_t) n;
    }
    return 0;
}

static bool
is_aligned(const void *buf, uint64_t offset, uint64_t bytes)
{
    return ((uintptr_t) buf % DIRECT_ALIGN) == 0 &&
           offset % DIRECT_ALIGN == 0 && bytes % DIRECT_ALIGN == 0;
}

/* Read [offset, offset+bytes) through an aligned bounce buffer. */
static int
bounce_pread(FileState *s, uint64_t offset, uint64_t bytes, void *buf)
{
    uint64_t start = VBK_ROUND_DOWN(offset, DIRECT_ALIGN);
    uint64_t end = VBK_ROUND_UP(offset + bytes, DIRECT_ALIGN);
    void *bounce = NULL;
    int ret;

    if (posix_memalign(&bounce, DIRECT_ALIGN, end - start) != 0)
        return -ENOMEM;
    ret = full_pread(s->fd, bounce, end - start, start);
    if (ret == 0)
        memcpy(buf, (char *) bounce + (offset - start), bytes);
    free(bounce);
    return ret;
}

static int
file_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    FileState *s = bs->opaque;

    if (bs->cache_direct && !is_aligned(buf, offset, bytes))
        return bounce_pread(s, offset, bytes, buf);
    return full_pread(s->fd, buf, bytes, offset);
}

static int
bounce_pwrite(FileState *s, uint64_t offset, uint64_t bytes, const void *buf)
{
    uint64_t start = VBK_ROUND_DOWN(offset, DIRECT_ALIGN);
    uint64_t end = VBK_ROUND_UP(offset + bytes, DIRECT_ALIGN);
    bool head = start != offset;
    bool tail = end != offset + bytes;
    void *bounce = NULL;
    int ret = 0;

    if (posix_memalign(&bounce, DIRECT_ALIGN, end - start) != 0)
        return -ENOMEM;
    g_rw_lock_writer_lock(&s->rmw_lock);
    /* only the partial head and tail blocks need their old contents */
    if (head)
        ret = full_pread(s->fd, bounce, DIRECT_ALIGN, start);
    if (ret == 0 && tail && !(head && end - DIRECT_ALIGN == start))
        ret = full_pread(s->fd, (char *) bounce + (end - start - DIRECT_ALIGN),
                         DIRECT_ALIGN, end - DIRECT_ALIGN);
    if (ret == 0) {
        memcpy((char *) bounce + (offset - start), buf, bytes);
        ret = full_pwrite(s->fd, bounce, end - start, start);
    }
    g_rw_lock_writer_unlock(&s->rmw_lock);
    free(bounce);
    return ret;
}

static int
file_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
            const void *buf, VbkRequestFlags flags)
{
    FileState *s = bs->opaque;
    int ret;

    if (!bs->cache_direct)
        return full_pwrite(s->fd, buf, bytes, offset);
    if (!is_aligned(buf, offset, bytes))
        return bounce_pwrite(s, offset, bytes, buf);
    g_rw_lock_reader_lock(&s->rmw_lock);
    ret = full_pwrite(s->fd, buf, bytes, offset);
    g_rw_lock_reader_unlock(&s->rmw_lock);
    return ret;
}

static int64_t
file_getlength(VbkBlockNode *bs)
{
    FileState *s = bs->opaque;
    struct stat st;

    if (s->is_blockdev) {
        uint64_t size;
        if (ioctl(s->fd, BLKGETSIZE64, &size) < 0)
            return -errno;
        return (int64_t) size;
    }
    if (fstat(s->fd, &st) < 0)
        return -errno;
    return st.st_size;
}

static int64_t
file_allocated_size(VbkBlockNode *bs)
{
    FileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0)
        return -errno;
    return (int64_t) st.st_blocks * 512;
}

static int
file_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                   VbkRequestFlags flags)
{
    FileState *s = bs->opaque;
    int64_t len = file_getlength(bs);
    int mode;

    if (len < 0)
        return (int) len;
    if (offset >= (uint64_t) len && !s->is_blockdev) {
        /* past EOF: growing the file makes zeroes */
        if (ftruncate(s->fd, (off_t) (offset + bytes)) < 0)
            return -errno;
        return 0;
    }
    if (bs->cache_direct && (offset % DIRECT_ALIGN || bytes % DIRECT_ALIGN))
        return -ENOTSUP;
    mode = (flags & VBK_REQ_MAY_UNMAP)
               ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
               : FALLOC_FL_ZERO_RANGE;
    if (offset + bytes > (uint64_t) len && (mode & FALLOC_FL_KEEP_SIZE))
        mode = FALLOC_FL_ZERO_RANGE;
    if (fallocate(s->fd, mode, (off_t) offset, (off_t) bytes) == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)
        return -ENOTSUP;
    return -errno;
}

static int
file_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    FileState *s = bs->opaque;

    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t) offset, (off_t) bytes) == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS)
        return 0; /* discard is advisory */
    return -errno;
}

static int
file_flush(VbkBlockNode *bs)
{
    FileState *s = bs->opaque;

    if (fdatasync(s->fd) < 0)
        return -errno;
    return 0;
}

/* SEEK_DATA/SEEK_HOLE: data extents are DATA, holes read as ZERO. */
static int
file_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                  uint64_t *pnum, uint64_t *map, VbkBlockNode **file)
{
    FileState *s = bs->opaque;
    off_t data, hole;

    *map = offset;
    *file = bs;
    data = lseek(s->fd, (off_t) offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) { /* only a hole up to EOF */
            *pnum = bytes;
            return VBK_BS_ZERO | VBK_BS_OFFSET_VALID;
        }
        *pnum = bytes; /* cannot tell: say data */
        return VBK_BS_DATA | VBK_BS_OFFSET_VALID;
    }
    if ((uint64_t) data > offset) {
        *pnum = MIN(bytes, (uint64_t) data - offset);
        return VBK_BS_ZERO | VBK_BS_OFFSET_VALID;
    }
    hole = lseek(s->fd, (off_t) offset, SEEK_HOLE);
    if (hole < 0 || (uint64_t) hole <= offset)
        *pnum = bytes;
    else
        *pnum = MIN(bytes, (uint64_t) hole - offset);
    return VBK_BS_DATA | VBK_BS_OFFSET_VALID;
}

static bool
file_truncate(VbkBlockNode *bs, uint64_t size, GError **error)
{
    FileState *s = bs->opaque;

    if (s->is_blockdev) {
        int64_t len = file_getlength(bs);
        if (len >= 0 && (uint64_t) len >= size)
            return true;
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED, "%s",
                    _("Cannot grow device files"));
        return false;
    }
    if (ftruncate(s->fd, (off_t) size) < 0) {
        int err = errno;
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Failed to resize file: %s"), g_strerror(err));
        return false;
    }
    return true;
}

bool
vbk_file_create(const char *filename, uint64_t size, GError **error)
{
    int fd = open(filename, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err;

    if (fd < 0) {
        err = errno;
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not create '%s': %s"), filename,
                    g_strerror(err));
        return false;
    }
    if (size > INT64_MAX || ftruncate(fd, (off_t) size) < 0) {
        err = size > INT64_MAX ? EFBIG : errno;
        close(fd);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not resize file: %s"), g_strerror(err));
        return false;
    }
    close(fd);
    return true;
}

const VbkBlockDriver vbk_drv_file = {
    .format_name = "file",
    .instance_size = sizeof(FileState),
    .options = file_options,
    .open = file_open,
    .close = file_close,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .pdiscard = file_pdiscard,
    .flush = file_flush,
    .block_status = file_block_status,
    .getlength = file_getlength,
    .allocated_size = file_allocated_size,
    .truncate = file_truncate,
    .reopen = file_reopen,
};

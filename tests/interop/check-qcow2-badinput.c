/*
 * check-qcow2-badinput.c: a damaged qcow2 is refused, never trusted.
 *
 * Each case starts from a valid image made by the real qemu-img and
 * qemu-io, changes one on-disk field, and opens the result through
 * vbackup read-only and read-write.  The expectation is one of:
 *
 *  - OPEN_FAILS: both opens fail with a VBK_BLOCK_ERROR whose message
 *    names the problem.  Where QEMU 7.2 refuses the same image, the
 *    message must contain QEMU's exact text (checked by hand with
 *    `qemu-img info -f qcow2`, e.g. "Unsupported cluster size: 2^22").
 *    Where QEMU accepts it (tables outside the file or overlapping the
 *    header, which QEMU only notices when it reads zeroes past EOF or
 *    when a write trips its overlap check), vbackup must still refuse;
 *    the message must then mention the structure (any listed keyword,
 *    case-insensitive).
 *  - RW_FAILS: the corrupt bit — read-write refused with QEMU's text,
 *    read-only allowed and reading what qemu-img reads.
 *  - IO_FAILS: damage inside a table (an L1 or L2 entry) need not be
 *    seen at open; then reading the affected range returns -EIO.  An
 *    open that refuses the image with a message is fine too.
 *  - ALLOC_FAILS: a refcount table entry outside the file: an open may
 *    refuse, a read-only open may read, but an allocating write must
 *    fail with -EIO rather than write anywhere.
 *
 * Truncated files are cases too: QEMU reads zeroes past the end of a
 * file, so a 40- or 100-byte file fails its header_length check ("qcow2
 * header too short"); a file cut after cluster 0 leaves every table
 * outside the file, which QEMU accepts and vbackup must not.
 *
 * In every case the file's SHA-256 is the same afterwards: a damaged
 * image is never written to, not even to set the corrupt bit.
 *
 * The base image (64 KiB clusters, 4 MiB) is laid out by qemu-img as
 * header 0x0, refcount table 0x10000, refblock 0x20000, L1 0x30000; after
 * the writes below the first L2 table follows; the offsets are read from
 * the header rather than assumed.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "interop-util.h"
#include "testutil.h"

typedef enum {
    OPEN_FAILS,
    RW_FAILS,
    IO_FAILS,
    ALLOC_FAILS,
} Expect;

/* Where a patch goes: a header field or an entry of a table. */
typedef enum {
    AT_HEADER,
    AT_L1,       /* entry 0 of the active L1 table */
    AT_L2,       /* entry 0 of the first L2 table */
    AT_REFTABLE, /* entry 0 of the refcount table */
    AT_TRUNCATE, /* the file cut to .value bytes */
} Where;

typedef struct {
    const char *name;
    Where where;
    uint64_t offset; /* within the header, or 0 for a table entry */
    int width;       /* 1, 2, 4 or 8 bytes, big-endian */
    uint64_t value;
    Expect expect;
    /* message: must contain qemu_text if set, else one of keywords */
    const char *qemu_text;
    const char *keywords[4];
    /* a second field to set first (e.g. a backing file offset) */
    uint64_t pre_offset;
    uint64_t pre_value;
} BadCase;

/* clang-format off */
#define HDR(n, off, w, v, e, text, ...)                                   \
    { .name = n, .where = AT_HEADER, .offset = off, .width = w,           \
      .value = v, .expect = e, .qemu_text = text,                         \
      .keywords = { __VA_ARGS__ } }
/* clang-format on */

/* clang-format off */
static const BadCase bad_cases[] = {
    HDR("magic", 0, 4, 0x51464900, OPEN_FAILS,
        "Image is not in qcow2 format", NULL),
    HDR("version 1", 4, 4, 1, OPEN_FAILS, "Unsupported qcow2 version 1",
        NULL),
    HDR("version 4", 4, 4, 4, OPEN_FAILS, "Unsupported qcow2 version 4",
        NULL),
    HDR("cluster_bits 8", 20, 4, 8, OPEN_FAILS,
        "Unsupported cluster size: 2^8", NULL),
    HDR("cluster_bits 22", 20, 4, 22, OPEN_FAILS,
        "Unsupported cluster size: 2^22", NULL),
    HDR("cluster_bits 63", 20, 4, 63, OPEN_FAILS,
        "Unsupported cluster size: 2^63", NULL),
    HDR("size absurd", 24, 8, 0x7fffffffffffffffull, OPEN_FAILS,
        "Image is too big", NULL),
    HDR("size beyond L1", 24, 8, 1ull << 56, OPEN_FAILS,
        "L1 table is too small", NULL),
    HDR("l1_size huge", 36, 4, 0x7fffffff, OPEN_FAILS,
        "Active L1 table too large", NULL),
    HDR("l1_size 0", 36, 4, 0, OPEN_FAILS, "L1 table is too small", NULL),
    HDR("l1_table_offset unaligned", 40, 8, 0x30200, OPEN_FAILS,
        "Active L1 table offset invalid", NULL),
    HDR("l1_table_offset outside file", 40, 8, 1ull << 32, OPEN_FAILS, NULL,
        "l1 table"),
    HDR("l1_table_offset over header", 40, 8, 0, OPEN_FAILS, NULL,
        "l1 table"),
    HDR("refcount_table_offset unaligned", 48, 8, 0x10200, OPEN_FAILS,
        "Reference count table offset invalid", NULL),
    HDR("refcount_table_offset outside file", 48, 8, 1ull << 32, OPEN_FAILS,
        NULL, "reference count table", "refcount table"),
    HDR("refcount_table_offset over header", 48, 8, 0, OPEN_FAILS, NULL,
        "reference count table", "refcount table", "overlap"),
    HDR("refcount_table_clusters huge", 56, 4, 0x7fffffff, OPEN_FAILS,
        "Reference count table too large", NULL),
    HDR("refcount_table_clusters 1000", 56, 4, 1000, OPEN_FAILS,
        "Reference count table too large", NULL),
    HDR("refcount_order 7", 96, 4, 7, OPEN_FAILS,
        "Reference count entry width too large; may not exceed 64 bits",
        NULL),
    HDR("header_length short", 100, 4, 50, OPEN_FAILS,
        "qcow2 header too short", NULL),
    HDR("header_length past cluster", 100, 4, 0x20000, OPEN_FAILS,
        "qcow2 header exceeds cluster size", NULL),
    HDR("unknown incompatible bit", 72, 8, 1ull << 63, OPEN_FAILS,
        "Unsupported qcow2 feature(s): Unknown incompatible feature: "
        "8000000000000000", NULL),
    HDR("corrupt bit", 72, 8, 2, RW_FAILS,
        "qcow2: Image is corrupt; cannot be opened read/write", NULL),
    HDR("crypt_method 1 (AES)", 32, 4, 1, OPEN_FAILS, NULL, "encrypt",
        "aes"),
    HDR("crypt_method 3", 32, 4, 3, OPEN_FAILS,
        "Unsupported encryption method 3", NULL),
    HDR("backing_file_offset outside cluster", 8, 8, 1ull << 32, OPEN_FAILS,
        "Invalid backing file offset", NULL),
    { .name = "backing_file_size 1024", .where = AT_HEADER, .offset = 16,
      .width = 4, .value = 1024, .expect = OPEN_FAILS,
      .qemu_text = "Backing file name too long", .pre_offset = 8,
      .pre_value = 0x200 },
    { .name = "file of 40 bytes", .where = AT_TRUNCATE, .value = 40,
      .expect = OPEN_FAILS, .qemu_text = "qcow2 header too short" },
    { .name = "file of 100 bytes", .where = AT_TRUNCATE, .value = 100,
      .expect = OPEN_FAILS, .qemu_text = "qcow2 header too short" },
    { .name = "file cut after the header cluster", .where = AT_TRUNCATE,
      .value = 65536, .expect = OPEN_FAILS,
      .keywords = { "outside", "l1 table", "refcount table",
                    "reference count table" } },
    { .name = "L2 entry past EOF", .where = AT_L2, .width = 8,
      .value = 0x8000000010000000ull, .expect = IO_FAILS,
      .keywords = { "l2", "cluster", "offset" } },
    { .name = "L2 entry unaligned", .where = AT_L2, .width = 8,
      .value = 0x8000000000050200ull, .expect = IO_FAILS,
      .keywords = { "l2", "cluster", "unaligned" } },
    { .name = "L2 compressed entry past EOF", .where = AT_L2, .width = 8,
      .value = 0x4000000100000000ull, .expect = IO_FAILS,
      .keywords = { "l2", "compressed", "offset" } },
    { .name = "L1 entry into header", .where = AT_L1, .width = 8,
      .value = 0x8000000000000200ull, .expect = IO_FAILS,
      .keywords = { "l2 table", "l1", "unaligned" } },
    { .name = "L1 entry past EOF", .where = AT_L1, .width = 8,
      .value = 0x8000000100000000ull, .expect = IO_FAILS,
      .keywords = { "l2 table", "l1", "offset" } },
    { .name = "refcount table entry past EOF", .where = AT_REFTABLE,
      .width = 8, .value = 0x100000000ull, .expect = ALLOC_FAILS,
      .keywords = { "refcount", "reference count" } },
};
/* clang-format on */

static uint64_t
get_be(const uint8_t *p, int width)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < width; i++)
        v = (v << 8) | p[i];
    return v;
}

static void
put_be(int fd, uint64_t off, int width, uint64_t v)
{
    uint8_t be[8];
    int i;

    for (i = width - 1; i >= 0; i--, v >>= 8)
        be[i] = v & 0xff;
    ck_assert_int_eq(pwrite(fd, be, width, off), width);
}

static uint64_t
read_be(int fd, uint64_t off, int width)
{
    uint8_t be[8];

    ck_assert_int_eq(pread(fd, be, width, off), width);
    return get_be(be, width);
}

/* A valid image with data in two L2-mapped ranges, made by QEMU. */
static void
make_base(const char *img)
{
    g_autofree char *err = NULL;

    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "create", "-q", "-f",
                             "qcow2", img, "4M", NULL),
                     0);
    ck_assert_msg(itu_run(NULL, &err, "qemu-io", "-f", "qcow2", "-c",
                          "write -P 0x5a 0 128k", "-c", "write -P 0x6b 1M 64k",
                          img, NULL) == 0,
                  "%s", err);
    itu_assert_qemu_img_check(img);
}

static void
apply_patch(const char *img, const BadCase *c)
{
    int fd = open(img, O_RDWR | O_CLOEXEC);
    uint64_t at = c->offset;

    ck_assert_int_ge(fd, 0);
    switch (c->where) {
    case AT_HEADER:
        break;
    case AT_L1:
        at = read_be(fd, 40, 8);
        break;
    case AT_L2:
        /* entry 0 of L1 holds the first L2 table (bits 9-55) */
        at = read_be(fd, read_be(fd, 40, 8), 8) & 0x00fffffffffffe00ull;
        ck_assert_uint_ne(at, 0);
        break;
    case AT_REFTABLE:
        at = read_be(fd, 48, 8);
        break;
    case AT_TRUNCATE:
        ck_assert_int_eq(ftruncate(fd, c->value), 0);
        close(fd);
        return;
    }
    if (c->pre_offset)
        put_be(fd, c->pre_offset, 8, c->pre_value);
    put_be(fd, at, c->width, c->value);
    close(fd);
}

static bool
contains_ci(const char *hay, const char *needle)
{
    g_autofree char *h = g_ascii_strdown(hay, -1);
    g_autofree char *n = g_ascii_strdown(needle, -1);

    return strstr(h, n) != NULL;
}

static void
assert_clear_message(const BadCase *c, const GError *err)
{
    size_t i;
    bool any = false;

    ck_assert_msg(err, "%s: no error set", c->name);
    ck_assert_msg(err->domain == VBK_BLOCK_ERROR, "%s: domain %s", c->name,
                  g_quark_to_string(err->domain));
    g_printerr("#   %s: \"%s\"\n", c->name, err->message);
    if (c->qemu_text) {
        ck_assert_msg(strstr(err->message, c->qemu_text),
                      "%s: message \"%s\" lacks QEMU's \"%s\"", c->name,
                      err->message, c->qemu_text);
        return;
    }
    for (i = 0; i < G_N_ELEMENTS(c->keywords) && c->keywords[i]; i++)
        any = any || contains_ci(err->message, c->keywords[i]);
    ck_assert_msg(any, "%s: message \"%s\" does not name the problem (%s)",
                  c->name, err->message, c->keywords[0]);
}

static void
expect_open_fails(const BadCase *c, const char *img, bool read_only)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = itu_open_qcow2(img, "bad0", read_only, false, &err);

    if (bs)
        itu_close(bs);
    ck_assert_msg(!bs, "%s: %s open succeeded", c->name,
                  read_only ? "read-only" : "read-write");
    assert_clear_message(c, err);
}

/* Open; if refused, the message must be clear; else reading fails. */
static void
expect_io_fails(const BadCase *c, const char *img, bool read_only)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = itu_open_qcow2(img, "bad0", read_only, false, &err);
    g_autofree uint8_t *buf = g_malloc(65536);
    int ret;

    if (!bs) {
        assert_clear_message(c, err);
        return;
    }
    ret = vbk_block_pread(bs, 0, 65536, buf);
    ck_assert_msg(ret == -EIO, "%s: read returned %d (%s), want -EIO", c->name,
                  ret, ret ? g_strerror(-ret) : "success");
    /* the undamaged range still reads */
    ck_assert_int_eq(vbk_block_pread(bs, 1 << 20, 65536, buf),
                     c->where == AT_L1 ? -EIO : 0);
    itu_close(bs);
}

static void
expect_alloc_fails(const BadCase *c, const char *img)
{
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *buf = g_malloc(65536);
    VbkBlockNode *bs = itu_open_qcow2(img, "bad0", false, false, &err);
    int ret;

    if (!bs) {
        assert_clear_message(c, err);
        return;
    }
    memset(buf, 0xc3, 65536);
    ret = vbk_block_pwrite(bs, 3 << 20, 65536, buf, 0);
    ck_assert_msg(ret == -EIO, "%s: allocating write returned %d (%s)", c->name,
                  ret, ret ? g_strerror(-ret) : "success");
    itu_close(bs);
}

/* Read-only open of the corrupt-bit image reads what qemu-img reads. */
static void
expect_ro_reads(const char *img, const char *dir)
{
    g_autofree char *raw = g_build_filename(dir, "oracle.raw", NULL);
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;

    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "convert", "-f", "qcow2",
                             "-O", "raw", img, raw, NULL),
                     0);
    bs = itu_open_qcow2(img, "bad0", true, false, &err);
    ck_assert_msg(bs, "corrupt bit: read-only open refused: %s",
                  err ? err->message : "?");
    itu_assert_node_equals_file(bs, raw);
    itu_close(bs);
}

START_TEST(test_bad_input)
{
    const BadCase *c = &bad_cases[_i];
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autofree char *img = g_build_filename(dir, "bad.qcow2", NULL);
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;

    make_base(img);
    apply_patch(img, c);
    before = itu_sha256_file(img);

    switch (c->expect) {
    case OPEN_FAILS:
        expect_open_fails(c, img, true);
        expect_open_fails(c, img, false);
        break;
    case RW_FAILS:
        expect_open_fails(c, img, false);
        expect_ro_reads(img, dir);
        break;
    case IO_FAILS:
        expect_io_fails(c, img, true);
        expect_io_fails(c, img, false);
        break;
    case ALLOC_FAILS:
        expect_alloc_fails(c, img);
        break;
    }

    after = itu_sha256_file(img);
    ck_assert_msg(g_str_equal(before, after), "%s: the image was written to",
                  c->name);
    vbk_test_tmpdir_remove(dir);
}
END_TEST

static Suite *
badinput_suite(void)
{
    Suite *s = suite_create("interop");
    TCase *tc = tcase_create("badinput");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad_input, 0, G_N_ELEMENTS(bad_cases));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(badinput_suite());
}

/*
 * check-bitmap-persist-fuzz.c: the bitmap extension, directory and
 * tables of a qcow2 are never trusted.
 *
 * Two layers, both seeded and repeatable:
 *  - the directory decoder (vbk_qcow2_bitmap_dir_decode) on valid entries
 *    it must accept, on each single violation it must refuse with QEMU's
 *    message, and on random bytes and random lengths (it must only refuse
 *    or return entries that satisfy every constraint);
 *  - whole images made by the real qemu-img/qemu-io with three bitmaps,
 *    one random byte changed in the extension, the directory or a bitmap
 *    table, then opened read-only and read-write: an open that fails
 *    leaves the file byte for byte unchanged; a read-only open never
 *    writes; a read-write open that succeeds closes without crashing.
 * Registered in suite 'unit', so CI's sanitizer pass runs it too.
 */
#include <string.h>

#include "block/qcow2-bitmap.h"
#include "interop-util.h"
#include "testutil.h"

#define CB        16 /* 64 KiB clusters */
#define DISK      (64ull << 20)
#define FILE_SIZE (16ull << 20)

/* One entry: table at 4 clusters, 1 entry, granularity 2^16, @name. */
static size_t
put_entry(uint8_t *p, const char *name, uint32_t flags)
{
    size_t n = strlen(name);

    memset(p, 0, 24 + ((n + 7) & ~7u));
    qcow2_put_be64(p, 4ull << CB);
    qcow2_put_be32(p + 8, 1);
    qcow2_put_be32(p + 12, flags);
    p[16] = 1;
    p[17] = 16;
    p[18] = n >> 8;
    p[19] = n & 0xff;
    memcpy(p + 24, name, n);
    return (24 + n + 7) & ~(size_t) 7;
}

static GPtrArray *
decode(const uint8_t *buf, size_t len, uint32_t nb, GError **error)
{
    return vbk_qcow2_bitmap_dir_decode(buf, len, nb, CB, DISK, FILE_SIZE,
                                       error);
}

START_TEST(test_dir_valid)
{
    uint8_t buf[256];
    size_t len = put_entry(buf, "b0", QCOW2_BME_FLAG_AUTO);
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) dir = NULL;

    len += put_entry(buf + len, "second", QCOW2_BME_FLAG_IN_USE);
    dir = decode(buf, len, 2, &err);
    ck_assert_msg(dir, "%s", err ? err->message : "");
    ck_assert_uint_eq(dir->len, 2);
    ck_assert_str_eq(((VbkQcow2BitmapEntry *) dir->pdata[1])->name, "second");
    ck_assert_uint_eq(((VbkQcow2BitmapEntry *) dir->pdata[0])->gran_bits, 16);
}
END_TEST

typedef struct {
    size_t off; /* byte of entry 0 to set, or (size_t) -1 */
    uint8_t value;
    uint32_t nb; /* announced entries */
    size_t cut;  /* bytes removed from the end */
    const char *msg;
} DirCase;

static const DirCase dir_cases[] = {
    {(size_t) -1, 0, 3, 0,
     "Less bitmaps found than specified in header extension"},
    {(size_t) -1, 0, 1, 0,
     "More bitmaps found than specified in header extension"},
    {(size_t) -1, 0, 2, 30, "Broken bitmap directory"},
    {23, 8, 2, 0, "Bitmap extra data is not supported"},
    {17, 8, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {17, 32, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {16, 2, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {15, 4, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {7, 1, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {11, 0, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {1, 1, 2, 0, "Bitmap 'b0' doesn't satisfy the constraints"},
    {(size_t) -1, 0, 2, 0, NULL}, /* duplicate name: "b0" twice */
};

START_TEST(test_dir_invalid)
{
    const DirCase *c = &dir_cases[_i];
    uint8_t buf[256];
    size_t len = put_entry(buf, "b0", QCOW2_BME_FLAG_AUTO);
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) dir = NULL;

    len += put_entry(buf + len, c->msg ? "b1" : "bb", 0);
    if (!c->msg)
        buf[len - 8 + 1] = '0', buf[len - 8] = 'b'; /* second becomes b0 */
    if (c->off != (size_t) -1)
        buf[c->off] = c->value;
    dir = decode(buf, len - c->cut, c->nb, &err);
    ck_assert_msg(!dir, "case %d accepted", _i);
    ck_assert_str_eq(err->message,
                     c->msg ? c->msg : "Bitmap already exists: b0");
}
END_TEST

START_TEST(test_dir_random)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(0x6b17);

    for (int i = 0; i < 20000; i++) {
        uint8_t buf[512];
        size_t len;
        uint32_t nb = g_rand_int_range(rand, 0, 6);
        g_autoptr(GError) err = NULL;
        g_autoptr(GPtrArray) dir = NULL;

        len = put_entry(buf, "seed", QCOW2_BME_FLAG_AUTO);
        len += put_entry(buf + len, "x", 0);
        for (int k = g_rand_int_range(rand, 1, 6); k > 0; k--)
            buf[g_rand_int_range(rand, 0, len)] = g_rand_int(rand);
        len -= g_rand_int_range(rand, 0, 3) * 8 * g_rand_boolean(rand);
        dir = decode(buf, len, nb, &err);
        if (!dir) {
            ck_assert(err && err->message[0]);
            continue;
        }
        ck_assert_uint_eq(dir->len, nb);
        for (guint j = 0; j < dir->len; j++) {
            const VbkQcow2BitmapEntry *e = dir->pdata[j];
            ck_assert(e->gran_bits >= 9 && e->gran_bits <= 31);
            ck_assert(e->table_offset && !(e->table_offset & 0xffff));
            ck_assert(e->table_offset + e->table_size * 8ull <= FILE_SIZE);
            ck_assert(!(e->flags & QCOW2_BME_RESERVED_FLAGS));
            ck_assert(strlen(e->name) > 0);
        }
    }
}
END_TEST

/* ---- whole images ------------------------------------------------------ */

static char *tmpdir;
static char *base;

static void
make_base(void)
{
    const char *steps[][9] = {
        {"qemu-img", "create", "-q", "-f", "qcow2", NULL, "4M", NULL},
        {"qemu-img", "bitmap", "--add", NULL, "a0", NULL},
        {"qemu-img", "bitmap", "--add", "-g", "4096", NULL, "a1", NULL},
        {"qemu-io", "-f", "qcow2", "-c", "write 0 300k", NULL, NULL},
        {"qemu-img", "bitmap", "--add", "--disable", NULL, "a2", NULL},
    };
    const int at[] = {5, 3, 5, 5, 4};

    tmpdir = vbk_test_tmpdir_new();
    base = g_build_filename(tmpdir, "base.qcow2", NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(steps); i++) {
        const char *argv[9];
        memcpy(argv, steps[i], sizeof(argv));
        argv[at[i]] = base;
        ck_assert_int_eq(itu_runv(argv, NULL, NULL), 0);
    }
}

/* Regions worth damaging: the extension, the directory, the tables. */
static void
pick_target(const uint8_t *img, gsize len, GRand *rand, gsize *off)
{
    uint64_t ext = qcow2_be32(img + 100), dir = 0, dsize = 0, tab;

    while (ext + 8 < 65536 && qcow2_be32(img + ext)) {
        if (qcow2_be32(img + ext) == 0x23852875) {
            dsize = qcow2_be64(img + ext + 16);
            dir = qcow2_be64(img + ext + 24);
            break;
        }
        ext += 8 + ((qcow2_be32(img + ext + 4) + 7) & ~7u);
    }
    ck_assert(dir && dir + dsize <= len);
    switch (g_rand_int_range(rand, 0, 3)) {
    case 0:
        *off = ext + g_rand_int_range(rand, 0, 32);
        break;
    case 1:
        *off = dir + g_rand_int_range(rand, 0, dsize);
        break;
    default:
        tab = qcow2_be64(img + dir);
        *off = MIN(tab + g_rand_int_range(rand, 0, 16), len - 1);
        break;
    }
}

START_TEST(test_image_random)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(0xb17 + _i);
    g_autofree uint8_t *img = NULL;
    g_autofree char *path = g_build_filename(tmpdir, "fuzz.qcow2", NULL);
    gsize len;

    int opened = 0, refused = 0;

    ck_assert(g_file_get_contents(base, (char **) &img, &len, NULL));
    for (int round = 0; round < 40; round++) {
        g_autofree uint8_t *copy = g_memdup2(img, len);
        g_autofree char *before = NULL, *after = NULL;
        g_autoptr(GError) err = NULL;
        VbkBlockNode *bs;
        gsize off;

        pick_target(img, len, rand, &off);
        copy[off] ^= 1u << g_rand_int_range(rand, 0, 8);
        ck_assert(g_file_set_contents(path, (char *) copy, len, NULL));
        before = itu_sha256_file(path);
        bs = itu_open_qcow2(path, "fz", true, false, &err);
        if (bs)
            itu_close(bs);
        after = itu_sha256_file(path);
        ck_assert_msg(g_str_equal(before, after),
                      "read-only open wrote (byte %zu)", (size_t) off);
        g_clear_error(&err);
        bs = itu_open_qcow2(path, "fz", false, false, &err);
        if (bs) {
            itu_close(bs);
            opened++;
            continue;
        }
        refused++;
        ck_assert(err->message[0]);
        g_free(after);
        after = itu_sha256_file(path);
        ck_assert_msg(g_str_equal(before, after),
                      "failed open wrote (byte %zu: %s)", (size_t) off,
                      err->message);
    }
    /* both outcomes were exercised */
    ck_assert_msg(opened > 0 && refused > 0, "opened %d, refused %d", opened,
                  refused);
}
END_TEST

static Suite *
fuzz_suite(void)
{
    Suite *s = suite_create("bitmap-persist-fuzz");
    TCase *tc = tcase_create("dir");
    TCase *ti = tcase_create("image");

    tcase_add_test(tc, test_dir_valid);
    tcase_add_loop_test(tc, test_dir_invalid, 0, G_N_ELEMENTS(dir_cases));
    tcase_add_test(tc, test_dir_random);
    suite_add_tcase(s, tc);
    tcase_set_timeout(ti, 240);
    tcase_add_unchecked_fixture(ti, make_base, NULL);
    tcase_add_loop_test(ti, test_image_random, 0, 5);
    suite_add_tcase(s, ti);
    return s;
}

int
main(void)
{
    int ret = vbk_test_run(fuzz_suite());

    if (tmpdir)
        vbk_test_tmpdir_remove(tmpdir);
    return ret;
}

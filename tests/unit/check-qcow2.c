/*
 * check-qcow2.c: the qcow2 driver against the real qemu-img and qemu-io.
 *
 * - a matrix of cluster sizes (all 13 powers of two from 512 B to 2 MiB)
 *   and refcount widths (1..64 bits): create, write/zero/discard/grow
 *   with a shadow copy, read back, then `qemu-img check` must find no
 *   error and no leak, `qemu-img info` must show what was created and
 *   `qemu-img convert` must return exactly the shadow;
 * - v2 (compat 0.10) images the same way;
 * - images written by qemu-io read back: data, zero clusters, compressed
 *   clusters (deflate and zstd), backing chains of three with allocation
 *   depth, copy-up of partial clusters, lazy refcounts left dirty by a
 *   killed qemu-io;
 * - bad images refused with QEMU's messages, bad L2 entries failing
 *   requests without writing.
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "testutil.h"

static char *tmpdir;

static void
setup(void)
{
    tmpdir = vbk_test_tmpdir_new();
}

static void
teardown(void)
{
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
}

/* Run a command; returns its exit code, stdout in *out when given. */
static int
run(char **out, const char *prog, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autofree char *o = NULL;
    g_autofree char *e = NULL;
    const char *a;
    va_list ap;
    int rc;

    g_ptr_array_add(argv, (char *) prog);
    va_start(ap, prog);
    while ((a = va_arg(ap, const char *)))
        g_ptr_array_add(argv, (char *) a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    rc = vbk_test_spawn((const char *const *) argv->pdata, &o, &e);
    if (rc != 0)
        fprintf(stderr, "# %s: rc %d: %s%s\n", prog, rc, o ? o : "",
                e ? e : "");
    if (out)
        *out = g_steal_pointer(&o);
    return rc;
}

static char *
path_of(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static void
close_node(VbkBlockNode *bs)
{
    g_autofree char *name = g_strdup(vbk_block_node_name(bs));
    g_autoptr(GError) err = NULL;

    vbk_block_node_unref(bs);
    ck_assert_msg(vbk_block_node_delete(name, &err), "%s",
                  err ? err->message : "");
}

/* Open a qcow2 image; read-write opens pass discards down (unmap). */
static VbkBlockNode *
open_image(const char *path, bool read_only)
{
    g_autoptr(GError) err = NULL;
    GVariantDict d, f;
    VbkBlockNode *bs;

    g_variant_dict_init(&f, NULL);
    g_variant_dict_insert(&f, "driver", "s", "file");
    g_variant_dict_insert(&f, "filename", "s", path);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "qcow2");
    g_variant_dict_insert(&d, "read-only", "b", read_only);
    if (!read_only)
        g_variant_dict_insert(&d, "discard", "s", "unmap");
    g_variant_dict_insert_value(&d, "file", g_variant_dict_end(&f));
    bs = vbk_block_node_open(g_variant_dict_end(&d), &err);
    ck_assert_msg(bs != NULL, "open %s: %s", path, err ? err->message : "");
    return bs;
}

static VbkBlockNode *
open_file_node(const char *path)
{
    g_autoptr(GError) err = NULL;
    GVariantDict d;
    VbkBlockNode *file;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", path);
    file = vbk_block_node_open(g_variant_dict_end(&d), &err);
    ck_assert_msg(file != NULL, "%s", err ? err->message : "");
    return file;
}

static void
create_image(const char *path, const VbkQcow2CreateOptions *o)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *file;

    ck_assert(vbk_file_create(path, 0, &err));
    file = open_file_node(path);
    ck_assert_msg(vbk_qcow2_create(file, o, &err), "create: %s",
                  err ? err->message : "");
    close_node(file);
}

/* qemu-img check: no errors and no leaks. */
static void
assert_check_clean(const char *path)
{
    g_autofree char *out = NULL;
    int rc = run(&out, "qemu-img", "check", "-f", "qcow2", path, NULL);

    ck_assert_msg(rc == 0, "qemu-img check rc %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "No errors were found on the image."), "%s", out);
    ck_assert_msg(!strstr(out, "leaked"), "%s", out);
}

/* The whole image as qemu-img sees it equals @expect. */
static void
assert_qemu_content(const char *path, const uint8_t *expect, uint64_t size)
{
    g_autofree char *raw = g_strconcat(path, ".raw", NULL);
    g_autofree char *data = NULL;
    gsize len = 0;

    ck_assert_int_eq(run(NULL, "qemu-img", "convert", "-f", "qcow2", "-O",
                         "raw", path, raw, NULL),
                     0);
    ck_assert(g_file_get_contents(raw, &data, &len, NULL));
    ck_assert_uint_eq(len, size);
    for (uint64_t i = 0; i < size; i++) {
        if ((uint8_t) data[i] != expect[i])
            ck_abort_msg("byte %" G_GUINT64_FORMAT ": 0x%02x, expected 0x%02x",
                         i, (uint8_t) data[i], expect[i]);
    }
    g_unlink(raw);
}

static void
assert_read(VbkBlockNode *bs, const uint8_t *expect, uint64_t off, uint64_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);

    ck_assert_int_eq(vbk_block_pread(bs, off, len, buf), 0);
    for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != expect[i])
            ck_abort_msg("read at %" G_GUINT64_FORMAT
                         ": 0x%02x, expected 0x%02x",
                         off + i, buf[i], expect[i]);
    }
}

static void
assert_read_pattern(VbkBlockNode *bs, uint64_t off, uint64_t len, uint8_t p)
{
    g_autofree uint8_t *expect = g_malloc(len);

    memset(expect, p, len);
    assert_read(bs, expect, off, len);
}

/* ---- workload with a shadow ---------------------------------------- */

typedef struct {
    VbkBlockNode *bs;
    uint8_t *shadow;
    uint64_t size;
    uint32_t cs;
} Shadow;

static void
sh_write(Shadow *sh, uint64_t off, uint64_t len, uint8_t seed)
{
    g_autofree uint8_t *buf = g_malloc(len);

    for (uint64_t i = 0; i < len; i++)
        buf[i] = (uint8_t) (seed + i * 7 + (i >> 9));
    ck_assert_int_eq(vbk_block_pwrite(sh->bs, off, len, buf, 0), 0);
    memcpy(sh->shadow + off, buf, len);
}

static void
sh_zero(Shadow *sh, uint64_t off, uint64_t len, VbkRequestFlags flags)
{
    ck_assert_int_eq(vbk_block_pwrite_zeroes(sh->bs, off, len, flags), 0);
    memset(sh->shadow + off, 0, len);
}

/* Discard drops whole clusters only; no backing, so they read zero. */
static void
sh_discard(Shadow *sh, uint64_t off, uint64_t len)
{
    uint64_t a = (off + sh->cs - 1) / sh->cs * sh->cs;
    uint64_t b = (off + len) / sh->cs * sh->cs;

    if (off + len == sh->size)
        b = off + len;
    ck_assert_int_eq(vbk_block_pdiscard(sh->bs, off, len), 0);
    if (b > a)
        memset(sh->shadow + a, 0, b - a);
}

static void
sh_grow(Shadow *sh, uint64_t size)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(vbk_block_truncate(sh->bs, size, &err), "%s",
                  err ? err->message : "");
    sh->shadow = g_realloc(sh->shadow, size);
    memset(sh->shadow + sh->size, 0, size - sh->size);
    sh->size = size;
    ck_assert_int_eq(vbk_block_node_getlength(sh->bs), size);
}

static void
workload(Shadow *sh)
{
    uint64_t cs = sh->cs;
    uint64_t mib = 1 << 20;
    uint64_t d;

    sh_write(sh, 0, 4096, 1);
    sh_write(sh, 1000, 3000, 2);                /* unaligned, in place */
    sh_write(sh, cs * 3 + 17, cs * 2 + 100, 3); /* partial + full */
    sh_write(sh, 3 * mib - 512, 1024, 4);       /* crosses 3 MiB */
    sh_zero(sh, cs * 3, cs * 2, VBK_REQ_MAY_UNMAP);
    sh_zero(sh, 100, 300, 0); /* partial: data */
    sh_write(sh, 5 * mib, mib, 5);
    sh_zero(sh, 5 * mib + 512, cs, 0);
    sh_discard(sh, 5 * mib + 1024, mib / 2);
    sh_write(sh, 5 * mib + 2048, 8192, 6); /* over discarded */
    sh_grow(sh, sh->size + 4 * mib + 512 * 3);
    sh_write(sh, sh->size - 2048, 2048, 7); /* the new tail */
    sh_zero(sh, sh->size - 1024, 1024, VBK_REQ_MAY_UNMAP);
    d = MAX(sh->size - 2 * cs, 8 * mib);
    sh_discard(sh, d, sh->size - d);
    sh_write(sh, 7 * mib + 3, 5 * cs > mib ? mib : 5 * cs, 8);
    ck_assert_int_eq(vbk_block_flush(sh->bs), 0);
    assert_read(sh->bs, sh->shadow, 0, sh->size);
}

static void
run_matrix_case(uint32_t cs, int refbits, int version)
{
    g_autofree char *path = path_of("m.qcow2");
    g_autofree char *info = NULL;
    g_autofree char *want = NULL;
    VbkQcow2CreateOptions o = {.size = MAX(8u << 20, 16 * cs),
                               .cluster_size = cs,
                               .refcount_bits = refbits,
                               .version = version};
    Shadow sh = {.size = o.size, .cs = cs};

    create_image(path, &o);
    assert_check_clean(path);
    sh.shadow = g_malloc0(sh.size);
    sh.bs = open_image(path, false);
    ck_assert_uint_eq(vbk_block_node_cluster_size(sh.bs), cs);
    workload(&sh);
    close_node(sh.bs);
    assert_check_clean(path);
    ck_assert_int_eq(
        run(&info, "qemu-img", "info", "--output=json", path, NULL), 0);
    want = g_strdup_printf("\"cluster-size\": %u", cs);
    ck_assert_msg(strstr(info, want), "%s", info);
    g_free(want);
    want = g_strdup_printf("\"refcount-bits\": %d", refbits);
    ck_assert_msg(strstr(info, want), "%s", info);
    ck_assert_msg(strstr(info, version == 2 ? "\"compat\": \"0.10\""
                                            : "\"compat\": \"1.1\""),
                  "%s", info);
    assert_qemu_content(path, sh.shadow, sh.size);
    /* and reopened by us, read-only */
    sh.bs = open_image(path, true);
    assert_read(sh.bs, sh.shadow, 0, sh.size);
    close_node(sh.bs);
    g_free(sh.shadow);
}

START_TEST(test_matrix)
{
    static const int widths[] = {1, 2, 4, 8, 16, 32, 64};
    uint32_t cs = 512u << (_i / 7);

    run_matrix_case(cs, widths[_i % 7], 3);
}
END_TEST

START_TEST(test_v2)
{
    static const uint32_t sizes[] = {512, 4096, 65536, 2 << 20};

    run_matrix_case(sizes[_i], 16, 2);
}
END_TEST

/* ---- images written by QEMU ---------------------------------------- */

static void
qemu_img_create(const char *path,
                const char *opts,
                const char *backing,
                const char *size)
{
    if (backing)
        ck_assert_int_eq(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2",
                             "-o", opts, "-b", backing, "-F", "qcow2", path,
                             NULL),
                         0);
    else
        ck_assert_int_eq(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2",
                             "-o", opts, path, size, NULL),
                         0);
}

static void
qemu_io(const char *path, const char *cmd)
{
    ck_assert_int_eq(run(NULL, "qemu-io", "-f", "qcow2", "-c", cmd, path, NULL),
                     0);
}

static void
qemu_io_check(const char *path, const char *cmd)
{
    g_autofree char *out = NULL;

    ck_assert_int_eq(run(&out, "qemu-io", "-f", "qcow2", "-c", cmd, path, NULL),
                     0);
    ck_assert_msg(!strstr(out, "Pattern verification failed"), "%s: %s", cmd,
                  out);
}

START_TEST(test_read_qemu_written)
{
    static const char *const variants[] = {
        "compat=1.1",      "compat=0.10",           "cluster_size=512",
        "cluster_size=2M", "compression_type=zstd", "refcount_bits=1",
    };
    g_autofree char *path = path_of("q.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;

    qemu_img_create(path, variants[_i], NULL, "8M");
    qemu_io(path, "write -P 0xab 0 64k");
    qemu_io(path, "write -P 0xcd 2M 4k");
    qemu_io(path, "write -c -P 0x5a 4M 2M");
    qemu_io(path, "write -z 8k 4k");
    bs = open_image(path, true);
    assert_read_pattern(bs, 0, 8192, 0xab);
    assert_read_pattern(bs, 8192, 4096, 0);
    assert_read_pattern(bs, 12288, 65536 - 12288, 0xab);
    assert_read_pattern(bs, 64 * 1024, 2048 * 1024 - 64 * 1024, 0);
    assert_read_pattern(bs, 2 << 20, 4096, 0xcd);
    assert_read_pattern(bs, 4 << 20, 2 << 20, 0x5a);
    ck_assert_int_eq(
        vbk_block_block_status(bs, 4 << 20, 2 << 20, &pnum, NULL, NULL),
        VBK_BS_DATA | VBK_BS_ALLOCATED);
    close_node(bs);

    /* we write on top of QEMU's clusters, QEMU reads ours */
    bs = open_image(path, false);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 4 << 20, 4096, 0), 0);
    {
        g_autofree uint8_t *b = g_malloc(5000);
        memset(b, 0x77, 5000);
        ck_assert_int_eq(
            vbk_block_pwrite(bs, (4 << 20) + 65536 + 100, 5000, b, 0), 0);
    }
    close_node(bs);
    assert_check_clean(path);
    qemu_io_check(path, "read -P 0 4M 4k");
    qemu_io_check(path, "read -P 0x5a 4100k 60k");
    qemu_io_check(path, "read -P 0x77 4259940 5000");
    qemu_io_check(path, "read -P 0x5a 4265040 1929264");
    qemu_io_check(path, "read -P 0xab 12k 52k");
}
END_TEST

/* A raw file of random-ish data converted to a compressed qcow2. */
START_TEST(test_compressed_convert)
{
    static const char *const types[] = {"compression_type=zlib",
                                        "compression_type=zstd"};
    g_autofree char *raw = path_of("src.raw");
    g_autofree char *path = path_of("c.qcow2");
    g_autofree uint8_t *data = g_malloc(1 << 20);
    GRand *r = g_rand_new_with_seed(42);
    VbkBlockNode *bs;

    for (int i = 0; i < 1 << 20; i++)
        data[i] = (i & 0x3000) ? (uint8_t) g_rand_int_range(r, 0, 4)
                               : (uint8_t) (i >> 10);
    g_rand_free(r);
    ck_assert(g_file_set_contents(raw, (char *) data, 1 << 20, NULL));
    ck_assert_int_eq(run(NULL, "qemu-img", "convert", "-c", "-f", "raw", "-O",
                         "qcow2", "-o", types[_i], raw, path, NULL),
                     0);
    bs = open_image(path, true);
    assert_read(bs, data, 0, 1 << 20);
    assert_read(bs, data + 70000, 70000, 3333);
    close_node(bs);
}
END_TEST

START_TEST(test_backing_chain)
{
    g_autofree char *base = path_of("base.qcow2");
    g_autofree char *mid = path_of("mid.qcow2");
    g_autofree char *top = path_of("top.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;
    uint32_t depth;
    int ret;

    qemu_img_create(base, "cluster_size=65536", NULL, "1M");
    qemu_io(base, "write -P 0x11 0 1M");
    qemu_img_create(mid, "cluster_size=4096", "base.qcow2", NULL);
    qemu_io(mid, "write -P 0x22 64k 64k");
    qemu_img_create(top, "cluster_size=65536", "mid.qcow2", NULL);
    qemu_io(top, "write -P 0x33 128k 64k");
    qemu_io(top, "write -z 192k 64k");

    bs = open_image(top, false);
    ck_assert_str_eq(vbk_block_node_driver_name(vbk_block_node_backing(bs)),
                     "qcow2");
    assert_read_pattern(bs, 0, 65536, 0x11);
    assert_read_pattern(bs, 65536, 65536, 0x22);
    assert_read_pattern(bs, 131072, 65536, 0x33);
    assert_read_pattern(bs, 196608, 65536, 0);
    ret = vbk_block_block_status_above(bs, 0, 1 << 20, &pnum, &depth);
    ck_assert_int_ge(ret, 0);
    ck_assert_uint_eq(depth, 3);
    ck_assert_uint_eq(pnum, 65536);
    ret = vbk_block_block_status_above(bs, 65536, 1 << 20, &pnum, &depth);
    ck_assert_uint_eq(depth, 2);
    ret = vbk_block_block_status_above(bs, 131072, 65536, &pnum, &depth);
    ck_assert_uint_eq(depth, 1);
    ck_assert(ret & VBK_BS_DATA);
    ret = vbk_block_block_status_above(bs, 196608, 65536, &pnum, &depth);
    ck_assert_uint_eq(depth, 1);
    ck_assert(ret & VBK_BS_ZERO);

    /* partial write: the rest of the cluster is copied up from below */
    {
        uint8_t b[100];
        memset(b, 0x44, sizeof(b));
        ck_assert_int_eq(vbk_block_pwrite(bs, 300000, 100, b, 0), 0);
        ck_assert_int_eq(vbk_block_pwrite(bs, 70000, 100, b, 0), 0);
    }
    /* discard and zero over backing data must read zero */
    ck_assert_int_eq(vbk_block_pdiscard(bs, 512 * 1024, 128 * 1024), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 0, 1000, 0), 0);
    assert_read_pattern(bs, 512 * 1024, 128 * 1024, 0);
    close_node(bs);
    assert_check_clean(top);
    qemu_io_check(top, "read -P 0x11 262144 37856");
    qemu_io_check(top, "read -P 0x44 300000 100");
    qemu_io_check(top, "read -P 0x11 300100 27580");
    qemu_io_check(top, "read -P 0x22 65536 4464");
    qemu_io_check(top, "read -P 0x44 70000 100");
    qemu_io_check(top, "read -P 0x22 70100 60972");
    qemu_io_check(top, "read -P 0 512k 128k");
    qemu_io_check(top, "read -P 0 0 1000");
    qemu_io_check(top, "read -P 0x11 1000 64536");
}
END_TEST

/* vbackup creates an overlay with backing file and format. */
START_TEST(test_create_backing)
{
    g_autofree char *base = path_of("b.qcow2");
    g_autofree char *top = path_of("t.qcow2");
    g_autofree char *info = NULL;
    VbkQcow2CreateOptions o = {.size = 2 << 20,
                               .backing_file = "b.qcow2",
                               .backing_fmt = "qcow2",
                               .lazy_refcounts = true};
    VbkBlockNode *bs;
    VbkFormatInfo fi;
    uint8_t b[512];

    qemu_img_create(base, "cluster_size=65536", NULL, "1M");
    qemu_io(base, "write -P 0x66 0 1M");
    create_image(top, &o);
    assert_check_clean(top);
    ck_assert_int_eq(run(&info, "qemu-img", "info", "--output=json", top, NULL),
                     0);
    ck_assert_msg(strstr(info, "\"backing-filename\": \"b.qcow2\""), "%s",
                  info);
    ck_assert_msg(strstr(info, "\"backing-filename-format\": \"qcow2\""), "%s",
                  info);
    ck_assert_msg(strstr(info, "\"lazy-refcounts\": true"), "%s", info);
    bs = open_image(top, false);
    ck_assert(vbk_block_node_format_info(bs, &fi));
    ck_assert_str_eq(fi.backing_file, "b.qcow2");
    ck_assert(fi.lazy_refcounts);
    ck_assert_int_eq(fi.version, 3);
    vbk_format_info_clear(&fi);
    memset(b, 0x99, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 4096, 512, b, 0), 0);
    assert_read_pattern(bs, 0, 4096, 0x66);
    assert_read_pattern(bs, 1 << 20, 1 << 20, 0);
    close_node(bs);
    assert_check_clean(top);
    qemu_io_check(top, "read -P 0x66 0 4k");
    qemu_io_check(top, "read -P 0x99 4k 512");
    qemu_io_check(top, "read -P 0x66 4608 1043968");
}
END_TEST

/* Images vbackup creates with the other header options. */
START_TEST(test_create_options)
{
    g_autofree char *path = path_of("o.qcow2");
    g_autofree char *info = NULL;
    VbkQcow2CreateOptions o = {.size = 3 << 20,
                               .zstd = true,
                               .cluster_size = 8192,
                               .refcount_bits = 4};
    VbkBlockNode *bs;
    VbkFormatInfo fi;

    create_image(path, &o);
    assert_check_clean(path);
    ck_assert_int_eq(
        run(&info, "qemu-img", "info", "--output=json", path, NULL), 0);
    ck_assert_msg(strstr(info, "\"compression-type\": \"zstd\""), "%s", info);
    ck_assert_msg(strstr(info, "\"refcount-bits\": 4"), "%s", info);
    bs = open_image(path, false);
    ck_assert(vbk_block_node_format_info(bs, &fi));
    ck_assert(fi.zstd);
    ck_assert_int_eq(fi.refcount_bits, 4);
    ck_assert_uint_eq(fi.cluster_size, 8192);
    vbk_format_info_clear(&fi);
    ck_assert_int_eq(vbk_block_node_getlength(bs), 3 << 20);
    close_node(bs);
    /* QEMU writes zstd-compressed clusters into it; we read them */
    qemu_io(path, "write -c -P 0x61 0 64k");
    bs = open_image(path, true);
    assert_read_pattern(bs, 0, 65536, 0x61);
    close_node(bs);
}
END_TEST

/* Preallocated images: every cluster already mapped (zero-flagged with
 * a host cluster for metadata preallocation on v3). */
START_TEST(test_preallocated)
{
    static const char *const modes[] = {
        "preallocation=metadata",
        "preallocation=falloc",
        "preallocation=metadata,compat=0.10",
    };
    g_autofree char *path = path_of("p.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;
    uint8_t b[3000];

    qemu_img_create(path, modes[_i], NULL, "2M");
    bs = open_image(path, false);
    assert_read_pattern(bs, 0, 2 << 20, 0);
    ck_assert_int_ge(vbk_block_block_status(bs, 0, 2 << 20, &pnum, NULL, NULL),
                     0);
    memset(b, 0x71, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 65536 + 7, sizeof(b), b, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 65536, 512, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 1 << 20, 1 << 19, 0), 0);
    ck_assert_int_eq(vbk_block_pdiscard(bs, 3 << 19, 1 << 19), 0);
    close_node(bs);
    assert_check_clean(path);
    qemu_io_check(path, "read -P 0 64k 512");
    qemu_io_check(path, "read -P 0x71 66048 2495");
    qemu_io_check(path, "read -P 0 1M 1M");
}
END_TEST

/* A writer with lazy refcounts killed: the dirty bit is left set. */
START_TEST(test_lazy_refcounts_dirty)
{
    g_autofree char *path = path_of("l.qcow2");
    g_autofree char *data = NULL;
    VbkBlockNode *bs;
    gsize len;

    qemu_img_create(path, "lazy_refcounts=on", NULL, "4M");
    run(NULL, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 1M", "-c",
        "write -P 0x43 2M 64k", "-c", "sigraise 9", path, NULL);
    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    ck_assert_msg(data[79] & 1, "the dirty bit should be set");
    g_clear_pointer(&data, g_free);

    bs = open_image(path, false);
    assert_read_pattern(bs, 0, 1 << 20, 0x42);
    assert_read_pattern(bs, 2 << 20, 65536, 0x43);
    {
        uint8_t b[4096];
        memset(b, 0x44, sizeof(b));
        ck_assert_int_eq(vbk_block_pwrite(bs, 3 << 20, sizeof(b), b, 0), 0);
    }
    close_node(bs);
    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    ck_assert_msg(!(data[79] & 1), "the dirty bit should be clear");
    assert_check_clean(path);
    qemu_io_check(path, "read -P 0x42 0 1M");
    qemu_io_check(path, "read -P 0x44 3M 4k");
}
END_TEST

static const char *const variants_snapshot[] = {
    "compat=1.1",
    "compat=0.10",
    "cluster_size=4096,refcount_bits=2",
};

/* events that the fault workload does not reach */
static bool
fault_event_optional(const char *event)
{
    return g_str_equal(event, "l2_alloc_cow_read"); /* no shared L2 */
}

/* An internal snapshot shares L2 tables and data clusters (refcount 2):
 * writes copy them, and the snapshot keeps its data. */
START_TEST(test_internal_snapshot)
{
    g_autofree char *path = path_of("s.qcow2");
    VbkBlockNode *bs;
    uint8_t b[4096];

    qemu_img_create(path, variants_snapshot[_i], NULL, "4M");
    qemu_io(path, "write -P 0x10 0 1M");
    ck_assert_int_eq(
        run(NULL, "qemu-img", "snapshot", "-c", "snap1", path, NULL), 0);
    bs = open_image(path, false);
    memset(b, 0x20, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 65536 + 100, sizeof(b), b, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 512 * 1024, 65536, 0), 0);
    ck_assert_int_eq(vbk_block_pdiscard(bs, 768 * 1024, 65536), 0);
    ck_assert_int_eq(vbk_block_pwrite(bs, 2 << 20, sizeof(b), b, 0), 0);
    assert_read_pattern(bs, 0, 65636, 0x10);
    assert_read_pattern(bs, 65636, 4096, 0x20);
    close_node(bs);
    assert_check_clean(path);
    qemu_io_check(path, "read -P 0x20 65636 4096");
    qemu_io_check(path, "read -P 0 512k 64k");
    qemu_io_check(path, "read -P 0 768k 64k");
    qemu_io_check(path, "read -P 0x10 832k 192k");
    ck_assert_int_eq(
        run(NULL, "qemu-img", "snapshot", "-a", "snap1", path, NULL), 0);
    assert_check_clean(path);
    qemu_io_check(path, "read -P 0x10 0 1M");
    qemu_io_check(path, "read -P 0 1M 3M");
}
END_TEST

/* ---- random workload on an overlay ------------------------------- */

typedef struct {
    uint32_t cs;
    int version;
    int refbits;
} ChainCase;

static const ChainCase chain_cases[] = {
    {65536, 3, 16},
    {4096, 3, 2},
    {65536, 2, 16},
    {512, 2, 16},
};

/* Overlay on a 3 MiB base, itself 4 MiB and grown: random writes, zero
 * writes, discards and a grow; qemu-img must read the chain as the
 * shadow says.  Discarded whole clusters read as zeroes on v3 (zero
 * flag) but show the backing file again on v2. */
START_TEST(test_overlay_random)
{
    const ChainCase *c = &chain_cases[_i];
    g_autofree char *base = path_of("rb.qcow2");
    g_autofree char *top = path_of("rt.qcow2");
    uint64_t bsize = 3 << 20, size = 4 << 20;
    g_autofree uint8_t *below = g_malloc0(8 << 20);
    VbkQcow2CreateOptions o = {.size = size,
                               .cluster_size = c->cs,
                               .version = c->version,
                               .refcount_bits = c->refbits,
                               .backing_file = "rb.qcow2",
                               .backing_fmt = "qcow2"};
    GRand *r = g_rand_new_with_seed(77 + _i);
    Shadow sh = {.size = size, .cs = c->cs};

    qemu_img_create(base, "cluster_size=65536", NULL, "3M");
    qemu_io(base, "write -P 0xb1 0 3M");
    memset(below, 0xb1, bsize);
    create_image(top, &o);
    sh.shadow = g_malloc(size);
    memcpy(sh.shadow, below, size);
    sh.bs = open_image(top, false);
    for (int op = 0; op < 120; op++) {
        uint64_t off = g_rand_int_range(r, 0, sh.size / 512) * 512ull +
                       g_rand_int_range(r, 0, 2) * 7;
        uint64_t want = (uint64_t) g_rand_int_range(r, 1, 400) * 512;
        uint64_t len = MIN(sh.size - off, want);
        uint64_t a, b;

        switch (g_rand_int_range(r, 0, 5)) {
        case 0:
        case 1:
            sh_write(&sh, off, len, (uint8_t) op);
            break;
        case 2:
            sh_zero(&sh, off, len, g_rand_boolean(r) ? VBK_REQ_MAY_UNMAP : 0);
            break;
        case 3:
            a = (off + c->cs - 1) / c->cs * c->cs;
            b = (off + len) / c->cs * c->cs;
            ck_assert_int_eq(vbk_block_pdiscard(sh.bs, off, len), 0);
            if (b > a && c->version >= 3)
                memset(sh.shadow + a, 0, b - a);
            else if (b > a)
                memcpy(sh.shadow + a, below + a, b - a);
            break;
        default:
            if (op == 60)
                sh_grow(&sh, 6 << 20);
            assert_read(sh.bs, sh.shadow + off, off, len);
            break;
        }
    }
    ck_assert_int_eq(vbk_block_flush(sh.bs), 0);
    assert_read(sh.bs, sh.shadow, 0, sh.size);
    close_node(sh.bs);
    g_rand_free(r);
    assert_check_clean(top);
    assert_qemu_content(top, sh.shadow, sh.size);
    g_free(sh.shadow);
}
END_TEST

/* ---- several threads on one node ----------------------------------- */

typedef struct {
    VbkBlockNode *bs;
    uint64_t base;
    uint64_t len;
    uint32_t seed;
    uint32_t cs;
    int errors;
} Worker;

static gpointer
worker_run(gpointer data)
{
    Worker *w = data;
    g_autofree uint8_t *shadow = g_malloc0(w->len);
    g_autofree uint8_t *buf = g_malloc(w->len);
    GRand *r = g_rand_new_with_seed(w->seed);

    for (int op = 0; op < 150; op++) {
        uint64_t off = g_rand_int_range(r, 0, w->len / 512) * 512;
        uint64_t want = (uint64_t) g_rand_int_range(r, 1, 64) * 512;
        uint64_t len = MIN(w->len - off, want);
        int kind = g_rand_int_range(r, 0, 4);
        uint64_t a, b;

        switch (kind) {
        case 0:
            memset(buf, (uint8_t) g_rand_int(r), len);
            w->errors +=
                vbk_block_pwrite(w->bs, w->base + off, len, buf, 0) != 0;
            memcpy(shadow + off, buf, len);
            break;
        case 1:
            w->errors += vbk_block_pwrite_zeroes(w->bs, w->base + off, len,
                                                 VBK_REQ_MAY_UNMAP) != 0;
            memset(shadow + off, 0, len);
            break;
        case 2:
            /* whole clusters only; regions are cluster aligned */
            a = (off + w->cs - 1) / w->cs * w->cs;
            b = (off + len) / w->cs * w->cs;
            w->errors += vbk_block_pdiscard(w->bs, w->base + off, len) != 0;
            if (b > a)
                memset(shadow + a, 0, b - a);
            break;
        default:
            w->errors += vbk_block_pread(w->bs, w->base + off, len, buf) != 0;
            w->errors += memcmp(buf, shadow + off, len) != 0;
            break;
        }
    }
    w->errors += vbk_block_pread(w->bs, w->base, w->len, buf) != 0;
    w->errors += memcmp(buf, shadow, w->len) != 0;
    g_rand_free(r);
    return NULL;
}

START_TEST(test_threads)
{
    static const uint32_t sizes[] = {4096, 65536};
    g_autofree char *path = path_of("th.qcow2");
    VbkQcow2CreateOptions o = {.size = 8 << 20, .cluster_size = sizes[_i]};
    Worker w[4];
    GThread *t[4];
    VbkBlockNode *bs;

    create_image(path, &o);
    bs = open_image(path, false);
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){.bs = bs,
                        .base = (uint64_t) i * (2 << 20),
                        .len = 2 << 20,
                        .seed = 1000 + i,
                        .cs = sizes[_i]};
        t[i] = g_thread_new("worker", worker_run, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
        ck_assert_msg(w[i].errors == 0, "worker %d: %d errors", i, w[i].errors);
    }
    close_node(bs);
    assert_check_clean(path);
}
END_TEST

/* ---- I/O errors in the middle of metadata updates ------------------ */

static const char *const fault_events[] = {
    "l1_update",
    "l2_update",
    "l2_alloc_write",
    "l2_alloc_cow_read",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_write",
    "refblock_alloc_hookup",
    "reftable_grow",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_free",
    "cow_read",
    "cow_write",
    "write_aio",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
};

/* qcow2 -> blkdebug (one EIO after @event) -> file */
static VbkBlockNode *
open_faulty(const char *path, const char *event)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'qcow2'>, 'discard': <'unmap'>, 'file': <{"
        "'driver': <'blkdebug'>, 'inject-error': <[{'event': <'%s'>, "
        "'errno': <5>, 'once': <true>, 'immediately': <false>}]>, "
        "'image': <{'driver': <'file'>, 'filename': <'%s'>}>}>}",
        event, path);
    g_autoptr(GError) err = NULL;
    GVariant *opts = g_variant_parse(NULL, text, NULL, NULL, &err);
    VbkBlockNode *bs;

    ck_assert_msg(opts != NULL, "%s", err ? err->message : "");
    bs = vbk_block_node_open(opts, &err);
    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    return bs;
}

/* After a failed metadata write the image may leak, never be corrupt. */
START_TEST(test_fault_injection)
{
    g_autofree char *path = path_of("f.qcow2");
    g_autofree char *out = NULL;
    VbkQcow2CreateOptions o = {
        .size = 4 << 20, .cluster_size = 512, .refcount_bits = 64};
    g_autofree uint8_t *b = g_malloc(128 * 1024);
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;
    int failures = 0, rc;

    memset(b, 0x3c, 128 * 1024);
    create_image(path, &o);
    /* the dispatch layer lets only protocol nodes grow, not blkdebug:
     * give the file room up front */
    ck_assert_int_eq(truncate(path, 16 << 20), 0);
    bs = open_faulty(path, fault_events[_i]);
    for (int i = 0; i < 24; i++) {
        uint64_t off = (uint64_t) i * 110000 + 100;
        failures += vbk_block_pwrite(bs, off, 100000 + i, b, 0) < 0;
        failures += vbk_block_pwrite_zeroes(bs, off + 4096, 2048, 0) < 0;
        failures += vbk_block_pdiscard(bs, off, 4096) < 0;
        if (i == 12)
            failures += !vbk_block_truncate(bs, 8 << 20, &err);
        g_clear_error(&err);
    }
    close_node(bs);
    rc = run(&out, "qemu-img", "check", "-f", "qcow2", path, NULL);
    ck_assert_msg(rc == 0 || rc == 3, "event %s: rc %d (%d failures)\n%s",
                  fault_events[_i], rc, failures, out);
    /* the event fired and exactly one request failed */
    ck_assert_msg(failures == 1 ||
                      (failures == 0 && fault_event_optional(fault_events[_i])),
                  "event %s: %d failures", fault_events[_i], failures);
    ck_assert_msg(!strstr(out, "ERROR"), "%s", out);
}
END_TEST

/* ---- bad images ---------------------------------------------------- */

static void
patch(const char *path, long off, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "r+b");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

static void
open_fails(const char *path, bool read_only, const char *message)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs =
        vbk_block_node_open_image(path, "qcow2", read_only, NULL, &err);

    ck_assert_ptr_null(bs);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err->message, message), "got '%s', want '%s'",
                  err->message, message);
}

START_TEST(test_bad_headers)
{
    g_autofree char *path = path_of("bad.qcow2");
    static const uint8_t unknown[] = {0, 0, 0, 0, 0x10, 0, 0, 0};
    static const uint8_t corrupt[] = {0, 0, 0, 0, 0, 0, 0, 2};
    static const uint8_t bits8[] = {0, 0, 0, 8};
    static const uint8_t l1_out[] = {0, 0, 0, 1, 0, 0, 0, 0};
    static const uint8_t l1_on_rt[] = {0, 0, 0, 0, 0, 1, 0, 0};
    static const uint8_t huge_l1[] = {0x10, 0, 0, 0};
    static const uint8_t ver4[] = {0, 0, 0, 4};
    static const uint8_t order7[] = {0, 0, 0, 7};
    VbkBlockNode *bs;

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 72, unknown, 8);
    open_fails(
        path, true,
        "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 72, corrupt, 8);
    open_fails(path, false,
               "qcow2: Image is corrupt; cannot be opened read/write");
    bs = open_image(path, true);
    close_node(bs);

    qemu_img_create(path, "extended_l2=on", NULL, "1M");
    open_fails(path, true, "Unsupported qcow2 feature(s): extended L2 entries");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 20, bits8, 4);
    open_fails(path, true, "Unsupported cluster size: 2^8");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 4, ver4, 4);
    open_fails(path, true, "Unsupported qcow2 version 4");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 96, order7, 4);
    open_fails(path, true, "Reference count entry width too large");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 40, l1_out, 8);
    open_fails(path, true, "L1 table offset invalid or outside the image file");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 40, l1_on_rt, 8);
    open_fails(path, true, "overlaps");

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    patch(path, 36, huge_l1, 4);
    open_fails(path, true, "Active L1 table too large");

    ck_assert(g_file_set_contents(path, "QFI", 3, NULL));
    open_fails(path, true, "Image is not in qcow2 format");

    /* a backing name offset past the end of a short file (found by
     * fuzz-qcow2): the extension walk stays inside cluster 0 */
    qemu_img_create(path, "compat=1.1", NULL, "1M");
    {
        static const uint8_t boff[] = {0, 0, 0, 0, 0, 0, 8, 0};
        static const uint8_t ext[] = {0, 0x23, 0, 0, 0, 0, 0, 0x10};
        patch(path, 8, boff, 8);
        patch(path, 0x70, ext, 8); /* unknown extension, 16 bytes */
        ck_assert_int_eq(truncate(path, 580), 0);
    }
    open_fails(path, true, "L1 table offset invalid or outside the image file");
}
END_TEST

/* An L2 entry pointing past the end of the file fails the request and
 * nothing is written. */
START_TEST(test_bad_l2_entry)
{
    g_autofree char *path = path_of("badl2.qcow2");
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    gsize n1, n2;
    uint8_t entry[8] = {0x80, 0, 0, 0, 0x10, 0, 0, 0}; /* 64 GiB, COPIED */
    uint8_t l2_bad_align[8] = {0x80, 0, 0, 0, 0, 0, 0x02, 0};
    uint8_t buf[512];
    VbkBlockNode *bs;

    qemu_img_create(path, "compat=1.1", NULL, "1M");
    qemu_io(path, "write -P 0x1 0 64k");
    /* L1 at 0x30000, the first L2 table at 0x40000 */
    patch(path, 0x40000, entry, 8);
    ck_assert(g_file_get_contents(path, &before, &n1, NULL));
    bs = open_image(path, false);
    ck_assert_int_lt(vbk_block_pread(bs, 0, 512, buf), 0);
    memset(buf, 0x55, sizeof(buf));
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 512, buf, 0), -EIO);
    close_node(bs);
    ck_assert(g_file_get_contents(path, &after, &n2, NULL));
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(before, after, n1) == 0);

    patch(path, 0x40000, l2_bad_align, 8);
    bs = open_image(path, true);
    ck_assert_int_eq(vbk_block_pread(bs, 0, 512, buf), -EIO);
    close_node(bs);
}
END_TEST

START_TEST(test_block_status)
{
    g_autofree char *path = path_of("bs.qcow2");
    VbkQcow2CreateOptions o = {.size = 4 << 20};
    VbkBlockNode *bs;
    uint64_t pnum, map;
    VbkBlockNode *file;
    uint8_t *b = g_malloc(256 * 1024);
    int ret;

    memset(b, 0xee, 256 * 1024);
    create_image(path, &o);
    bs = open_image(path, false);
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 256 * 1024, b, 0), 0);
    ck_assert_int_eq(
        vbk_block_pwrite_zeroes(bs, 256 * 1024, 128 * 1024, VBK_REQ_MAY_UNMAP),
        0);
    ret = vbk_block_block_status(bs, 0, 4 << 20, &pnum, &map, &file);
    ck_assert_int_eq(ret & ~VBK_BS_EOF,
                     VBK_BS_DATA | VBK_BS_ALLOCATED | VBK_BS_OFFSET_VALID);
    ck_assert_uint_eq(pnum, 256 * 1024);
    ck_assert_ptr_eq(file, vbk_block_node_file(bs));
    ck_assert_uint_eq(map % 65536, 0);
    ret = vbk_block_block_status(bs, 256 * 1024, 4 << 20, &pnum, NULL, NULL);
    ck_assert_int_eq(ret, VBK_BS_ZERO | VBK_BS_ALLOCATED);
    ck_assert_uint_eq(pnum, 128 * 1024);
    ret = vbk_block_block_status(bs, 384 * 1024, 4 << 20, &pnum, NULL, NULL);
    ck_assert_int_eq(ret & ~VBK_BS_EOF, 0);
    ck_assert_uint_eq(pnum, (4 << 20) - 384 * 1024);
    close_node(bs);
    g_free(b);
}
END_TEST

START_TEST(test_create_errors)
{
    g_autofree char *path = path_of("e.qcow2");
    g_autoptr(GError) err = NULL;
    VbkQcow2CreateOptions bad_cs = {.size = 1 << 20, .cluster_size = 1000};
    VbkQcow2CreateOptions bad_v2 = {
        .size = 1 << 20, .version = 2, .refcount_bits = 8};
    VbkQcow2CreateOptions bad_rb = {.size = 1 << 20, .refcount_bits = 128};
    VbkBlockNode *file;
    VbkBlockNode *bs;

    ck_assert(vbk_file_create(path, 0, &err));
    file = open_file_node(path);
    ck_assert(!vbk_qcow2_create(file, &bad_cs, &err));
    ck_assert_str_eq(
        err->message,
        "Cluster size must be a power of two between 512 and 2048k");
    g_clear_error(&err);
    ck_assert(!vbk_qcow2_create(file, &bad_v2, &err));
    ck_assert(strstr(err->message, "compatibility level 1.1"));
    g_clear_error(&err);
    ck_assert(!vbk_qcow2_create(file, &bad_rb, &err));
    g_clear_error(&err);
    close_node(file);

    /* shrinking is refused, growing by a non-multiple of 512 too */
    {
        VbkQcow2CreateOptions o = {.size = 1 << 20};
        create_image(path, &o);
    }
    bs = open_image(path, false);
    ck_assert(!vbk_block_truncate(bs, 512 * 1024, &err));
    ck_assert_str_eq(err->message,
                     "qcow2 doesn't support shrinking images yet");
    g_clear_error(&err);
    ck_assert(!vbk_block_truncate(bs, (2 << 20) + 1, &err));
    close_node(bs);
}
END_TEST

static Suite *
qcow2_suite(void)
{
    Suite *s = suite_create("qcow2");
    TCase *tc;

    tc = tcase_create("matrix");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_matrix, 0, 13 * 7);
    tcase_add_loop_test(tc, test_v2, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("interop");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_read_qemu_written, 0, 6);
    tcase_add_loop_test(tc, test_compressed_convert, 0, 2);
    tcase_add_test(tc, test_backing_chain);
    tcase_add_test(tc, test_create_backing);
    tcase_add_test(tc, test_create_options);
    tcase_add_loop_test(tc, test_preallocated, 0, 3);
    tcase_add_test(tc, test_lazy_refcounts_dirty);
    tcase_add_loop_test(tc, test_internal_snapshot, 0, 3);
    suite_add_tcase(s, tc);

    tc = tcase_create("overlay");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_overlay_random, 0, G_N_ELEMENTS(chain_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_threads, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_fault_injection, 0,
                        G_N_ELEMENTS(fault_events));
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bad_headers);
    tcase_add_test(tc, test_bad_l2_entry);
    tcase_add_test(tc, test_block_status);
    tcase_add_test(tc, test_create_errors);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(qcow2_suite());
}

/*
 * interop-util.c: helpers shared by the qcow2 interop tests.
 *
 * Nodes are opened the way a QMP client would open them (an a{sv} of
 * blockdev-add keys) so the tests exercise the same path as vbackupd.
 * The peers (qemu-img, qemu-io, qcowinfo) are spawned synchronously with
 * their output captured; a failing peer fails the test with its stderr in
 * the message, so a red test explains itself in the meson log.
 *
 * libqcow is used through dlopen() of libqcow.so.1: Debian's libqcow1
 * ships the library but the headers live in libqcow-dev, which the
 * machines do not carry.  The handful of entry points used here are
 * declared from libqcow's documented C API (libqcow.h), where every
 * function returns 1 on success and -1 on error and takes a
 * libqcow_error_t ** last.
 */
#include "interop-util.h"

#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

VbkBlockNode *
itu_open_qcow2(const char *path,
               const char *name,
               bool read_only,
               bool direct,
               GError **error)
{
    g_autoptr(GVariant) opts = NULL;

    opts = g_variant_new_parsed(
        "{'driver': <'qcow2'>, 'node-name': <%s>, 'read-only': <%b>,"
        " 'discard': <'unmap'>,"
        " 'cache': <{'direct': <%b>, 'no-flush': <false>}>,"
        " 'file': <{'driver': <'file'>, 'filename': <%s>,"
        "           'read-only': <%b>,"
        "           'cache': <{'direct': <%b>, 'no-flush': <false>}>}>}",
        name, read_only, direct, path, read_only, direct);
    g_variant_ref_sink(opts);
    return vbk_block_node_open(opts, error);
}

VbkBlockNode *
itu_open_parsed(const char *text)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) opts = g_variant_parse(NULL, text, NULL, NULL, &err);
    VbkBlockNode *bs;

    ck_assert_msg(opts, "%s: %s", text, err ? err->message : "");
    bs = vbk_block_node_open(opts, &err);
    ck_assert_msg(bs, "%s: %s", text, err ? err->message : "");
    return bs;
}

VbkBlockNode *
itu_open_file(const char *path, const char *name, GError **error)
{
    g_autoptr(GVariant) opts = NULL;

    opts = g_variant_new_parsed(
        "{'driver': <'file'>, 'node-name': <%s>, 'filename': <%s>}", name,
        path);
    g_variant_ref_sink(opts);
    return vbk_block_node_open(opts, error);
}

void
itu_close(VbkBlockNode *bs)
{
    g_autofree char *name = NULL;
    g_autoptr(GError) err = NULL;

    if (!bs)
        return;
    name = g_strdup(vbk_block_node_name(bs));
    vbk_block_node_unref(bs);
    if (vbk_block_node_find(name) && !vbk_block_node_delete(name, &err))
        ck_abort_msg("blockdev-del %s: %s", name, err->message);
}

void
itu_create_qcow2(const char *path, const VbkQcow2CreateOptions *opts)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *file;
    bool ok;

    ck_assert_msg(vbk_file_create(path, 0, &err), "create %s: %s", path,
                  err ? err->message : "?");
    file = itu_open_file(path, "itu-create-file", &err);
    ck_assert_msg(file, "open %s: %s", path, err ? err->message : "?");
    ok = vbk_qcow2_create(file, opts, &err);
    itu_close(file);
    ck_assert_msg(ok, "qcow2 create %s: %s", path, err ? err->message : "?");
}

int
itu_runv(const char *const *argv, char **out, char **err)
{
    g_autofree char *o = NULL;
    g_autofree char *e = NULL;
    int rc;

    /* always capture: a peer's chatter must not reach the TAP stream */
    rc = vbk_test_spawn(argv, &o, &e);
    if (out)
        *out = g_steal_pointer(&o);
    if (err)
        *err = g_steal_pointer(&e);
    return rc;
}

int
itu_run(char **out, char **err, const char *prog, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    va_list ap;
    const char *a;

    g_ptr_array_add(argv, (gpointer) prog);
    va_start(ap, prog);
    while ((a = va_arg(ap, const char *)))
        g_ptr_array_add(argv, (gpointer) a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    return itu_runv((const char *const *) argv->pdata, out, err);
}

JsonNode *
itu_run_json(const char *const *argv)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autofree char *cmd = g_strjoinv(" ", (char **) argv);
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) jerr = NULL;
    int rc = itu_runv(argv, &out, &err);

    ck_assert_msg(rc == 0, "%s: exit %d\n%s%s", cmd, rc, out, err);
    ck_assert_msg(json_parser_load_from_data(parser, out, -1, &jerr),
                  "%s: %s\n%s", cmd, jerr ? jerr->message : "?", out);
    return json_node_copy(json_parser_get_root(parser));
}

void
itu_assert_qemu_img_check(const char *path)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    int rc =
        itu_run(&out, &err, "qemu-img", "check", "-f", "qcow2", path, NULL);

    /* 0 clean, 2 corruptions, 3 leaks only: only 0 passes. */
    ck_assert_msg(rc == 0, "qemu-img check %s: exit %d\n%s%s", path, rc, out,
                  err);
    ck_assert_msg(strstr(out, "No errors were found on the image."),
                  "qemu-img check %s:\n%s%s", path, out, err);
}

void
itu_assert_qemu_img_compare(const char *img, const char *raw)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    int rc = itu_run(&out, &err, "qemu-img", "compare", "-f", "qcow2", "-F",
                     "raw", img, raw, NULL);

    ck_assert_msg(rc == 0, "qemu-img compare %s %s: exit %d\n%s%s", img, raw,
                  rc, out, err);
}

char *
itu_sha256_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) err = NULL;

    ck_assert_msg(g_file_get_contents(path, &data, &len, &err), "%s",
                  err ? err->message : path);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *) data, len);
}

static uint64_t
first_difference(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (a[i] != b[i])
            return i;
    }
    return len;
}

void
itu_assert_node_equals_file(VbkBlockNode *bs, const char *raw_path)
{
    const size_t chunk = 4 << 20;
    g_autofree uint8_t *a = g_malloc(chunk);
    g_autofree uint8_t *b = g_malloc(chunk);
    int64_t len = vbk_block_node_getlength(bs);
    struct stat st;
    uint64_t off;
    int fd = open(raw_path, O_RDONLY | O_CLOEXEC);

    ck_assert_msg(fd >= 0, "open %s: %s", raw_path, g_strerror(errno));
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_msg(len == st.st_size,
                  "%s: node length %" G_GINT64_FORMAT
                  " != raw size %" G_GINT64_FORMAT,
                  vbk_block_node_name(bs), len, (gint64) st.st_size);
    for (off = 0; off < (uint64_t) len; off += chunk) {
        size_t n = MIN(chunk, (uint64_t) len - off);
        int ret = vbk_block_pread(bs, off, n, a);
        uint64_t d;

        ck_assert_msg(ret == 0, "pread %" G_GUINT64_FORMAT "+%zu: %s", off, n,
                      g_strerror(-ret));
        ck_assert_int_eq(pread(fd, b, n, off), (ssize_t) n);
        d = first_difference(a, b, n);
        ck_assert_msg(d == n,
                      "%s differs from %s at byte %" G_GUINT64_FORMAT
                      ": 0x%02x != 0x%02x",
                      vbk_block_node_name(bs), raw_path, off + d, a[d], b[d]);
    }
    close(fd);
}

void
itu_fill_random(GRand *rand, uint8_t *buf, size_t len)
{
    size_t i;

    for (i = 0; i + 4 <= len; i += 4) {
        guint32 v = g_rand_int(rand);
        memcpy(buf + i, &v, 4);
    }
    for (; i < len; i++)
        buf[i] = g_rand_int(rand) & 0xff;
}

/* ---- for tests that judge one image at a time ---------------------- */

static char *itu_dir;

void
itu_setup(void)
{
    itu_dir = vbk_test_tmpdir_new();
}

void
itu_teardown(void)
{
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(itu_dir);
    g_clear_pointer(&itu_dir, g_free);
}

char *
itu_path(const char *name)
{
    return g_build_filename(itu_dir, name, NULL);
}

VbkBlockNode *
itu_open_image(const char *path, bool read_only)
{
    g_autoptr(GVariant) opts = NULL;
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;

    opts = g_variant_new_parsed(
        "{'driver': <'qcow2'>, 'read-only': <%b>, 'discard': <'unmap'>,"
        " 'file': <{'driver': <'file'>, 'filename': <%s>}>}",
        read_only, path);
    g_variant_ref_sink(opts);
    bs = vbk_block_node_open(opts, &err);
    ck_assert_msg(bs != NULL, "open %s: %s", path, err ? err->message : "");
    return bs;
}

void
itu_assert_read(VbkBlockNode *bs,
                const uint8_t *expect,
                uint64_t off,
                uint64_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);
    uint64_t at;

    ck_assert_int_eq(vbk_block_pread(bs, off, len, buf), 0);
    at = first_difference(buf, expect, len);
    if (at < len)
        ck_abort_msg("read at %" G_GUINT64_FORMAT ": 0x%02x, expected 0x%02x",
                     off + at, buf[at], expect[at]);
}

void
itu_assert_read_pattern(VbkBlockNode *bs, uint64_t off, uint64_t len, uint8_t p)
{
    g_autofree uint8_t *expect = g_malloc(len);

    memset(expect, p, len);
    itu_assert_read(bs, expect, off, len);
}

void
itu_assert_qemu_content(const char *path, const uint8_t *expect, uint64_t size)
{
    g_autofree char *raw = g_strconcat(path, ".raw", NULL);
    g_autofree char *data = NULL;
    g_autofree char *err = NULL;
    gsize len = 0;
    uint64_t at;

    ck_assert_msg(itu_run(NULL, &err, "qemu-img", "convert", "-f", "qcow2",
                          "-O", "raw", path, raw, NULL) == 0,
                  "qemu-img convert %s: %s", path, err);
    ck_assert(g_file_get_contents(raw, &data, &len, NULL));
    ck_assert_uint_eq(len, size);
    at = first_difference((const uint8_t *) data, expect, size);
    if (at < size)
        ck_abort_msg("byte %" G_GUINT64_FORMAT ": 0x%02x, expected 0x%02x", at,
                     (uint8_t) data[at], expect[at]);
    unlink(raw);
}

void
itu_qemu_img_create(const char *path,
                    const char *opts,
                    const char *backing,
                    const char *size)
{
    g_autofree char *err = NULL;
    int rc;

    if (backing)
        rc = itu_run(NULL, &err, "qemu-img", "create", "-q", "-f", "qcow2",
                     "-o", opts, "-b", backing, "-F", "qcow2", path, NULL);
    else
        rc = itu_run(NULL, &err, "qemu-img", "create", "-q", "-f", "qcow2",
                     "-o", opts, path, size, NULL);
    ck_assert_msg(rc == 0, "qemu-img create %s: %s", path, err);
}

static void
qemu_io_run(const char *path, const char *cmd, bool verify)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;

    ck_assert_msg(itu_run(&out, &err, "qemu-io", "-f", "qcow2", "-c", cmd, path,
                          NULL) == 0,
                  "qemu-io -c '%s' %s: %s", cmd, path, err);
    if (verify)
        ck_assert_msg(!strstr(out, "Pattern verification failed"), "%s: %s",
                      cmd, out);
}

void
itu_qemu_io(const char *path, const char *cmd)
{
    qemu_io_run(path, cmd, false);
}

void
itu_qemu_io_check(const char *path, const char *cmd)
{
    qemu_io_run(path, cmd, true);
}

void
itu_patch(const char *path, long off, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "r+b");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

/* ---- libqcow ------------------------------------------------------- */

typedef int (*LqInit)(void **file, void **error);
typedef int (*LqOpen)(void *file, const char *name, int flags, void **error);
typedef int (*LqSize)(void *file, uint64_t *size, void **error);
typedef ssize_t (*LqRead)(
    void *file, void *buf, size_t len, int64_t off, void **error);
typedef int (*LqClose)(void *file, void **error);
typedef int (*LqFree)(void **file, void **error);
typedef int (*LqErrSprint)(void *error, char *str, size_t size);
typedef void (*LqErrFree)(void **error);

/* LIBQCOW_ACCESS_FLAG_READ in libqcow/definitions.h */
#define LQ_ACCESS_READ 0x01

static struct {
    void *dl;
    LqInit init;
    LqOpen open;
    LqSize size;
    LqRead read;
    LqClose close;
    LqFree free;
    LqErrSprint err_sprint;
    LqErrFree err_free;
} lq;

struct ItuLibqcow {
    void *file;
    uint64_t media_size;
};

static bool
lq_load(void)
{
    if (lq.dl)
        return true;
    lq.dl = dlopen("libqcow.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lq.dl)
        return false;
    lq.init = (LqInit) dlsym(lq.dl, "libqcow_file_initialize");
    lq.open = (LqOpen) dlsym(lq.dl, "libqcow_file_open");
    lq.size = (LqSize) dlsym(lq.dl, "libqcow_file_get_media_size");
    lq.read = (LqRead) dlsym(lq.dl, "libqcow_file_read_buffer_at_offset");
    lq.close = (LqClose) dlsym(lq.dl, "libqcow_file_close");
    lq.free = (LqFree) dlsym(lq.dl, "libqcow_file_free");
    lq.err_sprint = (LqErrSprint) dlsym(lq.dl, "libqcow_error_sprint");
    lq.err_free = (LqErrFree) dlsym(lq.dl, "libqcow_error_free");
    return lq.init && lq.open && lq.size && lq.read && lq.close && lq.free &&
           lq.err_sprint && lq.err_free;
}

bool
itu_libqcow_available(void)
{
    return lq_load();
}

static void
lq_set_error(GError **error, void *lqerr, const char *what)
{
    char msg[1024] = "";

    if (lqerr) {
        lq.err_sprint(lqerr, msg, sizeof(msg));
        lq.err_free(&lqerr);
    }
    g_set_error(error, g_quark_from_static_string("itu-libqcow"), 0,
                "libqcow %s: %s", what, msg);
}

ItuLibqcow *
itu_libqcow_open(const char *path, GError **error)
{
    g_autofree ItuLibqcow *q = g_new0(ItuLibqcow, 1);
    void *lqerr = NULL;

    ck_assert_msg(lq_load(), "libqcow.so.1 not loadable: %s", dlerror());
    if (lq.init(&q->file, &lqerr) != 1) {
        lq_set_error(error, lqerr, "initialize");
        return NULL;
    }
    if (lq.open(q->file, path, LQ_ACCESS_READ, &lqerr) != 1) {
        lq_set_error(error, lqerr, "open");
        lq.free(&q->file, NULL);
        return NULL;
    }
    if (lq.size(q->file, &q->media_size, &lqerr) != 1) {
        lq_set_error(error, lqerr, "media size");
        lq.close(q->file, NULL);
        lq.free(&q->file, NULL);
        return NULL;
    }
    return g_steal_pointer(&q);
}

uint64_t
itu_libqcow_media_size(ItuLibqcow *q)
{
    return q->media_size;
}

int64_t
itu_libqcow_pread(
    ItuLibqcow *q, void *buf, size_t len, uint64_t off, GError **error)
{
    void *lqerr = NULL;
    ssize_t n = lq.read(q->file, buf, len, (int64_t) off, &lqerr);

    if (n < 0) {
        lq_set_error(error, lqerr, "read");
        return -1;
    }
    return n;
}

void
itu_libqcow_close(ItuLibqcow *q)
{
    if (!q)
        return;
    lq.close(q->file, NULL);
    lq.free(&q->file, NULL);
    g_free(q);
}

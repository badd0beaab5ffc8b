/*
 * check-dirty-bitmap.c: the dirty-bitmap object: byte semantics, checks
 * and their messages, the successor protocol, merges across
 * granularities, qcow2 serialization, and the SHA-256 compared with a
 * real qemu-storage-daemon (written through an NBD export by qemu-io).
 */
#include "testutil.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>

#include "bitmap/dirty-bitmap.h"
#include <vbackup/vbackup.h>

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static VbkDirtyBitmap *
new_bitmap(const char *name, uint64_t gran, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    VbkDirtyBitmap *bm = vbk_dirty_bitmap_new(name, gran, size, &err);

    ck_assert_msg(bm != NULL, "%s", err ? err->message : "?");
    return bm;
}

START_TEST(test_new_errors)
{
    static const uint64_t bad[] = {
        0, 256, 511, 513, 4095, 65537, UINT64_C(1) << 32};
    g_autofree char *longname = g_strnfill(1024, 'x');
    g_autoptr(VbkDirtyBitmap) ok = NULL;
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;

        ck_assert_ptr_null(vbk_dirty_bitmap_new("b", bad[i], MiB, &err));
        ck_assert_str_eq(err->message,
                         "Granularity must be power of 2 and at least 512");
    }
    {
        g_autoptr(GError) err = NULL;
        g_autofree char *want =
            g_strdup_printf("Bitmap name too long: %s", longname);

        ck_assert_ptr_null(vbk_dirty_bitmap_new(longname, 65536, MiB, &err));
        ck_assert_str_eq(err->message, want);
    }
    longname[1023] = '\0';
    ok = new_bitmap(longname, UINT64_C(1) << 31, MiB);
    ck_assert_uint_eq(vbk_dirty_bitmap_granularity(ok), UINT64_C(1) << 31);
    ck_assert(vbk_dirty_bitmap_enabled(ok) && vbk_dirty_bitmap_recording(ok));
}
END_TEST

START_TEST(test_default_granularity)
{
    static const struct {
        uint64_t cluster, gran;
    } table[] = {
        {0, 65536},     {512, 4096},     {1024, 4096},
        {4096, 4096},   {16384, 16384},  {32768, 32768},
        {65536, 65536}, {131072, 65536}, {2 * MiB, 65536},
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(table); i++)
        ck_assert_uint_eq(
            vbk_dirty_bitmap_default_granularity(table[i].cluster),
            table[i].gran);
}
END_TEST

START_TEST(test_bytes)
{
    g_autoptr(VbkDirtyBitmap) bm = new_bitmap("b", 64 * KiB, 64 * MiB);
    g_autoptr(VbkDirtyBitmap) odd = new_bitmap("o", 64 * KiB, 100000);
    uint64_t as, al;

    /* 4 KiB at 2 MiB + 8 KiB dirties granule 32 */
    vbk_dirty_bitmap_mark(bm, 2 * MiB + 8 * KiB, 4 * KiB);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(bm), 65536);
    ck_assert(vbk_dirty_bitmap_test(bm, 2 * MiB));
    ck_assert(vbk_dirty_bitmap_test(bm, 2 * MiB + 64 * KiB - 1));
    ck_assert(!vbk_dirty_bitmap_test(bm, 2 * MiB + 64 * KiB));
    /* a range straddling a granule boundary touches both */
    vbk_dirty_bitmap_mark(bm, 10 * MiB - 1, 2);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(bm), 3 * 65536);
    /* searches answer max(granule start, offset) */
    ck_assert_int_eq(vbk_dirty_bitmap_next_dirty(bm, 0, 64 * MiB), 2 * MiB);
    ck_assert_int_eq(vbk_dirty_bitmap_next_dirty(bm, 2 * MiB + 5, 10),
                     2 * MiB + 5);
    ck_assert_int_eq(vbk_dirty_bitmap_next_dirty(bm, 0, 2 * MiB), -1);
    ck_assert_int_eq(vbk_dirty_bitmap_next_clean(bm, 2 * MiB + 7, 64 * MiB),
                     2 * MiB + 64 * KiB);
    ck_assert(vbk_dirty_bitmap_next_dirty_area(bm, 3 * MiB, 64 * MiB, 64 * MiB,
                                               &as, &al));
    ck_assert_uint_eq(as, 10 * MiB - 64 * KiB);
    ck_assert_uint_eq(al, 128 * KiB);
    ck_assert(vbk_dirty_bitmap_next_dirty_area(bm, 10 * MiB - 100, 64 * MiB, 50,
                                               &as, &al));
    ck_assert_uint_eq(as, 10 * MiB - 100);
    ck_assert_uint_eq(al, 50);
    ck_assert(!vbk_dirty_bitmap_next_dirty_area(bm, 11 * MiB, 64 * MiB,
                                                64 * MiB, &as, &al));
    /* reset of whole granules */
    vbk_dirty_bitmap_reset(bm, 10 * MiB, 64 * KiB);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(bm), 2 * 65536);
    ck_assert(vbk_dirty_bitmap_range_is_clean(bm, 10 * MiB, 54 * MiB));
    ck_assert(!vbk_dirty_bitmap_range_is_clean(bm, 9 * MiB, MiB));

    /* a partial last granule counts in full; reset may end at the end */
    vbk_dirty_bitmap_mark(odd, 99999, 1);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(odd), 65536);
    ck_assert(vbk_dirty_bitmap_next_dirty_area(odd, 0, UINT64_MAX, UINT64_MAX,
                                               &as, &al));
    ck_assert_uint_eq(as, 65536);
    ck_assert_uint_eq(al, 100000 - 65536);
    vbk_dirty_bitmap_reset(odd, 65536, 100000 - 65536);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(odd), 0);
    /* grow: the new area is clean; shrink drops the tail */
    vbk_dirty_bitmap_mark(odd, 0, 100000);
    vbk_dirty_bitmap_truncate(odd, 300000);
    ck_assert_uint_eq(vbk_dirty_bitmap_size(odd), 300000);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(odd), 2 * 65536);
    ck_assert_int_eq(vbk_dirty_bitmap_next_clean(odd, 0, 300000), 131072);
    vbk_dirty_bitmap_truncate(odd, 65536);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(odd), 65536);
}
END_TEST

static void
assert_error(GError *err, const char *msg)
{
    ck_assert_ptr_nonnull(err);
    ck_assert(err->domain == VBK_BLOCK_ERROR);
    ck_assert_str_eq(err->message, msg);
}

START_TEST(test_check)
{
    g_autoptr(VbkDirtyBitmap) bm = new_bitmap("bm0", 65536, MiB);
    g_autoptr(VbkDirtyBitmap) anon = new_bitmap(NULL, 65536, MiB);
    GError *err = NULL;

    ck_assert(vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, &err));
    vbk_dirty_bitmap_set_readonly(bm, true);
    ck_assert(vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_ALLOW_RO, NULL));
    ck_assert(!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, &err));
    assert_error(err, "Bitmap 'bm0' is readonly and cannot be modified");
    g_clear_error(&err);

    vbk_dirty_bitmap_set_persistent(bm, true);
    vbk_dirty_bitmap_set_inconsistent(bm);
    ck_assert(!vbk_dirty_bitmap_enabled(bm) && !vbk_dirty_bitmap_recording(bm));
    ck_assert(!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_ALLOW_RO, &err));
    assert_error(err, "Bitmap 'bm0' is inconsistent and cannot be used");
    g_clear_error(&err);
    ck_assert_str_eq(vbk_dirty_bitmap_inconsistent_hint(),
                     "Try block-dirty-bitmap-remove to delete this bitmap "
                     "from disk");

    /* busy is checked first */
    vbk_dirty_bitmap_set_busy(bm, true);
    ck_assert(!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, &err));
    assert_error(err, "Bitmap 'bm0' is currently in use by another operation "
                      "and cannot be used");
    ck_assert_int_eq(err->code, VBK_BLOCK_ERROR_IN_USE);
    g_clear_error(&err);
    ck_assert(vbk_dirty_bitmap_check(bm, 0, NULL));

    vbk_dirty_bitmap_set_busy(anon, true);
    ck_assert(!vbk_dirty_bitmap_check(anon, VBK_DIRTY_BITMAP_BUSY, &err));
    assert_error(err, "Bitmap '(null)' is currently in use by another "
                      "operation and cannot be used");
    g_clear_error(&err);
}
END_TEST

START_TEST(test_successor_abdicate)
{
    VbkDirtyBitmap *bm = new_bitmap("b", 65536, 64 * MiB);
    VbkDirtyBitmap *succ;
    g_autoptr(VbkDirtyBitmap) heir = NULL;
    GError *err = NULL;

    vbk_dirty_bitmap_set_persistent(bm, true);
    vbk_dirty_bitmap_mark(bm, 0, 3 * 65536);
    ck_assert_ptr_null(vbk_dirty_bitmap_abdicate(bm, &err));
    assert_error(err, "Cannot relinquish control if there's no successor "
                      "present");
    g_clear_error(&err);

    succ = vbk_dirty_bitmap_create_successor(bm, &err);
    ck_assert_ptr_nonnull(succ);
    ck_assert_ptr_eq(vbk_dirty_bitmap_successor(bm), succ);
    ck_assert_ptr_null(vbk_dirty_bitmap_name(succ));
    ck_assert_uint_eq(vbk_dirty_bitmap_granularity(succ), 65536);
    ck_assert_uint_eq(vbk_dirty_bitmap_size(succ), 64 * MiB);
    ck_assert(vbk_dirty_bitmap_busy(bm) && !vbk_dirty_bitmap_enabled(bm));
    ck_assert(vbk_dirty_bitmap_recording(bm));
    ck_assert(vbk_dirty_bitmap_enabled(succ) && !vbk_dirty_bitmap_busy(succ));
    ck_assert(!vbk_dirty_bitmap_persistent(succ));
    ck_assert_uint_eq(vbk_dirty_bitmap_count(succ), 0);

    /* a second successor: busy first, "already has one" if not busy */
    ck_assert_ptr_null(vbk_dirty_bitmap_create_successor(bm, &err));
    assert_error(err, "Bitmap 'b' is currently in use by another operation "
                      "and cannot be used");
    g_clear_error(&err);
    vbk_dirty_bitmap_set_busy(bm, false);
    ck_assert_ptr_null(vbk_dirty_bitmap_create_successor(bm, &err));
    assert_error(err, "Cannot create a successor for a bitmap that already "
                      "has one");
    g_clear_error(&err);
    vbk_dirty_bitmap_set_busy(bm, true);

    vbk_dirty_bitmap_mark(succ, 10 * MiB, 1);
    heir = vbk_dirty_bitmap_abdicate(bm, &err);
    ck_assert_ptr_eq(heir, succ);
    ck_assert_str_eq(vbk_dirty_bitmap_name(heir), "b");
    ck_assert(vbk_dirty_bitmap_persistent(heir));
    ck_assert(vbk_dirty_bitmap_enabled(heir) && !vbk_dirty_bitmap_busy(heir));
    ck_assert_uint_eq(vbk_dirty_bitmap_count(heir), 65536);
    /* the spent parent */
    ck_assert_ptr_null(vbk_dirty_bitmap_name(bm));
    ck_assert(!vbk_dirty_bitmap_persistent(bm) && !vbk_dirty_bitmap_busy(bm));
    ck_assert_ptr_null(vbk_dirty_bitmap_successor(bm));
    vbk_dirty_bitmap_unref(bm);
}
END_TEST

START_TEST(test_successor_reclaim)
{
    g_autoptr(VbkDirtyBitmap) bm = new_bitmap("b", 65536, 64 * MiB);
    g_autoptr(VbkDirtyBitmap) spent = NULL;
    g_autoptr(VbkDirtyBitmap) spent2 = NULL;
    VbkDirtyBitmap *succ;
    GError *err = NULL;

    ck_assert_ptr_null(vbk_dirty_bitmap_reclaim(bm, &err));
    assert_error(err, "Cannot reclaim a successor when none is present");
    g_clear_error(&err);

    vbk_dirty_bitmap_mark(bm, 0, 2 * 65536);
    succ = vbk_dirty_bitmap_create_successor(bm, NULL);
    vbk_dirty_bitmap_mark(succ, 65536, 2 * 65536);
    vbk_dirty_bitmap_set_enabled(succ, false); /* disabled meanwhile */
    spent = vbk_dirty_bitmap_reclaim(bm, &err);
    ck_assert_ptr_eq(spent, succ);
    ck_assert_ptr_null(vbk_dirty_bitmap_successor(bm));
    ck_assert_uint_eq(vbk_dirty_bitmap_count(bm), 3 * 65536);
    ck_assert(!vbk_dirty_bitmap_busy(bm) && !vbk_dirty_bitmap_enabled(bm));
    ck_assert_str_eq(vbk_dirty_bitmap_name(bm), "b");

    /* a disabled parent gets a disabled successor: not recording */
    succ = vbk_dirty_bitmap_create_successor(bm, NULL);
    ck_assert(!vbk_dirty_bitmap_enabled(succ));
    ck_assert(!vbk_dirty_bitmap_recording(bm));
    vbk_dirty_bitmap_set_enabled(succ, true);
    ck_assert(vbk_dirty_bitmap_recording(bm));
    spent2 = vbk_dirty_bitmap_reclaim(bm, NULL);
    ck_assert(vbk_dirty_bitmap_enabled(bm) && !vbk_dirty_bitmap_busy(bm));
}
END_TEST

START_TEST(test_merge)
{
    g_autoptr(VbkDirtyBitmap) dst = new_bitmap("d", 64 * KiB, 100 * MiB + 5);
    g_autoptr(VbkDirtyBitmap) fine = new_bitmap("f", 4 * KiB, 100 * MiB + 5);
    g_autoptr(VbkDirtyBitmap) small = new_bitmap("s", 64 * KiB, 64 * MiB);
    VbkHBitmap *backup = NULL;
    GError *err = NULL;

    ck_assert(!vbk_dirty_bitmap_merge(dst, small, NULL, &err));
    assert_error(err, "Bitmaps are of different sizes (destination size is "
                      "104857605, source size is 67108864) and can't be "
                      "merged");
    g_clear_error(&err);

    /* finer source: a coarse granule is dirty if any covered one is */
    vbk_dirty_bitmap_mark(fine, 4 * KiB, 1);
    vbk_dirty_bitmap_mark(fine, 60 * KiB, 8 * KiB);
    vbk_dirty_bitmap_mark(fine, 100 * MiB, 5);
    ck_assert(vbk_dirty_bitmap_merge(dst, fine, &backup, &err));
    ck_assert_uint_eq(vbk_dirty_bitmap_count(dst), 3 * 64 * KiB);
    ck_assert(vbk_dirty_bitmap_test(dst, 100 * MiB + 4));
    ck_assert_uint_eq(vbk_hbitmap_count(backup), 0);
    vbk_dirty_bitmap_restore(dst, backup);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(dst), 0);

    /* coarser source: a granule maps onto 16 finer ones */
    vbk_dirty_bitmap_clear(fine, NULL);
    vbk_dirty_bitmap_mark(dst, 64 * KiB, 1);
    vbk_dirty_bitmap_mark(dst, 100 * MiB, 1);
    ck_assert(vbk_dirty_bitmap_merge(fine, dst, NULL, NULL));
    ck_assert_uint_eq(vbk_dirty_bitmap_count(fine), 16 * 4 * KiB + 4 * KiB);
    ck_assert_int_eq(vbk_dirty_bitmap_next_dirty(fine, 0, UINT64_MAX),
                     64 * KiB);
    ck_assert_int_eq(vbk_dirty_bitmap_next_clean(fine, 64 * KiB, UINT64_MAX),
                     128 * KiB);

    /* checks: the destination must be writable, the source may be RO */
    vbk_dirty_bitmap_set_readonly(dst, true);
    ck_assert(vbk_dirty_bitmap_merge(fine, dst, NULL, NULL));
    ck_assert(!vbk_dirty_bitmap_merge(dst, fine, NULL, &err));
    assert_error(err, "Bitmap 'd' is readonly and cannot be modified");
    g_clear_error(&err);
    vbk_dirty_bitmap_set_readonly(dst, false);
    vbk_dirty_bitmap_set_busy(fine, true);
    ck_assert(!vbk_dirty_bitmap_merge(dst, fine, NULL, &err));
    assert_error(err, "Bitmap 'f' is currently in use by another operation "
                      "and cannot be used");
    g_clear_error(&err);

    /* clear with a backup, then restore */
    vbk_dirty_bitmap_clear(dst, &backup);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(dst), 0);
    vbk_dirty_bitmap_restore(dst, backup);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(dst), 2 * 64 * KiB);
}
END_TEST

/* ref-qemu-block.md §1: a 64 MiB image after writes of 0..1M and
 * 32M..+64K stores data bytes [0]=0xff [1]=0xff [64]=0x01 at 64 KiB
 * granularity, [0]=0xff [32]=0x01 at 128 KiB. */
START_TEST(test_qcow2_serialization)
{
    g_autoptr(VbkDirtyBitmap) a = new_bitmap("a", 64 * KiB, 64 * MiB);
    g_autoptr(VbkDirtyBitmap) b = new_bitmap("b", 128 * KiB, 64 * MiB);
    g_autoptr(VbkDirtyBitmap) c = new_bitmap("c", 64 * KiB, 64 * MiB);
    guint8 buf[128], want[128] = {0};

    vbk_dirty_bitmap_mark(a, 0, MiB);
    vbk_dirty_bitmap_mark(a, 32 * MiB, 64 * KiB);
    vbk_dirty_bitmap_mark(b, 0, MiB);
    vbk_dirty_bitmap_mark(b, 32 * MiB, 64 * KiB);

    ck_assert_uint_eq(vbk_dirty_bitmap_serialization_size(a, 0, 64 * MiB), 128);
    vbk_dirty_bitmap_serialize_part(a, buf, 0, 64 * MiB);
    want[0] = want[1] = 0xff;
    want[64] = 0x01;
    ck_assert_mem_eq(buf, want, 128);

    ck_assert_uint_eq(vbk_dirty_bitmap_serialization_size(b, 0, 64 * MiB), 64);
    vbk_dirty_bitmap_serialize_part(b, buf, 0, 64 * MiB);
    memset(want, 0, sizeof(want));
    want[0] = 0xff;
    want[32] = 0x01;
    ck_assert_mem_eq(buf, want, 64);

    /* chunks of 16 serialized bytes (as a qcow2 cluster would be) */
    vbk_dirty_bitmap_serialize_part(a, buf, 0, 64 * MiB);
    for (uint64_t off = 0; off < 64 * MiB; off += 8 * MiB) {
        bool clean = vbk_hbitmap_buffer_is_zero(buf + off / (512 * KiB), 16);

        ck_assert(clean == vbk_dirty_bitmap_range_is_clean(a, off, 8 * MiB));
        if (clean)
            vbk_dirty_bitmap_deserialize_zeroes(c, off, 8 * MiB);
        else
            vbk_dirty_bitmap_deserialize_part(c, buf + off / (512 * KiB), off,
                                              8 * MiB);
    }
    ck_assert_uint_eq(vbk_dirty_bitmap_count(c), vbk_dirty_bitmap_count(a));
    {
        g_autofree char *ha = vbk_dirty_bitmap_sha256(a);
        g_autofree char *hc = vbk_dirty_bitmap_sha256(c);

        ck_assert_str_eq(ha, hc);
    }
    vbk_dirty_bitmap_deserialize_ones(c, 8 * MiB, 8 * MiB);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(c), 17 * 64 * KiB + 8 * MiB);
}
END_TEST

/* ---- the real qemu-storage-daemon ---- */

typedef struct {
    GSubprocess *proc;
    GSocketConnection *conn;
    GDataInputStream *in;
    GOutputStream *out;
} Qsd;

static JsonNode *
qmp_read(Qsd *q)
{
    for (;;) {
        g_autoptr(GError) err = NULL;
        g_autofree char *line =
            g_data_input_stream_read_line(q->in, NULL, NULL, &err);
        g_autoptr(JsonParser) p = json_parser_new();
        JsonObject *o;

        ck_assert_msg(line != NULL, "QMP: %s", err ? err->message : "EOF");
        ck_assert(json_parser_load_from_data(p, line, -1, NULL));
        o = json_node_get_object(json_parser_get_root(p));
        if (!json_object_has_member(o, "event"))
            return json_node_copy(json_parser_get_root(p));
    }
}

/* Run a command; returns its "return" member (transfer full). */
static JsonNode *
qmp(Qsd *q, const char *json)
{
    g_autofree char *line = g_strconcat(json, "\n", NULL);
    g_autoptr(JsonNode) reply = NULL;
    JsonObject *o;

    ck_assert(g_output_stream_write_all(q->out, line, strlen(line), NULL, NULL,
                                        NULL));
    reply = qmp_read(q);
    o = json_node_get_object(reply);
    ck_assert_msg(json_object_has_member(o, "return"), "QMP %s failed: %s",
                  json, json_to_string(reply, FALSE));
    return json_node_copy(json_object_get_member(o, "return"));
}

static void
die_with_parent(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
}

/* qemu-storage-daemon with two null-co nodes, n0 (64 MiB) and n1 (an odd
 * size), each exported writable over NBD as e0/e1, QMP on qmp.sock. */
static GSubprocess *
qsd_spawn(const char *qmp_path, const char *nbd_path)
{
    g_autofree char *mon =
        g_strdup_printf("socket,id=m,path=%s,server=on,wait=off", qmp_path);
    g_autofree char *nbd =
        g_strdup_printf("addr.type=unix,addr.path=%s", nbd_path);
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE);
    g_autoptr(GError) err = NULL;
    GSubprocess *proc;

    /* if this test dies, the daemon goes with it */
    g_subprocess_launcher_set_child_setup(launcher, die_with_parent, NULL,
                                          NULL);
    proc = g_subprocess_launcher_spawn(
        launcher, &err, "qemu-storage-daemon", "--blockdev",
        "driver=null-co,node-name=n0,size=67108864", "--blockdev",
        "driver=null-co,node-name=n1,size=10000005", "--chardev", mon,
        "--monitor", "chardev=m", "--nbd-server", nbd, "--export",
        "type=nbd,id=e0,node-name=n0,name=e0,writable=on", "--export",
        "type=nbd,id=e1,node-name=n1,name=e1,writable=on", NULL);
    ck_assert_msg(proc != NULL, "qemu-storage-daemon: %s",
                  err ? err->message : "?");
    return proc;
}

static void
qsd_start(Qsd *q, const char *dir)
{
    g_autofree char *qmp_path = g_build_filename(dir, "qmp.sock", NULL);
    g_autofree char *nbd_path = g_build_filename(dir, "nbd.sock", NULL);
    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(qmp_path);
    g_autoptr(GError) err = NULL;
    int i;

    q->proc = qsd_spawn(qmp_path, nbd_path);
    for (i = 0; i < 200 && !q->conn; i++) {
        g_clear_error(&err);
        q->conn = g_socket_client_connect(client, G_SOCKET_CONNECTABLE(addr),
                                          NULL, &err);
        if (!q->conn)
            g_usleep(25000);
    }
    ck_assert_msg(q->conn != NULL, "cannot reach qsd's QMP: %s",
                  err ? err->message : "?");
    q->in = g_data_input_stream_new(
        g_io_stream_get_input_stream(G_IO_STREAM(q->conn)));
    q->out = g_io_stream_get_output_stream(G_IO_STREAM(q->conn));
    json_node_unref(qmp_read(q)); /* greeting */
    json_node_unref(qmp(q, "{\"execute\": \"qmp_capabilities\"}"));
}

static void
qsd_stop(Qsd *q)
{
    json_node_unref(qmp(q, "{\"execute\": \"quit\"}"));
    ck_assert(g_subprocess_wait(q->proc, NULL, NULL));
    g_object_unref(q->in);
    g_object_unref(q->conn);
    g_object_unref(q->proc);
}

static char *
qsd_sha256(Qsd *q, const char *node)
{
    g_autofree char *cmd = g_strdup_printf(
        "{\"execute\": \"x-debug-block-dirty-bitmap-sha256\", \"arguments\": "
        "{\"node\": \"%s\", \"name\": \"b\"}}",
        node);
    g_autoptr(JsonNode) ret = qmp(q, cmd);

    return g_strdup(
        json_object_get_string_member(json_node_get_object(ret), "sha256"));
}

/* Write through the NBD export with qemu-io; mark the same in @bm. */
static void
qemu_io_write(const char *dir,
              const char *export,
              VbkDirtyBitmap *bm,
              const uint64_t (*writes)[2],
              size_t n)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *out = NULL, *err = NULL;
    size_t i;

    g_ptr_array_add(argv, g_strdup("qemu-io"));
    g_ptr_array_add(argv, g_strdup("-f"));
    g_ptr_array_add(argv, g_strdup("raw"));
    for (i = 0; i < n; i++) {
        g_ptr_array_add(argv, g_strdup("-c"));
        g_ptr_array_add(argv, g_strdup_printf("write %" G_GUINT64_FORMAT
                                              " %" G_GUINT64_FORMAT,
                                              writes[i][0], writes[i][1]));
        vbk_dirty_bitmap_mark(bm, writes[i][0], writes[i][1]);
    }
    g_ptr_array_add(argv, g_strdup_printf("nbd+unix:///%s?socket=%s/nbd.sock",
                                          export, dir));
    g_ptr_array_add(argv, NULL);
    ck_assert_msg(
        vbk_test_spawn((const char *const *) argv->pdata, &out, &err) == 0,
        "qemu-io: %s", err);
}

static uint64_t
qsd_count(Qsd *q, const char *node)
{
    g_autoptr(JsonNode) ret = qmp(q, "{\"execute\": "
                                     "\"query-named-block-nodes\"}");
    JsonArray *nodes = json_node_get_array(ret);
    guint i;

    for (i = 0; i < json_array_get_length(nodes); i++) {
        JsonObject *o = json_array_get_object_element(nodes, i);
        JsonArray *bms;

        if (strcmp(json_object_get_string_member(o, "node-name"), node))
            continue;
        bms = json_object_get_array_member(o, "dirty-bitmaps");
        return (uint64_t) json_object_get_int_member(
            json_array_get_object_element(bms, 0), "count");
    }
    ck_abort_msg("node %s not found", node);
    return 0;
}

static void
compare_with_qsd(Qsd *q, const char *node, VbkDirtyBitmap *bm)
{
    g_autofree char *theirs = qsd_sha256(q, node);
    g_autofree char *ours = vbk_dirty_bitmap_sha256(bm);

    ck_assert_str_eq(ours, theirs);
    ck_assert_uint_eq(vbk_dirty_bitmap_count(bm), qsd_count(q, node));
}

START_TEST(test_sha256_qsd)
{
    static const uint64_t w0[][2] = {
        {0, 65536},        {2 * MiB, 65536},  {2112 * KiB, 128 * KiB},
        {60 * MiB, 65536}, {64 * MiB - 1, 1},
    };
    static const uint64_t w1[][2] = {
        {0, 4096},        {5000001, 3},          {9999999, 6},
        {1000000, 70000}, {512 * 64 * 3 - 1, 2},
    };
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autoptr(VbkDirtyBitmap) b0 = new_bitmap("b", 64 * KiB, 64 * MiB);
    g_autoptr(VbkDirtyBitmap) b1 = new_bitmap("b", 512, 10000005);
    Qsd q = {0};

    qsd_start(&q, dir);
    json_node_unref(qmp(&q, "{\"execute\": \"block-dirty-bitmap-add\", "
                            "\"arguments\": {\"node\": \"n0\", \"name\": "
                            "\"b\", \"granularity\": 65536}}"));
    json_node_unref(qmp(&q, "{\"execute\": \"block-dirty-bitmap-add\", "
                            "\"arguments\": {\"node\": \"n1\", \"name\": "
                            "\"b\", \"granularity\": 512}}"));
    compare_with_qsd(&q, "n0", b0);
    compare_with_qsd(&q, "n1", b1);
    qemu_io_write(dir, "e0", b0, w0, G_N_ELEMENTS(w0));
    qemu_io_write(dir, "e1", b1, w1, G_N_ELEMENTS(w1));
    compare_with_qsd(&q, "n0", b0);
    compare_with_qsd(&q, "n1", b1);
    qsd_stop(&q);
    vbk_test_tmpdir_remove(dir);
}
END_TEST

static Suite *
dirty_bitmap_suite(void)
{
    Suite *s = suite_create("dirty-bitmap");
    TCase *tc = tcase_create("object");
    TCase *tq = tcase_create("qemu");

    tcase_add_test(tc, test_new_errors);
    tcase_add_test(tc, test_default_granularity);
    tcase_add_test(tc, test_bytes);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_successor_abdicate);
    tcase_add_test(tc, test_successor_reclaim);
    tcase_add_test(tc, test_merge);
    tcase_add_test(tc, test_qcow2_serialization);
    tcase_set_timeout(tq, 60);
    tcase_add_test(tq, test_sha256_qsd);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tq);
    return s;
}

int
main(void)
{
    return vbk_test_run(dirty_bitmap_suite());
}

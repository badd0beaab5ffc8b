/*
 * interop-util.h: helpers shared by the qcow2 interop tests.
 *
 * The interop tests drive vbackup's block layer in-process and judge the
 * result with the real peers: qemu-img (check, compare, convert, map),
 * qemu-io and libqcow.  These helpers open and close nodes through the
 * public blockdev-add style API, run the peers, and compare bytes.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

#define ITU_ROUND_DOWN(x, a) ((x) / (a) * (a))
#define ITU_ROUND_UP(x, a)   (((x) + (a) -1) / (a) * (a))

/* Open @path as qcow2 over a file node, as blockdev-add would:
 *   {driver: qcow2, node-name: @name, read-only, discard: unmap,
 *    cache: {direct}, file: {driver: file, filename: @path, ...}}
 * (discard=unmap: under the default 'ignore' discards do nothing.)
 * The backing chain is opened from the image header. */
VbkBlockNode *itu_open_qcow2(const char *path,
                             const char *name,
                             bool read_only,
                             bool direct,
                             GError **error);

/* Open a node from blockdev-add options written as GVariant text
 * ("{'driver': <'raw'>, ...}"); fails the test when it does not open. */
VbkBlockNode *itu_open_parsed(const char *text);

/* Open @path as a plain file node (for vbk_qcow2_create). */
VbkBlockNode *itu_open_file(const char *path, const char *name, GError **error);

/* Drop our reference and the registry's (blockdev-del). */
void itu_close(VbkBlockNode *bs);

/* blockdev-create: a file, then qcow2 on it; fails the test on error. */
void itu_create_qcow2(const char *path, const VbkQcow2CreateOptions *opts);

/* Run a program; returns its exit status (-1 if it could not run).
 * Output is captured into *out / *err when non-NULL. */
int
itu_run(char **out, char **err, const char *prog, ...) G_GNUC_NULL_TERMINATED;

/* Same, with the argv as a vector. */
int itu_runv(const char *const *argv, char **out, char **err);

/* Run a peer that must exit 0 and print JSON (qemu-img map/check/info
 * --output=json); returns the parsed document (free: json_node_unref). */
JsonNode *itu_run_json(const char *const *argv);

/* `qemu-img check -f qcow2 PATH`: exit 0 and "No errors were found". */
void itu_assert_qemu_img_check(const char *path);

/* `qemu-img compare -f qcow2 -F raw IMG RAW` exits 0. */
void itu_assert_qemu_img_compare(const char *img, const char *raw);

/* Hex SHA-256 of a file's bytes. */
char *itu_sha256_file(const char *path);

/* Every byte of @bs equals @raw_path's (sizes too); reads in chunks. */
void itu_assert_node_equals_file(VbkBlockNode *bs, const char *raw_path);

/* Fill @buf with seeded pseudo-random bytes. */
void itu_fill_random(GRand *rand, uint8_t *buf, size_t len);

/* ---- for tests that judge one image at a time ---------------------- */

/* A Check fixture: a fresh temporary directory per test (itu_path()
 * names files in it); the teardown closes every node and removes it. */
void itu_setup(void);
void itu_teardown(void);
/* @name inside the fixture's directory; g_free() the result. */
char *itu_path(const char *name);

/* Open @path as qcow2, unnamed, discard=unmap; fails the test on error. */
VbkBlockNode *itu_open_image(const char *path, bool read_only);

/* Reading @len bytes at @off returns @expect / bytes all equal to @p. */
void itu_assert_read(VbkBlockNode *bs,
                     const uint8_t *expect,
                     uint64_t off,
                     uint64_t len);
void itu_assert_read_pattern(VbkBlockNode *bs,
                             uint64_t off,
                             uint64_t len,
                             uint8_t p);

/* The whole image as `qemu-img convert` sees it equals @expect. */
void
itu_assert_qemu_content(const char *path, const uint8_t *expect, uint64_t size);

/* `qemu-img create -f qcow2 -o OPTS` with a qcow2 backing file or a size. */
void itu_qemu_img_create(const char *path,
                         const char *opts,
                         const char *backing,
                         const char *size);
/* `qemu-io -f qcow2 -c CMD PATH` exits 0 (and, for the _check form, no
 * pattern verification failed). */
void itu_qemu_io(const char *path, const char *cmd);
void itu_qemu_io_check(const char *path, const char *cmd);

/* Overwrite @len bytes of @path at @off. */
void itu_patch(const char *path, long off, const void *bytes, size_t len);

/* ---- libqcow, loaded at run time (libqcow1 ships no pkg-config) ---- */

typedef struct ItuLibqcow ItuLibqcow;

/* Open @path with libqcow; NULL with *error set when libqcow refuses. */
ItuLibqcow *itu_libqcow_open(const char *path, GError **error);
/* Media size as libqcow sees it. */
uint64_t itu_libqcow_media_size(ItuLibqcow *q);
/* Read; returns bytes read or -1 with *error set. */
int64_t itu_libqcow_pread(
    ItuLibqcow *q, void *buf, size_t len, uint64_t off, GError **error);
void itu_libqcow_close(ItuLibqcow *q);
/* Is libqcow.so.1 loadable on this machine? */
bool itu_libqcow_available(void);

/*
 * qcow2-header.c: the qcow2 header and its extensions, on disk <-> memory.
 *
 * Cluster 0 of an image holds, in this order:
 *
 *   0    the header: 72 bytes (v2) or header_length bytes (v3, >= 104)
 *   ...  header extensions {u32 type, u32 length, data, pad to 8}, ending
 *        with type 0: backing format, feature name table, bitmaps, ...
 *   ...  the backing file name (backing_file_offset/size, not NUL-ended)
 *
 * vbk_qcow2_header_decode() is the single place that turns those bytes
 * into a VbkQcow2Header; it checks every field (ranges, alignment, the
 * position of each table inside the file, overlaps between the header,
 * the L1 table, the refcount table and the snapshot table, extension
 * lengths) before anything else uses them.  Messages follow QEMU's where
 * QEMU has one.  vbk_qcow2_header_encode() writes a fresh header as
 * vbackup creates it: header_length 112, backing format extension, the
 * 8-entry feature name table (omitted for clusters of 4 KiB or less, as
 * QEMU does), the end marker, then the backing file name.
 */
#include "qcow2.h"
#include "qcow2-bitmap.h"

#include <glib/gi18n-lib.h>
#include <string.h>

static const VbkQcow2FeatureName qcow2_builtin_features[] = {
    {0, 0, "dirty bit"},
    {0, 1, "corrupt bit"},
    {0, 2, "external data file"},
    {0, 3, "compression type"},
    {0, 4, "extended L2 entries"},
    {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},
    {2, 1, "raw external data"},
};

void
vbk_qcow2_header_clear(VbkQcow2Header *h)
{
    g_clear_pointer(&h->backing_file, g_free);
    g_clear_pointer(&h->backing_fmt, g_free);
    g_clear_pointer(&h->features, g_free);
    h->n_features = 0;
}

/*
 * Names of the bits of @mask of kind @type, joined by ", ", as QEMU's
 * report_unsupported_feature(): bits named by the image's table use that
 * name; the rest are summed into "Unknown incompatible feature: %hex".
 */
char *
vbk_qcow2_feature_list(const VbkQcow2Header *h, uint8_t type, uint64_t mask)
{
    g_autoptr(GString) out = g_string_new(NULL);
    const VbkQcow2FeatureName *table = h->features;
    size_t n = h->n_features;

    if (!table) {
        table = qcow2_builtin_features;
        n = G_N_ELEMENTS(qcow2_builtin_features);
    }
    for (size_t i = 0; i < n; i++) {
        if (table[i].type != type || table[i].bit >= 64 ||
            !(mask & (1ull << table[i].bit)))
            continue;
        if (out->len)
            g_string_append(out, ", ");
        g_string_append(out, table[i].name);
        mask &= ~(1ull << table[i].bit);
    }
    if (mask) {
        if (out->len)
            g_string_append(out, ", ");
        g_string_append_printf(
            out, "Unknown incompatible feature: %" G_GINT64_MODIFIER "x", mask);
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}

static bool
qcow2_decode_feature_table(const uint8_t *data, uint32_t len, VbkQcow2Header *h)
{
    size_t n = len / 48;

    h->features = g_new0(VbkQcow2FeatureName, n ? n : 1);
    h->n_features = n;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e = data + i * 48;
        h->features[i].type = e[0];
        h->features[i].bit = e[1];
        memcpy(h->features[i].name, e + 2, QCOW2_FEATURE_NAME_LEN);
        h->features[i].name[QCOW2_FEATURE_NAME_LEN] = '\0';
    }
    return true;
}

/* One extension: @type with @len bytes at @data.  Unknown ones are
 * ignored, as the specification requires. */
static bool
qcow2_decode_extension(uint32_t type,
                       const uint8_t *data,
                       uint32_t len,
                       VbkQcow2Header *h,
                       GError **error)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FMT:
        if (len >= 16) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("ERROR: ext_backing_format: len=%u too large (>=16)"),
                        len);
            return false;
        }
        h->backing_fmt = g_strndup((const char *) data, len);
        return true;
    case QCOW2_EXT_FEATURES:
        return qcow2_decode_feature_table(data, len, h);
    case QCOW2_EXT_BITMAPS:
        return vbk_qcow2_bitmaps_ext_decode(data, len, h, error);
    default:
        return true;
    }
}

/* Walk the extensions in [@start, @end) of cluster 0. */
static bool
qcow2_decode_extensions(const uint8_t *buf,
                        uint64_t start,
                        uint64_t end,
                        VbkQcow2Header *h,
                        GError **error)
{
    uint32_t seen[8];
    size_t nseen = 0;
    uint64_t off = start;

    while (off + 8 <= end) {
        uint32_t type = qcow2_be32(buf + off);
        uint32_t len = qcow2_be32(buf + off + 4);

        if (type == QCOW2_EXT_END)
            return true;
        if (len > end - off - 8) {
            g_set_error(
                error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("qcow2_read_extension: ERROR: Invalid extension length"));
            return false;
        }
        for (size_t i = 0; i < nseen; i++) {
            if (seen[i] == type) {
                g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("qcow2: header extension 0x%x appears twice"),
                            type);
                return false;
            }
        }
        if (nseen < G_N_ELEMENTS(seen))
            seen[nseen++] = type;
        if (!qcow2_decode_extension(type, buf + off + 8, len, h, error))
            return false;
        off += 8 + (((uint64_t) len + 7) & ~7ull);
    }
    return true;
}

static void
qcow2_decode_fields(const uint8_t *buf, VbkQcow2Header *h)
{
    h->version = qcow2_be32(buf + 4);
    h->backing_file_offset = qcow2_be64(buf + 8);
    h->backing_file_size = qcow2_be32(buf + 16);
    h->cluster_bits = qcow2_be32(buf + 20);
    h->size = qcow2_be64(buf + 24);
    h->crypt_method = qcow2_be32(buf + 32);
    h->l1_size = qcow2_be32(buf + 36);
    h->l1_table_offset = qcow2_be64(buf + 40);
    h->refcount_table_offset = qcow2_be64(buf + 48);
    h->refcount_table_clusters = qcow2_be32(buf + 56);
    h->nb_snapshots = qcow2_be32(buf + 60);
    h->snapshots_offset = qcow2_be64(buf + 64);
    if (h->version >= 3) {
        h->incompatible = qcow2_be64(buf + 72);
        h->compatible = qcow2_be64(buf + 80);
        h->autoclear = qcow2_be64(buf + 88);
        h->refcount_order = qcow2_be32(buf + 96);
        h->header_length = qcow2_be32(buf + 100);
    } else {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
    }
}

typedef struct {
    uint64_t start;
    uint64_t len;
    const char *what;
} QcowRegion;

/* A table of @len bytes at @off: aligned, inside the file. */
static bool
qcow2_check_table(uint64_t off,
                  uint64_t len,
                  uint64_t cs,
                  uint64_t file_size,
                  const char *what,
                  GError **error)
{
    if (len == 0)
        return true;
    if (off == 0 || (off & (cs - 1)) || off > UINT64_MAX - len ||
        off + len > file_size) {
        /* TRANSLATORS: %s names a qcow2 table, e.g. "L1 table" */
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2: %s offset invalid or outside the image file"),
                    what);
        return false;
    }
    return true;
}

/* The header, L1, refcount and snapshot tables must not overlap. */
static bool
qcow2_check_overlaps(const QcowRegion *r, size_t n, GError **error)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (!r[i].len || !r[j].len)
                continue;
            if (r[i].start < r[j].start + r[j].len &&
                r[j].start < r[i].start + r[i].len) {
                g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("qcow2: %1$s overlaps %2$s"), _(r[j].what),
                            _(r[i].what));
                return false;
            }
        }
    }
    return true;
}

static bool
qcow2_check_sizes(VbkQcow2Header *h,
                  uint64_t cs,
                  uint64_t file_size,
                  GError **error)
{
    uint64_t per_l1 = cs / 8 * cs;
    uint64_t need_l1 = h->size / per_l1 + (h->size % per_l1 != 0);

    if (h->l1_size > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Active L1 table too large"));
        return false;
    }
    if (need_l1 > INT32_MAX || h->size > (uint64_t) INT64_MAX) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Image is too big"));
        return false;
    }
    if (h->l1_size < need_l1) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("L1 table is too small"));
        return false;
    }
    if ((uint64_t) h->refcount_table_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Reference count table too large"));
        return false;
    }
    if (h->refcount_table_clusters == 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Reference count table offset invalid"));
        return false;
    }
    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Snapshot table too large"));
        return false;
    }
    if ((h->refcount_table_offset & (cs - 1)) ||
        h->refcount_table_offset == 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Reference count table offset invalid"));
        return false;
    }
    if (h->l1_size && (h->l1_table_offset & (cs - 1))) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Active L1 table offset invalid"));
        return false;
    }
    return true;
}

static bool
qcow2_check_tables(VbkQcow2Header *h,
                   uint64_t cs,
                   uint64_t file_size,
                   GError **error)
{
    /* a snapshot entry is at least 40 bytes; the table is checked
     * precisely when it is read */
    uint64_t snap_len = (uint64_t) h->nb_snapshots * 40;
    QcowRegion r[] = {
        {0, cs, N_("the header")},
        {h->l1_table_offset, (uint64_t) h->l1_size * 8, N_("L1 table")},
        {h->refcount_table_offset, (uint64_t) h->refcount_table_clusters * cs,
         N_("refcount table")},
        {h->snapshots_offset, snap_len, N_("snapshot table")},
    };

    if (!qcow2_check_sizes(h, cs, file_size, error))
        return false;
    for (size_t i = 1; i < G_N_ELEMENTS(r); i++) {
        if (!qcow2_check_table(r[i].start, r[i].len, cs, file_size,
                               _(r[i].what), error))
            return false;
    }
    return qcow2_check_overlaps(r, G_N_ELEMENTS(r), error);
}

static bool
qcow2_check_features(VbkQcow2Header *h, GError **error)
{
    uint64_t unsupported = h->incompatible & ~QCOW2_INCOMPAT_SUPPORTED;

    if (unsupported) {
        g_autofree char *list = vbk_qcow2_feature_list(h, 0, unsupported);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Unsupported qcow2 feature(s): %s"), list);
        return false;
    }
    if (h->compression_type > QCOW2_COMPRESSION_ZSTD) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("qcow2: unknown compression type: %u"),
                    h->compression_type);
        return false;
    }
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
        !(h->incompatible & QCOW2_INCOMPAT_COMPRESSION)) {
        g_set_error(
            error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
            _("qcow2: Compression type incompatible feature bit must be set"));
        return false;
    }
    if (h->compression_type == QCOW2_COMPRESSION_ZLIB &&
        (h->incompatible & QCOW2_INCOMPAT_COMPRESSION)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2: Compression type incompatible feature bit must "
                      "not be set"));
        return false;
    }
    return true;
}

/* Fixed-size fields: version, cluster size, lengths, widths. */
static bool
qcow2_check_fixed(const uint8_t *buf,
                  size_t len,
                  VbkQcow2Header *h,
                  GError **error)
{
    if (len < QCOW2_V2_HEADER_LEN || qcow2_be32(buf) != QCOW2_MAGIC) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Image is not in qcow2 format"));
        return false;
    }
    qcow2_decode_fields(buf, h);
    if (h->version < 2 || h->version > 3) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Unsupported qcow2 version %u"), h->version);
        return false;
    }
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Unsupported cluster size: 2^%u"), h->cluster_bits);
        return false;
    }
    if (h->version >= 3 &&
        (h->header_length < QCOW2_V3_HEADER_LEN || len < QCOW2_V3_HEADER_LEN)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2 header too short"));
        return false;
    }
    if (h->header_length > (1u << h->cluster_bits) || h->header_length > len) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2 header exceeds cluster size"));
        return false;
    }
    if (h->header_length > QCOW2_V3_HEADER_LEN)
        h->compression_type = buf[104];
    if (h->refcount_order > 6) {
        g_set_error(
            error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
            _("Reference count entry width too large; may not exceed 64 bits"));
        return false;
    }
    if (h->crypt_method != 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Unsupported encryption method %u"), h->crypt_method);
        return false;
    }
    return qcow2_check_features(h, error);
}

/* The backing file name, stored in cluster 0 after the extensions. */
static bool
qcow2_decode_backing(const uint8_t *buf,
                     size_t len,
                     VbkQcow2Header *h,
                     uint64_t *ext_end,
                     GError **error)
{
    uint64_t cs = 1ull << h->cluster_bits;

    if (h->backing_file_offset > cs) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Invalid backing file offset"));
        return false;
    }
    if (h->backing_file_offset == 0)
        return true;
    if (h->backing_file_size >
        MIN(QCOW2_MAX_BACKING_NAME, cs - h->backing_file_offset)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Backing file name too long"));
        return false;
    }
    /* the extensions end where the name starts, inside what we read */
    *ext_end = MIN(h->backing_file_offset, len);
    if (h->backing_file_size == 0)
        return true;
    if (h->backing_file_offset < h->header_length ||
        h->backing_file_offset + h->backing_file_size > len) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Invalid backing file offset"));
        return false;
    }
    h->backing_file = g_strndup((const char *) buf + h->backing_file_offset,
                                h->backing_file_size);
    if (strlen(h->backing_file) != h->backing_file_size) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2: backing file name contains a NUL byte"));
        return false;
    }
    return true;
}

/*
 * Decode cluster 0 (@buf, @len bytes: the whole cluster, or the whole
 * file when shorter) of an image whose file is @file_size bytes.
 */
bool
vbk_qcow2_header_decode(const uint8_t *buf,
                        size_t len,
                        uint64_t file_size,
                        VbkQcow2Header *h,
                        GError **error)
{
    uint64_t cs;
    uint64_t ext_end;

    memset(h, 0, sizeof(*h));
    if (!qcow2_check_fixed(buf, len, h, error))
        goto fail;
    cs = 1ull << h->cluster_bits;
    if (len > cs)
        len = cs;
    ext_end = len;
    if (!qcow2_decode_backing(buf, len, h, &ext_end, error))
        goto fail;
    if (!qcow2_decode_extensions(buf, h->header_length, ext_end, h, error))
        goto fail;
    if (!qcow2_check_tables(h, cs, file_size, error))
        goto fail;
    if (h->has_bitmaps &&
        (h->bitmap_directory_offset & (cs - 1) ||
         h->bitmap_directory_size > file_size ||
         h->bitmap_directory_offset > file_size - h->bitmap_directory_size)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("bitmaps_ext: invalid bitmap directory offset"));
        goto fail;
    }
    return true;

fail:
    vbk_qcow2_header_clear(h);
    return false;
}

static size_t
qcow2_put_ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
    qcow2_put_be32(p, type);
    qcow2_put_be32(p + 4, len);
    memcpy(p + 8, data, len);
    return 8 + ((len + 7) & ~7u);
}

/* Encode a fresh header into @buf (cluster_size bytes, zeroed). */
bool
vbk_qcow2_header_encode(const VbkQcow2Header *h,
                        uint8_t *buf,
                        size_t cluster_size,
                        GError **error)
{
    size_t hdr_len =
        h->version >= 3 ? QCOW2_HEADER_LEN_WRITTEN : QCOW2_V2_HEADER_LEN;
    size_t need = hdr_len + 8;
    size_t off = hdr_len;
    size_t blen = h->backing_file ? strlen(h->backing_file) : 0;
    size_t flen = h->backing_fmt ? strlen(h->backing_fmt) : 0;
    bool with_names = h->version >= 3 && cluster_size > 4096;

    need += flen ? 8 + ((flen + 7) & ~7u) : 0;
    need += with_names ? 8 + 48 * G_N_ELEMENTS(qcow2_builtin_features) : 0;
    if (blen > QCOW2_MAX_BACKING_NAME || flen >= 16 ||
        need + blen > cluster_size) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Backing file name too long"));
        return false;
    }
    memset(buf, 0, cluster_size);
    qcow2_put_be32(buf, QCOW2_MAGIC);
    qcow2_put_be32(buf + 4, h->version);
    qcow2_put_be32(buf + 20, h->cluster_bits);
    qcow2_put_be64(buf + 24, h->size);
    qcow2_put_be32(buf + 36, h->l1_size);
    qcow2_put_be64(buf + 40, h->l1_table_offset);
    qcow2_put_be64(buf + 48, h->refcount_table_offset);
    qcow2_put_be32(buf + 56, h->refcount_table_clusters);
    if (h->version >= 3) {
        qcow2_put_be64(buf + 72, h->incompatible);
        qcow2_put_be64(buf + 80, h->compatible);
        qcow2_put_be64(buf + 88, h->autoclear);
        qcow2_put_be32(buf + 96, h->refcount_order);
        qcow2_put_be32(buf + 100, hdr_len);
        buf[104] = h->compression_type;
    }
    if (flen)
        off += qcow2_put_ext(buf + off, QCOW2_EXT_BACKING_FMT, h->backing_fmt,
                             flen);
    if (with_names) {
        uint8_t table[48 * G_N_ELEMENTS(qcow2_builtin_features)] = {0};
        for (size_t i = 0; i < G_N_ELEMENTS(qcow2_builtin_features); i++) {
            table[i * 48] = qcow2_builtin_features[i].type;
            table[i * 48 + 1] = qcow2_builtin_features[i].bit;
            memcpy(table + i * 48 + 2, qcow2_builtin_features[i].name,
                   strlen(qcow2_builtin_features[i].name));
        }
        off +=
            qcow2_put_ext(buf + off, QCOW2_EXT_FEATURES, table, sizeof(table));
    }
    off += 8; /* end marker, already zero */
    if (blen) {
        memcpy(buf + off, h->backing_file, blen);
        qcow2_put_be64(buf + 8, off);
        qcow2_put_be32(buf + 16, blen);
    }
    return true;
}

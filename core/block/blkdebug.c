/*
 * blkdebug.c: a fault-injection filter driven by named events and rules.
 *
 * Format drivers fire events (vbk_block_event(): "l2_update", "read_aio",
 * "flush_to_disk" ...) at the metadata and data points where QEMU fires
 * them.  A blkdebug node below them holds two kinds of rules, each tied
 * to an event and a state (0 = any):
 *
 *   inject-error {event, state, iotype, errno, sector, once, immediately}
 *   set-state    {event, state, new_state}
 *
 * The node has a current state, starting at 1.  When an event arrives,
 * every rule for it whose state is 0 or the current state is processed:
 * the first matching inject-error rule replaces the list of *active*
 * rules, later ones are added to it; a set-state rule records the state to
 * switch to once all rules ran.  Actual I/O through the node then checks
 * the active rules: a rule whose iotype covers the request (default: read,
 * write, write-zeroes, discard, flush) and whose sector, if any, falls in
 * the request fails it with -errno; a "once" rule is then deleted.
 *
 * Example (iotest 257's pattern):
 *   set-state {flush_to_disk, 1 -> 2}, set-state {read_aio, 2 -> 3},
 *   inject-error {read_aio, state 3, errno 5, once}
 * A flush arms the chain; the next data read moves to state 3; the read
 * after that fails with EIO, exactly once.
 *
 * QEMU's "immediately=false" makes a failing request yield once first; a
 * threaded block layer has no coroutine to yield, so it has no effect
 * here beyond being accepted.
 *
 * All rule state is under one mutex; I/O forwards to bs->file unlocked.
 */
#include <glib/gi18n-lib.h>
#include <errno.h>

#include "block-int.h"

typedef enum {
    IOTYPE_READ,
    IOTYPE_WRITE,
    IOTYPE_WRITE_ZEROES,
    IOTYPE_DISCARD,
    IOTYPE_FLUSH,
    IOTYPE_BLOCK_STATUS,
    IOTYPE__MAX,
} IoType;

static const char *const iotype_names[IOTYPE__MAX] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
};

#define IOTYPE_DEFAULT_MASK                                                    \
    ((1u << IOTYPE_READ) | (1u << IOTYPE_WRITE) |                              \
     (1u << IOTYPE_WRITE_ZEROES) | (1u << IOTYPE_DISCARD) |                    \
     (1u << IOTYPE_FLUSH))

typedef struct {
    bool inject;             /* inject-error, else set-state */
    VbkBlockEvent event;
    uint64_t state;          /* 0: any */
    /* inject-error */
    unsigned iotype_mask;
    int error;               /* positive errno */
    int64_t offset;          /* byte offset, -1: any */
    bool once;
    bool immediately;
    /* set-state */
    uint64_t new_state;
} Rule;

typedef struct {
    GMutex lock;
    uint64_t state;
    GPtrArray *rules;        /* all rules, owning (Rule *) */
    GPtrArray *active;       /* armed inject rules, non-owning */
} BlkdebugState;

static const char *const event_names[VBK_EVENT__MAX] = {
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table",
    "l1_grow_activate_table", "l2_load", "l2_update", "l2_update_compressed",
    "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load",
    "vmstate_save", "cow_read", "cow_write", "reftable_load",
    "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
};

const char *
vbk_block_event_name(VbkBlockEvent event)
{
    if ((unsigned) event >= VBK_EVENT__MAX)
        return NULL;
    return event_names[event];
}

int
vbk_block_event_from_name(const char *name)
{
    for (int i = 0; i < VBK_EVENT__MAX; i++) {
        if (g_str_equal(event_names[i], name))
            return i;
    }
    return -1;
}

void
vbk_block_event(VbkBlockNode *bs, VbkBlockEvent event)
{
    while (bs && !bs->drv->debug_event)
        bs = bs->file;
    if (bs)
        bs->drv->debug_event(bs, event);
}

static const char *const blkdebug_options[] = {
    "config", "align", "max-transfer", "opt-write-zero",
    "max-write-zero", "opt-discard", "max-discard", "inject-error",
    "set-state", "take-child-perms", "unshare-child-perms", NULL,
};

/* The a{sv} inside one element of a list option (av or aa{sv}). */
static GVariant *
list_element_dict(GVariant *elem)
{
    GVariant *v = g_variant_ref(elem);

    while (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
        g_variant_unref(v);
        return NULL;
    }
    return v;
}

static bool
parse_event(GVariant *d, Rule *r, GError **error)
{
    const char *name = NULL;
    int ev;

    if (vbk_opts_lookup_string(d, "event", &name, error) < 0)
        return false;
    if (!name) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Missing event name for rule"));
        return false;
    }
    ev = vbk_block_event_from_name(name);
    if (ev < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Parameter 'event' does not accept value '%s'"), name);
        return false;
    }
    r->event = (VbkBlockEvent) ev;
    return vbk_opts_lookup_uint64(d, "state", &r->state, error) >= 0;
}

static bool
parse_iotype(GVariant *d, Rule *r, GError **error)
{
    const char *iotype = NULL;

    r->iotype_mask = IOTYPE_DEFAULT_MASK;
    if (vbk_opts_lookup_string(d, "iotype", &iotype, error) < 0)
        return false;
    if (!iotype)
        return true;
    for (int i = 0; i < IOTYPE__MAX; i++) {
        if (g_str_equal(iotype_names[i], iotype)) {
            r->iotype_mask = 1u << i;
            return true;
        }
    }
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("Parameter 'iotype' does not accept value '%s'"), iotype);
    return false;
}

static Rule *
parse_inject(GVariant *d, GError **error)
{
    g_autofree Rule *r = g_new0(Rule, 1);
    GVariant *sector;
    uint64_t err = EIO;

    r->inject = true;
    r->offset = -1;
    if (!parse_event(d, r, error) || !parse_iotype(d, r, error))
        return NULL;
    if (vbk_opts_lookup_uint64(d, "errno", &err, error) < 0)
        return NULL;
    if (err == 0 || err > 4095) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Invalid errno value"));
        return NULL;
    }
    r->error = (int) err;
    sector = g_variant_lookup_value(d, "sector", NULL);
    if (sector) {
        uint64_t sec;
        int64_t signed_sec = 0;
        bool negative = false;

        while (g_variant_is_of_type(sector, G_VARIANT_TYPE_VARIANT)) {
            GVariant *inner = g_variant_get_variant(sector);
            g_variant_unref(sector);
            sector = inner;
        }
        if (g_variant_is_of_type(sector, G_VARIANT_TYPE_INT64)) {
            signed_sec = g_variant_get_int64(sector);
            negative = signed_sec < 0;
        }
        g_variant_unref(sector);
        if (negative) {
            r->offset = -1;
        } else {
            if (vbk_opts_lookup_uint64(d, "sector", &sec, error) < 0)
                return NULL;
            if (sec > INT64_MAX / 512) {
                g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            "%s", _("Invalid sector value"));
                return NULL;
            }
            r->offset = (int64_t) sec * 512;
        }
    }
    if (vbk_opts_lookup_bool(d, "once", &r->once, error) < 0 ||
        vbk_opts_lookup_bool(d, "immediately", &r->immediately, error) < 0)
        return NULL;
    return g_steal_pointer(&r);
}

static bool
opts_has(GVariant *d, const char *key)
{
    g_autoptr(GVariant) v = g_variant_lookup_value(d, key, NULL);

    return v != NULL;
}

static Rule *
parse_set_state(GVariant *d, GError **error)
{
    g_autofree Rule *r = g_new0(Rule, 1);

    if (!parse_event(d, r, error))
        return NULL;
    /* QAPI spells it "new_state"; "new-state" is kept as an alias */
    if (!opts_has(d, "new_state") && opts_has(d, "new-state")) {
        if (!vbk_opts_get_uint64(d, "new-state", &r->new_state, error))
            return NULL;
    } else if (!vbk_opts_get_uint64(d, "new_state", &r->new_state, error)) {
        return NULL;
    }
    return g_steal_pointer(&r);
}

static bool
parse_rules(BlkdebugState *s, GVariant *opts, const char *key,
            Rule *(*parse)(GVariant *, GError **), GError **error)
{
    g_autoptr(GVariant) list = g_variant_lookup_value(opts, key, NULL);
    GVariantIter iter;
    GVariant *elem;

    while (list && g_variant_is_of_type(list, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(list);
        g_variant_unref(list);
        list = inner;
    }
    if (!list)
        return true;
    if (!g_variant_is_of_type(list, G_VARIANT_TYPE_ARRAY)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Invalid parameter type for '%s', expected: array"),
                    key);
        return false;
    }
    g_variant_iter_init(&iter, list);
    while ((elem = g_variant_iter_next_value(&iter))) {
        g_autoptr(GVariant) d = list_element_dict(elem);
        Rule *r;

        g_variant_unref(elem);
        if (!d) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Invalid parameter type for '%s', expected: object"),
                        key);
            return false;
        }
        r = parse(d, error);
        if (!r)
            return false;
        g_ptr_array_add(s->rules, r);
    }
    return true;
}

static bool
blkdebug_open(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    BlkdebugState *s = bs->opaque;
    const char *config = NULL;

    g_mutex_init(&s->lock);
    s->state = 1;
    s->rules = g_ptr_array_new_with_free_func(g_free);
    s->active = g_ptr_array_new();
    if (vbk_opts_lookup_string(opts, "config", &config, error) < 0)
        return false;
    if (config) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED, "%s",
                    _("blkdebug config files are not supported; use "
                      "inject-error and set-state"));
        return false;
    }
    if (!parse_rules(s, opts, "inject-error", parse_inject, error) ||
        !parse_rules(s, opts, "set-state", parse_set_state, error))
        return false;
    if (!vbk_block_open_file_child_key(bs, opts, "image", true, error))
        return false;
    return true;
}

static void
blkdebug_close(VbkBlockNode *bs)
{
    BlkdebugState *s = bs->opaque;

    g_clear_pointer(&s->active, g_ptr_array_unref);
    g_clear_pointer(&s->rules, g_ptr_array_unref);
    g_mutex_clear(&s->lock);
}

static void
blkdebug_debug_event(VbkBlockNode *bs, VbkBlockEvent event)
{
    BlkdebugState *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    uint64_t new_state = s->state;
    bool cleared = false;

    for (guint i = 0; i < s->rules->len; i++) {
        Rule *r = s->rules->pdata[i];

        if (r->event != event || (r->state != 0 && r->state != s->state))
            continue;
        if (r->inject) {
            if (!cleared) {
                g_ptr_array_set_size(s->active, 0);
                cleared = true;
            }
            g_ptr_array_add(s->active, r);
        } else {
            new_state = r->new_state;
        }
    }
    s->state = new_state;
}

/* Returns -errno of the first active rule matching the request, or 0. */
static int
check_rules(VbkBlockNode *bs, IoType type, uint64_t offset, uint64_t bytes)
{
    BlkdebugState *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    for (guint i = 0; i < s->active->len; i++) {
        Rule *r = s->active->pdata[i];
        int err;

        if (!(r->iotype_mask & (1u << type)))
            continue;
        if (r->offset >= 0 && ((uint64_t) r->offset < offset ||
                               (uint64_t) r->offset >= offset + bytes))
            continue;
        err = r->error;
        if (r->once) {
            g_ptr_array_remove_index(s->active, i);
            g_ptr_array_remove(s->rules, r); /* frees r */
        }
        return -err;
    }
    return 0;
}

static int
blkdebug_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    int ret = check_rules(bs, IOTYPE_READ, offset, bytes);

    return ret ? ret : vbk_block_pread(bs->file, offset, bytes, buf);
}

static int
blkdebug_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                const void *buf, VbkRequestFlags flags)
{
    int ret = check_rules(bs, IOTYPE_WRITE, offset, bytes);

    return ret ? ret : vbk_block_pwrite(bs->file, offset, bytes, buf, flags);
}

static int
blkdebug_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                       VbkRequestFlags flags)
{
    int ret = check_rules(bs, IOTYPE_WRITE_ZEROES, offset, bytes);

    return ret ? ret : vbk_block_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int
blkdebug_pdiscard(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = check_rules(bs, IOTYPE_DISCARD, offset, bytes);

    return ret ? ret : vbk_block_pdiscard(bs->file, offset, bytes);
}

static int
blkdebug_flush(VbkBlockNode *bs)
{
    /* the file child is flushed by the dispatch layer afterwards */
    return check_rules(bs, IOTYPE_FLUSH, 0, UINT64_MAX / 2);
}

static int
blkdebug_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                      uint64_t *pnum, uint64_t *map, VbkBlockNode **file)
{
    int ret = check_rules(bs, IOTYPE_BLOCK_STATUS, offset, bytes);

    if (ret)
        return ret;
    return vbk_block_block_status(bs->file, offset, bytes, pnum, map, file);
}

static int64_t
blkdebug_getlength(VbkBlockNode *bs)
{
    return vbk_block_node_getlength(bs->file);
}

const VbkBlockDriver vbk_drv_blkdebug = {
    .format_name = "blkdebug",
    .instance_size = sizeof(BlkdebugState),
    .is_filter = true,
    .file_key = "image",
    .options = blkdebug_options,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .pdiscard = blkdebug_pdiscard,
    .flush = blkdebug_flush,
    .block_status = blkdebug_block_status,
    .getlength = blkdebug_getlength,
    .debug_event = blkdebug_debug_event,
};

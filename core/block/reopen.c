/*
 * reopen.c: changing the options of open nodes (QMP blockdev-reopen),
 * with QEMU 7.2's rules and messages.
 *
 * Each element of the list is a node's full option set, as given to
 * blockdev-add: what it leaves out returns to its default (read-only
 * false).  The node is found by its node-name ("node-name not specified",
 * "Failed to find node with node-name='x'"); its driver, node-name and a
 * file node's filename cannot change ("Cannot change the option 'x'").
 * A child given inline ("file": {...}) is reopened with those options,
 * inheriting read-only from its parent unless it sets it; a child given
 * by node-name must be the current one and keeps its current options,
 * whatever another element of the list asks for it (as QEMU 7.2 does:
 * [file RW, qcow2 RW with "file": "name"] fails while the file is
 * read-only, in either order).
 *
 * What may change: read-only and discard.  The whole list is planned and
 * checked first, with every node's final read-only state known:
 *   - a read-write node needs a read-write file child ("Block node is
 *     read-only");
 *   - a node going read-only must not have read-write parents using it
 *     as their file ("Read-only block node 'x' cannot support read-write
 *     users").
 * Only then are the changes made, read-write ones children first and
 * read-only ones parents first, through the driver's reopen callback: a
 * qcow2 node going read-only stores its persistent bitmaps (they are no
 * longer in_use on disk) and makes them read-only; going read-write it
 * marks them in_use on disk and makes them writable again.
 *
 * Messages about members carry the list position, as QAPI names them:
 * "Parameter 'options[0].bogus' is unexpected".
 */
#include <glib/gi18n-lib.h>
#include <stdarg.h>
#include <string.h>

#include "block-int.h"

typedef struct {
    VbkBlockNode *bs;
    bool read_only;
    bool discard_unmap;
    bool ro_explicit;   /* read-only given in the node's own options */
    bool name_explicit; /* node-name given in them */
    bool pinned; /* named by reference from a parent: see plan_keep() */
} ReopenPlan;

static bool G_GNUC_PRINTF(2, 3)
reopen_fail(GError **error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_propagate_error(error, g_error_new_valist(VBK_BLOCK_ERROR,
                                                VBK_BLOCK_ERROR_INVALID, fmt,
                                                ap));
    va_end(ap);
    return false;
}

static ReopenPlan *
plan_find(GArray *plan, VbkBlockNode *bs)
{
    for (guint i = 0; i < plan->len; i++) {
        if (g_array_index(plan, ReopenPlan, i).bs == bs)
            return &g_array_index(plan, ReopenPlan, i);
    }
    return NULL;
}

/* The read-only state @bs will have once @plan is done (now when
 * @plan is NULL). */
static bool
final_ro(GArray *plan, VbkBlockNode *bs)
{
    ReopenPlan *p = plan ? plan_find(plan, bs) : NULL;

    return p ? p->read_only : bs->read_only;
}

/*
 * A child named by reference from a parent going @parent_ro keeps its
 * options: its explicit read-only, else the parent's (inherited).  No
 * other element of the list changes that.
 */
static bool
plan_keep(GArray *plan, VbkBlockNode *bs, bool parent_ro)
{
    ReopenPlan p = {bs, bs->ro_explicit ? bs->read_only : parent_ro,
                    bs->discard_unmap, bs->ro_explicit, bs->name_explicit,
                    true};

    if (plan_find(plan, bs))
        *plan_find(plan, bs) = p;
    else
        g_array_append_val(plan, p);
    return true;
}

static bool plan_node(GArray *plan, VbkBlockNode *bs, GVariant *opts,
                      bool default_ro, const char *prefix, GError **error);

/* The "file" member of @opts for @bs: same node, or its new options. */
static bool
plan_file_child(GArray *plan, VbkBlockNode *bs, GVariant *opts, bool ro,
                const char *prefix, GError **error)
{
    const char *key = bs->drv->file_key ? bs->drv->file_key : "file";
    g_autoptr(GVariant) v = g_variant_lookup_value(opts, key, NULL);
    g_autofree char *child_prefix = NULL;

    while (v && g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    if (!v)
        return true; /* the QMP layer has required it where QEMU does */
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        const char *ref = g_variant_get_string(v, NULL);
        VbkBlockNode *child = vbk_block_node_find(ref);

        if (!child) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                        _("Cannot find device='' nor node-name='%s'"), ref);
            return false;
        }
        if (child != bs->file)
            return reopen_fail(error, _("Cannot change the option '%s'"), key);
        /* as QEMU: a child named by reference keeps its current options,
         * replacing what an earlier element of the list asked for */
        return plan_keep(plan, child, ro);
    }
    if (!bs->file || !g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT))
        return reopen_fail(error, _("Cannot change the option '%s'"), key);
    child_prefix = g_strdup_printf("%s%s.", prefix, key);
    return plan_node(plan, bs->file, v, ro, child_prefix, error);
}

/* The "backing" member: absent (kept), or naming the current state. */
static bool
plan_backing(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    g_autoptr(GVariant) v = g_variant_lookup_value(opts, "backing", NULL);
    bool present = v != NULL;
    const char *ref;

    while (v && (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT) ||
                 g_variant_is_of_type(v, G_VARIANT_TYPE_MAYBE))) {
        GVariant *inner = g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)
                              ? g_variant_get_variant(v)
                              : g_variant_get_maybe(v);
        g_variant_unref(v);
        v = inner;
    }
    if (!present)
        return true;
    if (!v)
        ref = ""; /* null: no backing */
    else if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING))
        ref = g_variant_get_string(v, NULL);
    else
        ref = NULL;
    if (ref && (bs->backing ? g_str_equal(bs->backing->node_name, ref)
                            : *ref == '\0'))
        return true;
    return reopen_fail(error, _("Cannot change the option '%s'"), "backing");
}

/* Options that cannot change: driver, node-name, filename. */
static bool
plan_fixed_options(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    const char *driver = NULL, *name = NULL, *filename = NULL;

    if (vbk_opts_lookup_string(opts, "driver", &driver, error) < 0 ||
        vbk_opts_lookup_string(opts, "node-name", &name, error) < 0 ||
        vbk_opts_lookup_string(opts, "filename", &filename, error) < 0)
        return false;
    if (!driver || !g_str_equal(driver, bs->drv->format_name))
        return reopen_fail(error, _("Cannot change the option '%s'"),
                           "driver");
    /* QEMU compares with the node-name of the last options: one given
     * where the last ones had none is a change too */
    if (name && (!g_str_equal(name, bs->node_name) || !bs->name_explicit))
        return reopen_fail(error, _("Cannot change the option '%s'"),
                           "node-name");
    if (filename && g_str_equal(bs->drv->format_name, "file") &&
        g_strcmp0(filename, bs->filename) != 0)
        return reopen_fail(error, _("Cannot change the option '%s'"),
                           "filename");
    return true;
}

/* Plan @bs with @opts; read-only defaults to @default_ro (inherited
 * by inline children, false at the top). */
static bool
plan_node(GArray *plan, VbkBlockNode *bs, GVariant *opts, bool default_ro,
          const char *prefix, GError **error)
{
    ReopenPlan p = {bs, default_ro, false, false, false, false};
    const char *discard = NULL;
    int r;

    if (!vbk_block_check_keys(opts, bs->drv, prefix, error) ||
        !plan_fixed_options(bs, opts, error))
        return false;
    r = vbk_opts_lookup_bool(opts, "read-only", &p.read_only, error);
    if (r < 0 || vbk_opts_lookup_string(opts, "discard", &discard, error) < 0)
        return false;
    p.ro_explicit = r > 0;
    p.name_explicit = g_variant_lookup_value(opts, "node-name", NULL) != NULL;
    if (discard && !g_str_equal(discard, "ignore") &&
        !g_str_equal(discard, "off") && !g_str_equal(discard, "unmap") &&
        !g_str_equal(discard, "on"))
        return reopen_fail(error,
                           _("Parameter 'discard' does not accept value '%s'"),
                           discard);
    p.discard_unmap =
        discard && (g_str_equal(discard, "unmap") || g_str_equal(discard, "on"));
    if (!plan_find(plan, bs))
        g_array_append_val(plan, p);
    else if (!plan_find(plan, bs)->pinned)
        *plan_find(plan, bs) = p; /* listed again: the last one wins */
    if (bs->drv->supports_backing && !plan_backing(bs, opts, error))
        return false;
    if (bs->drv->is_format || bs->drv->is_filter)
        return plan_file_child(plan, bs, opts, p.read_only, prefix, error);
    return true;
}

/* A node using @bs as its file that is read-write after @plan (now
 * when @plan is NULL), or NULL. */
static VbkBlockNode *
rw_user(GArray *plan, VbkBlockNode *bs)
{
    g_autoptr(GPtrArray) all = vbk_block_node_list();

    for (guint i = 0; i < all->len; i++) {
        VbkBlockNode *parent = all->pdata[i];

        if (parent->file == bs && !final_ro(plan, parent))
            return parent;
    }
    return NULL;
}

static bool
plan_check(GArray *plan, GError **error)
{
    for (guint i = 0; i < plan->len; i++) {
        ReopenPlan *p = &g_array_index(plan, ReopenPlan, i);

        if (!p->read_only && p->bs->file && final_ro(plan, p->bs->file))
            return reopen_fail(error, "%s", _("Block node is read-only"));
    }
    for (guint i = 0; i < plan->len; i++) {
        ReopenPlan *p = &g_array_index(plan, ReopenPlan, i);

        if (p->read_only && rw_user(plan, p->bs))
            return reopen_fail(
                error, _("Read-only block node '%s' cannot support "
                         "read-write users"),
                p->bs->node_name);
    }
    return true;
}

static bool
apply_one(ReopenPlan *p, GError **error)
{
    p->bs->discard_unmap = p->discard_unmap;
    p->bs->ro_explicit = p->ro_explicit;
    p->bs->name_explicit = p->name_explicit;
    if (p->read_only == p->bs->read_only)
        return true;
    if (p->bs->drv->reopen && !p->bs->drv->reopen(p->bs, p->read_only, error))
        return false;
    p->bs->read_only = p->read_only;
    return true;
}

/*
 * Make the changes: read-write nodes once their file child is
 * read-write, read-only nodes once no parent writes to them.
 */
static bool
plan_apply(GArray *plan, GError **error)
{
    g_autofree bool *done = g_new0(bool, plan->len);
    guint left = plan->len;

    while (left) {
        guint before = left;

        for (guint i = 0; i < plan->len; i++) {
            ReopenPlan *p = &g_array_index(plan, ReopenPlan, i);
            bool ready = p->read_only ? !rw_user(NULL, p->bs)
                                      : !p->bs->file || !p->bs->file->read_only;

            if (done[i] || !ready)
                continue;
            if (!apply_one(p, error))
                return false;
            done[i] = true;
            left--;
        }
        if (left == before)
            return reopen_fail(error, "%s", _("Block node is read-only"));
    }
    return true;
}

bool
vbk_block_reopen_multiple(GVariant *const *opts, guint n, GError **error)
{
    g_autoptr(GArray) plan = g_array_new(FALSE, FALSE, sizeof(ReopenPlan));

    for (guint i = 0; i < n; i++) {
        g_autofree char *prefix = g_strdup_printf("options[%u].", i);
        const char *name = NULL;
        VbkBlockNode *bs;

        if (vbk_opts_lookup_string(opts[i], "node-name", &name, error) < 0)
            return false;
        if (!name)
            return reopen_fail(error, "%s", _("node-name not specified"));
        bs = vbk_block_node_find(name);
        if (!bs) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                        _("Failed to find node with node-name='%s'"), name);
            return false;
        }
        if (!plan_node(plan, bs, opts[i], false, prefix, error))
            return false;
    }
    return plan_check(plan, error) && plan_apply(plan, error);
}

/*
 * node-conf.c: the libvirt test driver's <node> fixture format, which
 * describes a whole fake host (test:///path/node.xml):
 *
 *     <node>
 *       <cpu><mhz>6000</mhz><model>i686</model><active>50</active>
 *            <nodes>4</nodes><sockets>4</sockets><cores>4</cores>
 *            <threads>2</threads></cpu>
 *       <memory>8192000</memory>
 *       <domain file="testdomfv0.xml"/>
 *       <domain type='test'>...inline...</domain>
 *       <network file="testnet.xml"/>
 *       <pool file="testpool.xml"><volume file="testvol.xml"/></pool>
 *     </node>
 *
 * vbackup serves domains only, so networks, interfaces, pools and node
 * devices are skipped. A file= reference is read relative to the
 * fixture's directory and parsed through the same hardened parser.
 */
#include "node-conf.h"

#include <glib/gi18n-lib.h>
#include <string.h>

void
vbk_node_def_free(VbkNodeDef *def)
{
    if (!def)
        return;
    g_ptr_array_unref(def->domains);
    g_free(def->cpu_model);
    g_free(def);
}

static gboolean
parse_uint_child(xmlNodePtr parent,
                 const char *name,
                 guint64 max,
                 guint64 *val,
                 GError **error)
{
    g_autofree char *text = vbk_xml_child_text(parent, name);

    if (!text)
        return TRUE;
    if (!g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, max, val, NULL)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("invalid value '%s' of node element '%s'"), text, name);
        return FALSE;
    }
    return TRUE;
}

static gboolean
parse_cpu(VbkNodeDef *def, xmlNodePtr root, GError **error)
{
    xmlNodePtr cpu = vbk_xml_child(root, "cpu");
    guint64 v[6] = {0};
    static const char *const names[] = {
        "mhz", "nodes", "sockets", "cores", "threads", "active",
    };
    gsize i;

    if (!parse_uint_child(root, "memory", G_MAXUINT64 / 1024, &def->memory_kib,
                          error))
        return FALSE;
    if (!cpu)
        return TRUE;
    for (i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!parse_uint_child(cpu, names[i], G_MAXUINT, &v[i], error))
            return FALSE;
    }
    def->cpu_mhz = v[0];
    def->cpu_nodes = v[1];
    def->cpu_sockets = v[2];
    def->cpu_cores = v[3];
    def->cpu_threads = v[4];
    def->cpu_active = v[5];
    def->cpu_model = vbk_xml_child_text(cpu, "model");
    return TRUE;
}

static VbkDomainDef *
parse_domain_file(const char *file, const char *base_dir, GError **error)
{
    g_autofree char *path = NULL;
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    gsize len;

    if (!base_dir && !g_path_is_absolute(file)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("cannot resolve relative domain file '%s'"), file);
        return NULL;
    }
    path = g_path_is_absolute(file) ? g_strdup(file)
                                    : g_build_filename(base_dir, file, NULL);
    if (!g_file_get_contents(path, &data, &len, &err)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR,
                    _("failed to read domain file '%s': %s"), path,
                    err->message);
        return NULL;
    }
    if (len > VBK_XML_MAX_DOC_SIZE || strlen(data) != len) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("domain file '%s' is not a usable XML document"), path);
        return NULL;
    }
    return vbk_domain_def_parse_string(data, 0, error);
}

static gboolean
add_domain(VbkNodeDef *def, VbkDomainDef *dom, GError **error)
{
    if (vbk_node_def_find_domain(def, dom->name)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_OPERATION_FAILED,
                    _("domain '%s' already exists"), dom->name);
        vbk_domain_def_free(dom);
        return FALSE;
    }
    g_ptr_array_add(def->domains, dom);
    return TRUE;
}

static VbkNodeDef *
node_parse_root(xmlNodePtr root, const char *base_dir, GError **error)
{
    g_autoptr(VbkNodeDef) def = g_new0(VbkNodeDef, 1);
    xmlNodePtr cur;

    def->domains =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_domain_def_free);
    if (!parse_cpu(def, root, error))
        return NULL;

    for (cur = root->children; cur; cur = cur->next) {
        g_autofree char *file = NULL;
        VbkDomainDef *dom;

        if (!vbk_xml_node_is(cur, "domain"))
            continue;
        if ((file = vbk_xml_prop(cur, "file")))
            dom = parse_domain_file(file, base_dir, error);
        else
            dom = vbk_domain_def_parse_node(cur, 0, error);
        if (!dom || !add_domain(def, dom, error))
            return NULL;
    }
    return g_steal_pointer(&def);
}

VbkNodeDef *
vbk_node_def_parse_string(const char *xml, const char *base_dir, GError **error)
{
    g_autoptr(xmlDoc) doc =
        vbk_xml_parse(xml, -1, _("(test driver)"), "node", error);

    if (!doc)
        return NULL;
    return node_parse_root(xmlDocGetRootElement(doc), base_dir, error);
}

static char *
read_fixture(const char *path, GError **error)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR,
                    _("failed to read fixture '%s': %s"), path, err->message);
        return NULL;
    }
    if (strlen(data) != len || len > VBK_XML_MAX_DOC_SIZE) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("fixture '%s' is not a usable XML document"), path);
        return NULL;
    }
    return g_steal_pointer(&data);
}

VbkNodeDef *
vbk_node_def_parse_file(const char *path, GError **error)
{
    g_autofree char *data = read_fixture(path, error);
    g_autofree char *dir = NULL;

    if (!data)
        return NULL;
    dir = g_path_get_dirname(path);
    return vbk_node_def_parse_string(data, dir, error);
}

VbkNodeDef *
vbk_node_def_load_fixture(const char *path, GError **error)
{
    g_autofree char *data = read_fixture(path, error);
    g_autofree char *dir = NULL;
    g_autoptr(xmlDoc) doc = NULL;
    VbkNodeDef *def;
    VbkDomainDef *dom;
    xmlNodePtr root;

    if (!data || !(doc = vbk_xml_parse(data, -1, path, NULL, error)))
        return NULL;
    root = xmlDocGetRootElement(doc);
    if (vbk_xml_node_is(root, "node")) {
        dir = g_path_get_dirname(path);
        return node_parse_root(root, dir, error);
    }
    if (!(dom = vbk_domain_def_parse_node(root, 0, error)))
        return NULL;
    def = g_new0(VbkNodeDef, 1);
    def->domains =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_domain_def_free);
    g_ptr_array_add(def->domains, dom);
    return def;
}

VbkDomainDef *
vbk_node_def_find_domain(const VbkNodeDef *def, const char *name)
{
    guint i;

    for (i = 0; i < def->domains->len; i++) {
        VbkDomainDef *dom = def->domains->pdata[i];
        if (g_strcmp0(dom->name, name) == 0)
            return dom;
    }
    return NULL;
}

/*
 * xml-util.c: the hardened front door of the XML layer.
 *
 * Every document vbackup reads (backup and checkpoint requests, domain
 * definitions, test-driver <node> fixtures) comes in through
 * vbk_xml_parse(): no network, no DTD (a DOCTYPE stops the parser before
 * its internal subset is read, so no entity can ever be declared or
 * expanded), a size cap and a depth cap. Syntax errors are reported the
 * way libvirt reports them: VIR_ERR_XML_DETAIL with
 * "LABEL:LINE: MESSAGE" followed by the offending line and a caret.
 *
 * Schema validation uses libvirt's own RelaxNG files when installed and
 * reports VIR_ERR_XML_INVALID_SCHEMA with libxml2's collected messages,
 * as virXMLValidateAgainstSchema does.
 *
 * The attribute helpers reproduce libvirt's uniform messages for bad
 * enum and integer attributes.
 */
#include "xml-util.h"

#include <glib/gi18n-lib.h>
#include <string.h>

G_DEFINE_QUARK(vbk - xml - error - quark, vbk_xml_error)

const char *const vbk_tristate_names[] = {"default", "yes", "no", NULL};

char *
vbk_xml_error_format_full(const GError *err)
{
    const char *prefix = NULL;

    if (!err)
        return g_strdup("");
    if (err->domain != VBK_XML_ERROR)
        return g_strdup(err->message);
    switch ((VbkXmlErrorCode) err->code) {
    case VBK_XML_ERR_INTERNAL_ERROR:
        prefix = _("internal error: %s");
        break;
    case VBK_XML_ERR_INVALID_ARG:
        prefix = _("invalid argument: %s");
        break;
    case VBK_XML_ERR_OPERATION_FAILED:
        prefix = _("operation failed: %s");
        break;
    case VBK_XML_ERR_XML_ERROR:
        prefix = _("XML error: %s");
        break;
    case VBK_XML_ERR_OPERATION_DENIED:
        prefix = _("operation forbidden: %s");
        break;
    case VBK_XML_ERR_OPERATION_INVALID:
        prefix = _("Requested operation is not valid: %s");
        break;
    case VBK_XML_ERR_CONFIG_UNSUPPORTED:
        prefix = _("unsupported configuration: %s");
        break;
    case VBK_XML_ERR_XML_INVALID_SCHEMA:
        prefix = _("XML document failed to validate against schema: %s");
        break;
    case VBK_XML_ERR_NO_TARGET:
    case VBK_XML_ERR_NO_NAME:
    case VBK_XML_ERR_XML_DETAIL:
        break;
    }
    if (!prefix)
        return g_strdup(err->message);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    /* each prefix is a translated "...: %s" from the switch above */
    return g_strdup_printf(prefix, err->message);
#pragma GCC diagnostic pop
}

/* ---- parsing --------------------------------------------------------- */

typedef struct {
    gboolean saw_doctype;
    char *first_error; /* the first fatal error, formatted */
    const char *label;
} ParseGuard;

#if LIBXML_VERSION >= 21200
#define VBK_XML_CONST_ERROR const
#else
#define VBK_XML_CONST_ERROR
#endif

static void
parse_guard_doctype(void *user,
                    const xmlChar *name G_GNUC_UNUSED,
                    const xmlChar *external G_GNUC_UNUSED,
                    const xmlChar *system G_GNUC_UNUSED)
{
    xmlParserCtxtPtr ctxt = user;
    ParseGuard *guard = ctxt->_private;

    guard->saw_doctype = TRUE;
    xmlStopParser(ctxt);
}

/* Record the first fatal error as libvirt shows it: "LABEL:LINE: MSG"
 * then the input line up to the error and a "----^" pointer under the
 * position the parser had reached. */
static void
parse_guard_error(void *user, VBK_XML_CONST_ERROR xmlError *xerr)
{
    xmlParserCtxtPtr ctxt = user;
    ParseGuard *guard = ctxt->_private;
    const xmlChar *cur;
    const xmlChar *base;
    const xmlChar *start;
    g_autoptr(GString) context = g_string_new(NULL);
    g_autoptr(GString) pointer = g_string_new(NULL);
    gsize col;
    gsize i;

    if (guard->first_error || !xerr || xerr->level != XML_ERR_FATAL ||
        !xerr->message || !ctxt->input || !ctxt->input->cur)
        return;
    cur = ctxt->input->cur;
    base = ctxt->input->base;
    while (cur > base && (*cur == '\n' || *cur == '\r'))
        cur--;
    start = cur;
    while (start > base && start[-1] != '\n' && start[-1] != '\r')
        start--;
    col = ctxt->input->cur - start;
    for (cur = start; *cur && *cur != '\n' && *cur != '\r'; cur++)
        g_string_append_c(context, *cur);
    for (i = 0; i < col && i < context->len; i++)
        g_string_append_c(pointer, context->str[i] == '\t' ? '\t' : '-');
    g_string_append_c(pointer, '^');
    guard->first_error =
        g_strdup_printf(_("%s:%d: %s%s\n%s"), guard->label, xerr->line,
                        xerr->message, context->str, pointer->str);
}

static gboolean
check_depth(xmlNodePtr node, int depth)
{
    xmlNodePtr cur;

    if (depth > VBK_XML_MAX_DEPTH)
        return FALSE;
    for (cur = node->children; cur; cur = cur->next) {
        if (cur->type == XML_ELEMENT_NODE && !check_depth(cur, depth + 1))
            return FALSE;
    }
    return TRUE;
}

static gsize parser_ready;

xmlDocPtr
vbk_xml_parse(const char *str,
              gssize len,
              const char *label,
              const char *root,
              GError **error)
{
    const int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
    ParseGuard guard = {FALSE, NULL, label};
    xmlParserCtxtPtr ctxt;
    g_autoptr(xmlDoc) doc = NULL;
    xmlNodePtr top;

    g_return_val_if_fail(str != NULL, NULL);
    if (len < 0)
        len = strlen(str);
    if (len > VBK_XML_MAX_DOC_SIZE) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("XML document is too large: %zd bytes (limit %d)"), len,
                    VBK_XML_MAX_DOC_SIZE);
        return NULL;
    }

    if (g_once_init_enter(&parser_ready)) {
        /* libxml2 wants this once before any use from several threads */
        xmlInitParser();
        g_once_init_leave(&parser_ready, 1);
    }
    if (!(ctxt = xmlNewParserCtxt()))
        g_error("cannot allocate an XML parser context");
    ctxt->_private = &guard;
    ctxt->sax->internalSubset = parse_guard_doctype;
    ctxt->sax->serror = parse_guard_error;
    doc = xmlCtxtReadMemory(ctxt, str, (int) len, label, NULL, opts);

    if (guard.saw_doctype) {
        xmlFreeParserCtxt(ctxt);
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("XML document must not contain a DOCTYPE declaration"));
        return NULL;
    }
    if (!doc || !ctxt->wellFormed) {
        if (guard.first_error)
            g_set_error_literal(error, VBK_XML_ERROR, VBK_XML_ERR_XML_DETAIL,
                                guard.first_error);
        else
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                        _("failed to parse xml document"));
        g_free(guard.first_error);
        xmlFreeParserCtxt(ctxt);
        return NULL;
    }
    g_free(guard.first_error);
    xmlFreeParserCtxt(ctxt);

    if (!(top = xmlDocGetRootElement(doc))) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("missing root element"));
        return NULL;
    }
    if (root && !vbk_xml_node_is(top, root)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("expecting root element of '%s', not '%s'"), root,
                    (const char *) top->name);
        return NULL;
    }
    if (!check_depth(top, 1)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("XML document is nested deeper than %d elements"),
                    VBK_XML_MAX_DEPTH);
        return NULL;
    }
    return g_steal_pointer(&doc);
}

/* ---- schema validation ----------------------------------------------- */

const char *
vbk_xml_schema_dir(void)
{
    const char *env = g_getenv("VBK_LIBVIRT_SCHEMA_DIR");

    return env && *env ? env : "/usr/share/libvirt/schemas";
}

gboolean
vbk_xml_schema_available(const char *name)
{
    g_autofree char *path = g_build_filename(vbk_xml_schema_dir(), name, NULL);

    return g_file_test(path, G_FILE_TEST_IS_REGULAR);
}

static G_LOCK_DEFINE(schema_cache);
static GHashTable *schema_cache;

static void
collect_error(void *data, VBK_XML_CONST_ERROR xmlError *xerr)
{
    GString *msgs = data;

    if (xerr && xerr->message)
        g_string_append(msgs, xerr->message);
}

static xmlRelaxNGPtr
schema_load(const char *path, GError **error)
{
    xmlRelaxNGPtr schema;
    xmlRelaxNGParserCtxtPtr pctxt;
    g_autoptr(GString) msgs = g_string_new(NULL);

    G_LOCK(schema_cache);
    if (!schema_cache)
        schema_cache =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    schema = g_hash_table_lookup(schema_cache, path);
    if (!schema && (pctxt = xmlRelaxNGNewParserCtxt(path))) {
        xmlRelaxNGSetParserStructuredErrors(pctxt, collect_error, msgs);
        schema = xmlRelaxNGParse(pctxt);
        xmlRelaxNGFreeParserCtxt(pctxt);
        if (schema)
            g_hash_table_insert(schema_cache, g_strdup(path), schema);
    }
    G_UNLOCK(schema_cache);
    if (!schema)
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR,
                    _("Unable to parse RNG %s: %s"), path, msgs->str);
    return schema;
}

gboolean
vbk_xml_validate(xmlDocPtr doc, const char *name, GError **error)
{
    g_autofree char *path = g_build_filename(vbk_xml_schema_dir(), name, NULL);
    g_autoptr(GString) msgs = g_string_new(NULL);
    xmlRelaxNGValidCtxtPtr vctxt;
    xmlRelaxNGPtr schema;
    int rc;

    if (!(schema = schema_load(path, error)))
        return FALSE;
    if (!(vctxt = xmlRelaxNGNewValidCtxt(schema)))
        g_error("cannot allocate a RelaxNG validation context");
    xmlRelaxNGSetValidStructuredErrors(vctxt, collect_error, msgs);
    rc = xmlRelaxNGValidateDoc(vctxt, doc);
    xmlRelaxNGFreeValidCtxt(vctxt);
    if (rc != 0) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_INVALID_SCHEMA,
                    _("Unable to validate doc against %s\n%s"), path,
                    msgs->str);
        return FALSE;
    }
    return TRUE;
}

/* ---- nodes and attributes -------------------------------------------- */

gboolean
vbk_xml_node_is(xmlNodePtr node, const char *name)
{
    return node && node->type == XML_ELEMENT_NODE &&
           g_strcmp0((const char *) node->name, name) == 0;
}

xmlNodePtr
vbk_xml_child(xmlNodePtr parent, const char *name)
{
    xmlNodePtr cur;

    for (cur = parent ? parent->children : NULL; cur; cur = cur->next) {
        if (vbk_xml_node_is(cur, name))
            return cur;
    }
    return NULL;
}

char *
vbk_xml_prop(xmlNodePtr node, const char *name)
{
    xmlChar *val = xmlGetNoNsProp(node, (const xmlChar *) name);
    char *ret;

    if (!val)
        return NULL;
    ret = g_strdup((const char *) val);
    xmlFree(val);
    return ret;
}

char *
vbk_xml_node_text(xmlNodePtr node)
{
    xmlChar *val;
    char *ret = NULL;

    if (!node || !(val = xmlNodeGetContent(node)))
        return NULL;
    if (*val)
        ret = g_strdup((const char *) val);
    xmlFree(val);
    return ret;
}

char *
vbk_xml_child_text(xmlNodePtr parent, const char *name)
{
    return vbk_xml_node_text(vbk_xml_child(parent, name));
}

int
vbk_xml_enum_from_string(const char *const *table, const char *str)
{
    int i;

    for (i = 0; str && table[i]; i++) {
        if (strcmp(table[i], str) == 0)
            return i;
    }
    return -1;
}

int
vbk_xml_prop_enum(xmlNodePtr node,
                  const char *name,
                  const char *const *table,
                  gboolean required,
                  gboolean nonzero,
                  int *val,
                  GError **error)
{
    g_autofree char *str = vbk_xml_prop(node, name);
    int v;

    if (!str) {
        if (!required)
            return 0;
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("Missing required attribute '%s' in element '%s'"), name,
                    (const char *) node->name);
        return -1;
    }
    v = vbk_xml_enum_from_string(table, str);
    if (v < 0 || (nonzero && v == 0)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("Invalid value for attribute '%s' in element '%s': "
                      "'%s'."),
                    name, (const char *) node->name, str);
        return -1;
    }
    *val = v;
    return 1;
}

int
vbk_xml_prop_uint(xmlNodePtr node,
                  const char *name,
                  gboolean required,
                  guint *val,
                  GError **error)
{
    g_autofree char *str = vbk_xml_prop(node, name);
    guint64 v;

    if (!str) {
        if (!required)
            return 0;
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("Missing required attribute '%s' in element '%s'"), name,
                    (const char *) node->name);
        return -1;
    }
    if (!g_ascii_string_to_unsigned(str, 10, 0, G_MAXUINT, &v, NULL)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("Invalid value for attribute '%s' in element '%s': "
                      "'%s'. Expected integer value"),
                    name, (const char *) node->name, str);
        return -1;
    }
    *val = (guint) v;
    return 1;
}

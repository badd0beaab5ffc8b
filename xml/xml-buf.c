/*
 * xml-buf.c: writing XML exactly as libvirt's formatter writes it.
 *
 * libvirt builds its documents in a virBuffer that indents every new
 * line by the current depth; elements are assembled from an attribute
 * buffer and a child buffer, and vanish when both are empty. Attributes
 * are single-quoted, indentation is two spaces per level, there is no
 * XML declaration, and text is escaped with &lt; &gt; &amp; &apos;
 * &quot;. For example, formatting a disk with no children gives
 *
 *     <disk name='vdb' backup='no'/>
 *
 * and with children
 *
 *     <disk name='vda' backup='yes' type='file'>
 *       <target file='/a'/>
 *     </disk>
 *
 * vbk_xml_buf_node() writes a parsed subtree in that same layout, which
 * is how parts of a <domain> that vbackup does not model survive a
 * parse/format round trip unchanged.
 */
#include "xml-util.h"

#include <string.h>

void
vbk_xml_buf_init(VbkXmlBuf *buf, int indent)
{
    buf->str = g_string_new(NULL);
    buf->indent = indent;
}

void
vbk_xml_buf_init_child(VbkXmlBuf *buf, const VbkXmlBuf *parent)
{
    vbk_xml_buf_init(buf, parent->indent + 2);
}

void
vbk_xml_buf_clear(VbkXmlBuf *buf)
{
    if (buf->str)
        g_string_free(buf->str, TRUE);
    buf->str = NULL;
}

gboolean
vbk_xml_buf_is_empty(const VbkXmlBuf *buf)
{
    return !buf || !buf->str || buf->str->len == 0;
}

char *
vbk_xml_buf_steal(VbkXmlBuf *buf)
{
    char *ret = g_string_free(buf->str, FALSE);

    buf->str = NULL;
    return ret;
}

static gboolean
at_line_start(const VbkXmlBuf *buf)
{
    return buf->str->len == 0 || buf->str->str[buf->str->len - 1] == '\n';
}

/* Like virBuffer: indentation is applied once per call, when the call
 * starts a new line; newlines inside @text are kept verbatim. */
static void
buf_add_len(VbkXmlBuf *buf, const char *text, gsize len)
{
    if (len == 0)
        return;
    if (buf->indent > 0 && at_line_start(buf)) {
        int n;
        for (n = 0; n < buf->indent; n++)
            g_string_append_c(buf->str, ' ');
    }
    g_string_append_len(buf->str, text, len);
}

void
vbk_xml_buf_add(VbkXmlBuf *buf, const char *text)
{
    buf_add_len(buf, text, strlen(text));
}

void
vbk_xml_buf_printf(VbkXmlBuf *buf, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *text = NULL;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    vbk_xml_buf_add(buf, text);
}

static void
buf_escape(VbkXmlBuf *buf, const char *text, gboolean attr)
{
    GString *out = g_string_sized_new(strlen(text) + 16);
    const unsigned char *p;

    for (p = (const unsigned char *) text; *p; p++) {
        switch (*p) {
        case '<':
            g_string_append(out, "&lt;");
            break;
        case '>':
            g_string_append(out, "&gt;");
            break;
        case '&':
            g_string_append(out, "&amp;");
            break;
        case '"':
            g_string_append(out, "&quot;");
            break;
        case '\'':
            g_string_append(out, "&apos;");
            break;
        case '\t':
        case '\n':
        case '\r':
            /* libvirt writes these raw, but a parser turns them into
             * spaces inside an attribute; keep them as references there
             * so that what vbackup writes reads back the same */
            if (attr)
                g_string_append_printf(out, "&#%d;", *p);
            else
                g_string_append_c(out, *p);
            break;
        default:
            if (*p < 0x20)
                break;
            g_string_append_c(out, *p);
        }
    }
    buf_add_len(buf, out->str, out->len);
    g_string_free(out, TRUE);
}

void
vbk_xml_buf_escape(VbkXmlBuf *buf, const char *text)
{
    buf_escape(buf, text, FALSE);
}

void
vbk_xml_buf_attr(VbkXmlBuf *buf, const char *name, const char *value)
{
    if (!value)
        return;
    vbk_xml_buf_printf(buf, " %s='", name);
    buf_escape(buf, value, TRUE);
    vbk_xml_buf_add(buf, "'");
}

void
vbk_xml_buf_text_element(VbkXmlBuf *buf, const char *name, const char *value)
{
    if (!value)
        return;
    vbk_xml_buf_printf(buf, "<%s>", name);
    vbk_xml_buf_escape(buf, value);
    vbk_xml_buf_printf(buf, "</%s>\n", name);
}

void
vbk_xml_buf_element(VbkXmlBuf *buf,
                    const char *name,
                    VbkXmlBuf *attrs,
                    VbkXmlBuf *children)
{
    gboolean no_attrs = vbk_xml_buf_is_empty(attrs);
    gboolean no_children = vbk_xml_buf_is_empty(children);

    if (!no_attrs || !no_children) {
        vbk_xml_buf_printf(buf, "<%s", name);
        if (!no_attrs)
            vbk_xml_buf_add(buf, attrs->str->str);
        if (no_children) {
            vbk_xml_buf_add(buf, "/>\n");
        } else {
            vbk_xml_buf_add(buf, ">\n");
            /* the child buffer is already indented */
            g_string_append(buf->str, children->str->str);
            vbk_xml_buf_printf(buf, "</%s>\n", name);
        }
    }
    if (attrs)
        vbk_xml_buf_clear(attrs);
    if (children)
        vbk_xml_buf_clear(children);
}

/* ---- generic subtree writer ------------------------------------------ */

static char *
qname(xmlNsPtr ns, const xmlChar *name)
{
    if (ns && ns->prefix)
        return g_strdup_printf("%s:%s", (const char *) ns->prefix,
                               (const char *) name);
    return g_strdup((const char *) name);
}

static void
buf_node_attrs(VbkXmlBuf *attrs, xmlNodePtr node, VbkXmlAttrSkipFunc skip)
{
    xmlAttrPtr attr;
    xmlNsPtr ns;

    for (attr = node->properties; attr; attr = attr->next) {
        g_autofree char *name = NULL;
        xmlChar *val;

        if (skip && skip(node, attr))
            continue;
        name = qname(attr->ns, attr->name);
        val = xmlNodeListGetString(node->doc, attr->children, 1);
        vbk_xml_buf_printf(attrs, " %s='", name);
        buf_escape(attrs, val ? (const char *) val : "", TRUE);
        vbk_xml_buf_add(attrs, "'");
        xmlFree(val);
    }
    for (ns = node->nsDef; ns; ns = ns->next) {
        if (ns->prefix)
            vbk_xml_buf_printf(attrs, " xmlns:%s='", (const char *) ns->prefix);
        else
            vbk_xml_buf_add(attrs, " xmlns='");
        buf_escape(attrs, (const char *) ns->href, TRUE);
        vbk_xml_buf_add(attrs, "'");
    }
}

static gboolean
is_blank(const xmlChar *s)
{
    for (; s && *s; s++) {
        if (!g_ascii_isspace(*s))
            return FALSE;
    }
    return TRUE;
}

void
vbk_xml_buf_node(VbkXmlBuf *buf, xmlNodePtr node, VbkXmlAttrSkipFunc skip)
{
    VbkXmlBuf attrs;
    VbkXmlBuf children;
    GString *text = g_string_new(NULL);
    gboolean has_elements = FALSE;
    g_autofree char *name = NULL;
    xmlNodePtr cur;

    if (node->type != XML_ELEMENT_NODE) {
        g_string_free(text, TRUE);
        return;
    }
    name = qname(node->ns, node->name);
    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_init_child(&children, buf);
    buf_node_attrs(&attrs, node, skip);

    for (cur = node->children; cur; cur = cur->next) {
        if (cur->type == XML_ELEMENT_NODE) {
            has_elements = TRUE;
            vbk_xml_buf_node(&children, cur, skip);
        } else if ((cur->type == XML_TEXT_NODE ||
                    cur->type == XML_CDATA_SECTION_NODE) &&
                   cur->content) {
            g_string_append(text, (const char *) cur->content);
        }
    }

    vbk_xml_buf_printf(buf, "<%s", name);
    vbk_xml_buf_add(buf, attrs.str->str);

    if (has_elements) {
        vbk_xml_buf_add(buf, ">\n");
        if (!is_blank((const xmlChar *) text->str)) {
            VbkXmlBuf t;
            vbk_xml_buf_init_child(&t, buf);
            vbk_xml_buf_escape(&t, g_strstrip(text->str));
            vbk_xml_buf_add(&t, "\n");
            g_string_append(buf->str, t.str->str);
            vbk_xml_buf_clear(&t);
        }
        g_string_append(buf->str, children.str->str);
        vbk_xml_buf_printf(buf, "</%s>\n", name);
    } else if (text->len > 0 && !(is_blank((const xmlChar *) text->str) &&
                                  strchr(text->str, '\n'))) {
        vbk_xml_buf_add(buf, ">");
        vbk_xml_buf_escape(buf, text->str);
        vbk_xml_buf_printf(buf, "</%s>\n", name);
    } else {
        vbk_xml_buf_add(buf, "/>\n");
    }
    vbk_xml_buf_clear(&attrs);
    vbk_xml_buf_clear(&children);
    g_string_free(text, TRUE);
}

/*
 * xml-util.h: shared helpers of the XML layer: error codes, hardened
 * parsing, RelaxNG validation, attribute helpers and the libvirt-style
 * output buffer.
 */
#pragma once

#include <glib.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/relaxng.h>

G_BEGIN_DECLS

/* Same value and meaning as VBK_XML_ERROR in <vbackup/vbackup-error.h>;
 * the xml layer defines its own quark so that it does not link core/. */
#ifndef VBK_XML_ERROR
#define VBK_XML_ERROR (vbk_xml_error_quark())
#endif
GQuark vbk_xml_error_quark(void);

/* Error codes: exactly libvirt's virErrorNumber values (virterror.h). */
typedef enum {
    VBK_XML_ERR_INTERNAL_ERROR = 1,
    VBK_XML_ERR_INVALID_ARG = 8,
    VBK_XML_ERR_OPERATION_FAILED = 9,
    VBK_XML_ERR_NO_TARGET = 20,
    VBK_XML_ERR_NO_NAME = 21,
    VBK_XML_ERR_XML_ERROR = 27,
    VBK_XML_ERR_OPERATION_DENIED = 29,
    VBK_XML_ERR_XML_DETAIL = 35,
    VBK_XML_ERR_OPERATION_INVALID = 55,
    VBK_XML_ERR_CONFIG_UNSUPPORTED = 67,
    VBK_XML_ERR_XML_INVALID_SCHEMA = 92,
} VbkXmlErrorCode;

/* The message as libvirt's virErrorMsg() presents it: the category
 * prefix of @err's code followed by its message, e.g.
 * "unsupported configuration: no disk named 'vdz'". (transfer full) */
char *vbk_xml_error_format_full(const GError *err);

/* Largest document accepted, in bytes (virsh's limit for XML files). */
#define VBK_XML_MAX_DOC_SIZE (10 * 1024 * 1024)
/* Deepest element nesting accepted. */
#define VBK_XML_MAX_DEPTH 200

/* Parse @len bytes of @str (len -1: NUL-terminated) into a document
 * whose root element must be @root. @label names the input in syntax
 * errors, as libvirt does ("(domain_backup)"). Never touches the
 * network, never loads a DTD, rejects any DOCTYPE (hence any entity
 * declaration), documents over VBK_XML_MAX_DOC_SIZE and nesting deeper
 * than VBK_XML_MAX_DEPTH. */
xmlDocPtr vbk_xml_parse(const char *str,
                        gssize len,
                        const char *label,
                        const char *root,
                        GError **error);

/* Directory of libvirt's RelaxNG schemas: $VBK_LIBVIRT_SCHEMA_DIR or
 * /usr/share/libvirt/schemas. */
const char *vbk_xml_schema_dir(void);

/* TRUE if the schema file @name exists in vbk_xml_schema_dir(). */
gboolean vbk_xml_schema_available(const char *name);

/* Validate @doc against the schema file @name (e.g. "domainbackup.rng")
 * like libvirt's virXMLValidateAgainstSchema; failure gives
 * VBK_XML_ERR_XML_INVALID_SCHEMA. Compiled schemas are cached. */
gboolean vbk_xml_validate(xmlDocPtr doc, const char *name, GError **error);

/* Attribute and child helpers. Names compare without namespace. */
gboolean vbk_xml_node_is(xmlNodePtr node, const char *name);
xmlNodePtr vbk_xml_child(xmlNodePtr parent, const char *name);
char *vbk_xml_prop(xmlNodePtr node, const char *name);
/* Text of the first child element @name like XPath string(): NULL when
 * absent or empty. */
char *vbk_xml_child_text(xmlNodePtr parent, const char *name);
char *vbk_xml_node_text(xmlNodePtr node);

/* Look @str up in the NULL-terminated @table; index or -1. */
int vbk_xml_enum_from_string(const char *const *table, const char *str);

/* Typed attribute lookups reporting libvirt's uniform messages.
 * Return 1 when the attribute was found, 0 when absent (and not
 * @required), -1 on error. With @nonzero the first table entry is not
 * an accepted value. */
int vbk_xml_prop_enum(xmlNodePtr node,
                      const char *name,
                      const char *const *table,
                      gboolean required,
                      gboolean nonzero,
                      int *val,
                      GError **error);
int vbk_xml_prop_uint(xmlNodePtr node,
                      const char *name,
                      gboolean required,
                      guint *val,
                      GError **error);

/* "" "yes" "no": index 0 means absent. */
typedef enum {
    VBK_TRISTATE_ABSENT = 0,
    VBK_TRISTATE_YES,
    VBK_TRISTATE_NO,
} VbkTristate;
extern const char *const vbk_tristate_names[];

/* ---- output ---------------------------------------------------------- */

/* A growing string that indents every line it starts, like virBuffer. */
typedef struct {
    GString *str;
    int indent;
} VbkXmlBuf;

void vbk_xml_buf_init(VbkXmlBuf *buf, int indent);
/* A buffer for the children of an element written to @parent. */
void vbk_xml_buf_init_child(VbkXmlBuf *buf, const VbkXmlBuf *parent);
void vbk_xml_buf_clear(VbkXmlBuf *buf);
gboolean vbk_xml_buf_is_empty(const VbkXmlBuf *buf);
char *vbk_xml_buf_steal(VbkXmlBuf *buf);
void vbk_xml_buf_add(VbkXmlBuf *buf, const char *text);
void vbk_xml_buf_printf(VbkXmlBuf *buf, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
/* Append @text escaped the way libvirt escapes attribute values and
 * text: & < > ' " become entities, other control characters except
 * tab, newline and carriage return are dropped. Inside attributes
 * (vbk_xml_buf_attr) tab, newline and carriage return are written as
 * character references, since a parser would read them as spaces. */
void vbk_xml_buf_escape(VbkXmlBuf *buf, const char *text);
/* " name='value'" (escaped), nothing when @value is NULL. */
void vbk_xml_buf_attr(VbkXmlBuf *buf, const char *name, const char *value);
/* "<name>value</name>\n" (escaped), nothing when @value is NULL. */
void
vbk_xml_buf_text_element(VbkXmlBuf *buf, const char *name, const char *value);
/* Write <name ATTRS/> or <name ATTRS>\nCHILDREN</name>, or nothing if
 * both buffers are empty (NULL counts as empty); clears both. */
void vbk_xml_buf_element(VbkXmlBuf *buf,
                         const char *name,
                         VbkXmlBuf *attrs,
                         VbkXmlBuf *children);
/* Write an element subtree in libvirt's layout, keeping attribute and
 * child order: single quotes, two-space indent, comments dropped,
 * whitespace-only text between elements dropped. @skip, if non-NULL,
 * is asked for every attribute and may drop it. */
typedef gboolean (*VbkXmlAttrSkipFunc)(xmlNodePtr elem, xmlAttrPtr attr);
void vbk_xml_buf_node(VbkXmlBuf *buf, xmlNodePtr node, VbkXmlAttrSkipFunc skip);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)

G_END_DECLS

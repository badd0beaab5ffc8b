/*
 * node-conf.h: the libvirt test driver's <node> fixture format.
 */
#pragma once

#include "xml-util.h"
#include "domain-conf.h"

G_BEGIN_DECLS

typedef struct {
    GPtrArray *domains; /* VbkDomainDef, document order */
    guint cpu_mhz;      /* <cpu><mhz>, 0 if absent */
    guint cpu_nodes, cpu_sockets, cpu_cores, cpu_threads, cpu_active;
    char *cpu_model;
    guint64 memory_kib; /* <memory>, 0 if absent */
} VbkNodeDef;

void vbk_node_def_free(VbkNodeDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkNodeDef, vbk_node_def_free)

/* Parse a <node> document. <domain file='x.xml'/> references are read
 * relative to @base_dir (NULL: refused), each at most
 * VBK_XML_MAX_DOC_SIZE; inline <domain> elements are parsed in place.
 * Networks, interfaces, pools and devices are not vbackup's business
 * and are skipped. */
VbkNodeDef *vbk_node_def_parse_string(const char *xml,
                                      const char *base_dir,
                                      GError **error);
VbkNodeDef *vbk_node_def_parse_file(const char *path, GError **error);

/* Load either a <node> or a single <domain> document from @path into a
 * node def (a bare domain becomes a node holding that one domain). */
VbkNodeDef *vbk_node_def_load_fixture(const char *path, GError **error);

VbkDomainDef *vbk_node_def_find_domain(const VbkNodeDef *def, const char *name);

G_END_DECLS

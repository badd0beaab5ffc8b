/*
 * domain-conf.h: the subset of libvirt's <domain> that backups need,
 * kept losslessly: every element vbackup does not model is written back
 * as it was read.
 */
#pragma once

#include "xml-util.h"
#include "storage-conf.h"

G_BEGIN_DECLS

typedef enum {
    VBK_DOMAIN_DISK_DEVICE_DISK = 0,
    VBK_DOMAIN_DISK_DEVICE_CDROM,
    VBK_DOMAIN_DISK_DEVICE_FLOPPY,
    VBK_DOMAIN_DISK_DEVICE_LUN,
} VbkDomainDiskDevice;

/* One layer of a disk's storage chain: the disk's own <source> and
 * then each <backingStore>. */
typedef struct _VbkDomainStorage VbkDomainStorage;
struct _VbkDomainStorage {
    VbkStorageType type;
    char *path;   /* file, dev, dir, or network name; NULL if empty */
    char *format; /* driver/@type or format/@type; NULL if unset */
    guint index;  /* backingStore/@index, 0 if none */
    VbkDomainStorage *backing; /* next layer down, or NULL */
};

typedef struct {
    VbkDomainDiskDevice device;
    char *driver_name;
    VbkDomainStorage *src; /* never NULL */
    char *dst;             /* target/@dev */
    char *bus;             /* target/@bus */
    gboolean readonly;     /* <readonly/>, or a cdrom */
    gboolean shareable;
    xmlNodePtr node; /* the <disk> element inside the owning def */
} VbkDomainDisk;

typedef struct {
    xmlDocPtr doc;   /* owns the whole <domain> element */
    char *virt_type; /* domain/@type */
    char *name;
    char uuid[37];      /* lower-case canonical form */
    guint64 memory_kib; /* 0 if absent */
    guint vcpus;        /* 0 if absent */
    char *os_type;
    char *os_arch;
    char *os_machine;
    GPtrArray *disks;  /* VbkDomainDisk, document order */
    int test_runstate; /* test:runstate (test driver), -1 absent */
    gboolean test_transient;
} VbkDomainDef;

typedef enum {
    /* validate against domain.rng before parsing */
    VBK_DOMAIN_PARSE_VALIDATE = 1 << 0,
} VbkDomainParseFlags;

typedef enum {
    /* keep security-sensitive data (graphics passwords) */
    VBK_DOMAIN_FORMAT_SECURE = 1 << 0,
} VbkDomainFormatFlags;

VbkDomainDef *
vbk_domain_def_parse_string(const char *xml, guint flags, GError **error);
/* Parse a <domain> element of another document (checkpoint, node);
 * the def keeps its own copy. */
VbkDomainDef *
vbk_domain_def_parse_node(xmlNodePtr node, guint flags, GError **error);
VbkDomainDef *vbk_domain_def_copy(const VbkDomainDef *def);
void vbk_domain_def_free(VbkDomainDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkDomainDef, vbk_domain_def_free)

/* Formatting: libvirt's layout, all unmodeled content kept. */
void
vbk_domain_def_format_buf(VbkXmlBuf *buf, const VbkDomainDef *def, guint flags);
char *vbk_domain_def_format(const VbkDomainDef *def, guint flags);

/* The disk whose target is @name, or else the single disk whose source
 * path is the absolute path @name (as virDomainDiskByName). */
VbkDomainDisk *vbk_domain_def_find_disk(const VbkDomainDef *def,
                                        const char *name);
/* By target only. */
VbkDomainDisk *vbk_domain_def_disk_by_target(const VbkDomainDef *def,
                                             const char *dst);
/* Index of @disk in def->disks. */
int vbk_domain_def_disk_index(const VbkDomainDef *def,
                              const VbkDomainDisk *disk);

/* No medium: no source path (an empty cdrom, say). */
gboolean vbk_domain_disk_is_empty(const VbkDomainDisk *disk);

/* Change the top image of @disk; @format may be NULL to keep it. The
 * document is updated so the change is formatted. */
void vbk_domain_disk_set_source(VbkDomainDisk *disk,
                                const char *path,
                                const char *format);

G_END_DECLS

/*
 * storage-conf.h: the storage of a backup target or scratch image:
 * <target|scratch file=|dev=> with <seclabel> and <encryption>.
 */
#pragma once

#include "xml-util.h"

G_BEGIN_DECLS

typedef enum {
    VBK_STORAGE_TYPE_NONE = 0,
    VBK_STORAGE_TYPE_FILE,
    VBK_STORAGE_TYPE_BLOCK,
    VBK_STORAGE_TYPE_DIR,
    VBK_STORAGE_TYPE_NETWORK,
    VBK_STORAGE_TYPE_VOLUME,
    VBK_STORAGE_TYPE_NVME,
    VBK_STORAGE_TYPE_VHOST_USER,
    VBK_STORAGE_TYPE_LAST
} VbkStorageType;
extern const char *const vbk_storage_type_names[];

/* libvirt's virStorageFileFormat names; 0 ("none") means unset. */
typedef enum {
    VBK_STORAGE_FORMAT_NONE = 0,
    VBK_STORAGE_FORMAT_RAW,
    VBK_STORAGE_FORMAT_QCOW2 = 14,
} VbkStorageFormat;
extern const char *const vbk_storage_format_names[];

typedef struct {
    char *model;
    gboolean relabel;
    char *label;
} VbkSeclabel;

typedef struct {
    char *uuid; /* exactly one of uuid and usage is set */
    char *usage;
} VbkEncryptionSecret;

typedef enum {
    VBK_ENCRYPTION_FORMAT_DEFAULT = 0,
    VBK_ENCRYPTION_FORMAT_QCOW,
    VBK_ENCRYPTION_FORMAT_LUKS,
    VBK_ENCRYPTION_FORMAT_LUKS2,
} VbkEncryptionFormat;

typedef struct {
    VbkEncryptionFormat format;
    int engine;         /* 0 default, 1 qemu, 2 librbd */
    GPtrArray *secrets; /* VbkEncryptionSecret */
    char *cipher_name;
    guint cipher_size;
    char *cipher_mode;
    char *cipher_hash;
    char *ivgen_name;
    char *ivgen_hash;
} VbkEncryption;

typedef struct {
    VbkStorageType type;
    char *path;                /* file= or dev=; NULL when not given */
    int format;                /* VbkStorageFormat index, 0 unset */
    guint id;                  /* >0: printed as index='N' */
    GPtrArray *seclabels;      /* VbkSeclabel */
    VbkEncryption *encryption; /* or NULL */
} VbkStorageSource;

VbkStorageSource *vbk_storage_source_new(VbkStorageType type);
void vbk_storage_source_free(VbkStorageSource *src);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkStorageSource, vbk_storage_source_free)

/* Fill @src (whose type is set) from the <target>/<scratch> element
 * @node: path, seclabels, encryption. */
gboolean vbk_storage_source_parse(VbkStorageSource *src,
                                  xmlNodePtr node,
                                  GError **error);

/* Write <@elem file|dev='...'>seclabels, encryption</@elem>. */
void vbk_storage_source_format(VbkXmlBuf *buf,
                               const VbkStorageSource *src,
                               const char *elem);

G_END_DECLS

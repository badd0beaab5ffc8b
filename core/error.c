/*
 * error.c: the GError domains of libvbackup.
 */
#include <vbackup/vbackup.h>

G_DEFINE_QUARK(vbk-block-error-quark, vbk_block_error)
G_DEFINE_QUARK(vbk-job-error-quark, vbk_job_error)

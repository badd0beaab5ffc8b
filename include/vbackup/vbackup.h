/*
 * vbackup.h: the umbrella header of libvbackup, vbackup's public C API.
 *
 * libvbackup is shaped after libvirt's public API: a connection holds
 * domains, a domain has checkpoints and at most one backup job.  The block
 * layer beneath it (core/) is internal; the QMP door and the libvirt driver
 * reach it through core's own headers.
 */
#pragma once

#define VBK_H_INSIDE
#include <vbackup/vbackup-version.h>
#include <vbackup/vbackup-error.h>
#undef VBK_H_INSIDE

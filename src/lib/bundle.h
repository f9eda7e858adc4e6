/* bundle.h - reading and rewriting an OCI bundle's config.json.
 *
 * The source reads the container's config to find its rootfs and its local
 * volumes (bind mounts from the host).  The target writes a new config whose
 * paths point at its own directories: the received rootfs, the received
 * volumes, and a cgroup path of its own.  Everything else (limits,
 * namespaces, process) is kept as it was.
 */
#ifndef VY_BUNDLE_H
#define VY_BUNDLE_H

#include <limits.h>
#include <stdbool.h>

#include <json-c/json.h>

#include "error.h"

#define VY_MAX_VOLUMES 64

struct vy_volume {
	int mount_index;               /* index in config "mounts" */
	char ctr_path[PATH_MAX];       /* destination inside the container */
	char host_path[PATH_MAX];      /* source on this host */
	bool is_dir;
	bool shared;                   /* network storage: re-mounted, never copied */
};

int vy_bundle_load(const char *bundle_dir, json_object **config, vy_error *err);
/* Absolute path of the rootfs (root.path, relative to the bundle). */
int vy_bundle_rootfs(json_object *config, const char *bundle_dir, char *out,
		     size_t outlen, vy_error *err);
/* The container's local volumes: bind mounts whose source is not under
 * /proc, /sys or /dev.  Fills at most VY_MAX_VOLUMES. */
/* The name of the network filesystem path lives on (nfs, cifs, ceph, ...),
 * or NULL for local storage. */
const char *vy_network_fs(const char *path);

int vy_bundle_volumes(json_object *config, struct vy_volume *vols, int *count,
		      vy_error *err);
/* Point root.path at rootfs, each volume's mount source at its new
 * host_path, and (if cgroups_path is not NULL) linux.cgroupsPath. */
int vy_bundle_rewrite(json_object *config, const char *rootfs,
		      const struct vy_volume *vols, int count,
		      const char *cgroups_path, vy_error *err);
/* The network namespace path given in linux.namespaces, or NULL when the
 * runtime makes a fresh one (or the container shares the host's). */
const char *vy_bundle_netns_path(json_object *config);
/* Set that path (the namespace entry must exist). */
int vy_bundle_set_netns_path(json_object *config, const char *path, vy_error *err);
/* Write config.json into bundle_dir (atomically). */
int vy_bundle_save(json_object *config, const char *bundle_dir, vy_error *err);

#endif

/* bundle.c - see bundle.h. */
#include "bundle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "cleanup.h"
#include "util.h"

int vy_bundle_load(const char *bundle_dir, json_object **config, vy_error *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/config.json", bundle_dir) >= (int)sizeof(path))
		return vy_error_set(err, ENAMETOOLONG, "bundle path too long");
	cleanup_free char *text = NULL;
	if (vy_read_file(path, 4u << 20, &text, NULL, err) < 0)
		return vy_error_wrap(err, "read bundle config");
	json_tokener *tok = json_tokener_new();
	json_object *o = json_tokener_parse_ex(tok, text, (int)strlen(text));
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!o || jerr != json_tokener_success || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return vy_error_set(err, EINVAL, "%s is not a JSON object", path);
	}
	*config = o;
	return 0;
}

int vy_bundle_rootfs(json_object *config, const char *bundle_dir, char *out,
		     size_t outlen, vy_error *err)
{
	json_object *root;
	if (!json_object_object_get_ex(config, "root", &root))
		return vy_error_set(err, EINVAL, "config.json has no root");
	const char *p = vy_json_str(root, "path", NULL);
	if (!p || !*p)
		return vy_error_set(err, EINVAL, "config.json has no root.path");
	int n = p[0] == '/' ? snprintf(out, outlen, "%s", p)
			    : snprintf(out, outlen, "%s/%s", bundle_dir, p);
	if (n < 0 || (size_t)n >= outlen)
		return vy_error_set(err, ENAMETOOLONG, "rootfs path too long");
	return 0;
}

static bool has_bind_option(json_object *mount)
{
	if (!strcmp(vy_json_str(mount, "type", ""), "bind"))
		return true;
	json_object *opts;
	if (!json_object_object_get_ex(mount, "options", &opts) ||
	    !json_object_is_type(opts, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(opts); i++) {
		const char *o = json_object_get_string(json_object_array_get_idx(opts, i));
		if (o && (!strcmp(o, "bind") || !strcmp(o, "rbind")))
			return true;
	}
	return false;
}

static bool under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

const char *vy_network_fs(const char *path)
{
	static const struct {
		unsigned long magic;
		const char *name;
	} kinds[] = {
		{ 0x6969, "nfs" },       { 0x517b, "smb" },      { 0xfe534d42, "smb2" },
		{ 0xff534d42, "cifs" },  { 0x00c36400, "ceph" }, { 0x01021997, "9p" },
		{ 0x5346414f, "afs" },   { 0x01161970, "gfs2" }, { 0x7461636f, "ocfs2" },
		{ 0x0bd00bd0, "lustre" },
	};
	struct statfs sf;
	if (statfs(path, &sf) < 0)
		return NULL;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if ((unsigned long)sf.f_type == kinds[i].magic)
			return kinds[i].name;
	return NULL;
}

int vy_bundle_volumes(json_object *config, struct vy_volume *vols, int *count,
		      vy_error *err)
{
	*count = 0;
	json_object *mounts;
	if (!json_object_object_get_ex(config, "mounts", &mounts))
		return 0;
	if (!json_object_is_type(mounts, json_type_array))
		return vy_error_set(err, EINVAL, "config.json mounts is not an array");
	for (size_t i = 0; i < json_object_array_length(mounts); i++) {
		json_object *m = json_object_array_get_idx(mounts, i);
		const char *src = vy_json_str(m, "source", "");
		const char *dst = vy_json_str(m, "destination", "");
		if (!has_bind_option(m) || src[0] != '/')
			continue;
		if (under(src, "/proc") || under(src, "/sys") || under(src, "/dev"))
			continue;
		if (*count == VY_MAX_VOLUMES)
			return vy_error_set(err, E2BIG, "more than %d bind mounts",
					    VY_MAX_VOLUMES);
		struct stat st;
		if (stat(src, &st) < 0)
			return vy_error_sys(err, errno, "volume source %s", src);
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			return vy_error_set(err, EINVAL,
					    "volume source %s is neither a directory nor a file", src);
		struct vy_volume *v = &vols[(*count)++];
		v->mount_index = (int)i;
		v->is_dir = S_ISDIR(st.st_mode);
		snprintf(v->ctr_path, sizeof(v->ctr_path), "%s", dst);
		snprintf(v->host_path, sizeof(v->host_path), "%s", src);
	}
	return 0;
}

int vy_bundle_rewrite(json_object *config, const char *rootfs,
		      const struct vy_volume *vols, int count,
		      const char *cgroups_path, vy_error *err)
{
	json_object *root;
	if (!json_object_object_get_ex(config, "root", &root) ||
	    !json_object_is_type(root, json_type_object))
		return vy_error_set(err, EINVAL, "config.json has no root object");
	json_object_object_add(root, "path", json_object_new_string(rootfs));
	json_object *mounts = NULL;
	json_object_object_get_ex(config, "mounts", &mounts);
	for (int i = 0; i < count; i++) {
		json_object *m = mounts ? json_object_array_get_idx(mounts, (size_t)vols[i].mount_index) : NULL;
		if (!m)
			return vy_error_set(err, EINVAL, "volume %d has no mount entry", i);
		json_object_object_add(m, "source", json_object_new_string(vols[i].host_path));
	}
	if (cgroups_path) {
		json_object *linux_obj;
		if (!json_object_object_get_ex(config, "linux", &linux_obj) ||
		    !json_object_is_type(linux_obj, json_type_object))
			return vy_error_set(err, EINVAL, "config.json has no linux object");
		json_object_object_add(linux_obj, "cgroupsPath",
				       json_object_new_string(cgroups_path));
	}
	return 0;
}

int vy_bundle_save(json_object *config, const char *bundle_dir, vy_error *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/config.json", bundle_dir) >= (int)sizeof(path))
		return vy_error_set(err, ENAMETOOLONG, "bundle path too long");
	const char *s = json_object_to_json_string_ext(config, JSON_C_TO_STRING_PRETTY |
								       JSON_C_TO_STRING_NOSLASHESCAPE);
	return vy_write_file_atomic(path, s, strlen(s), 0644, err);
}

static json_object *netns_entry(json_object *config)
{
	json_object *linux_obj, *nss;
	if (!json_object_object_get_ex(config, "linux", &linux_obj) ||
	    !json_object_object_get_ex(linux_obj, "namespaces", &nss) ||
	    !json_object_is_type(nss, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(nss); i++) {
		json_object *ns = json_object_array_get_idx(nss, i);
		if (!strcmp(vy_json_str(ns, "type", ""), "network"))
			return ns;
	}
	return NULL;
}

const char *vy_bundle_netns_path(json_object *config)
{
	const char *p = vy_json_str(netns_entry(config), "path", NULL);
	return p && *p ? p : NULL;
}

int vy_bundle_set_netns_path(json_object *config, const char *path, vy_error *err)
{
	json_object *ns = netns_entry(config);
	if (!ns)
		return vy_error_set(err, EINVAL, "config.json has no network namespace");
	json_object_object_add(ns, "path", json_object_new_string(path));
	return 0;
}

/* test_bundle.c - finding a bundle's rootfs and volumes, and rewriting its
 * paths for the target; also CRIU version parsing used by the pre-flight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "preflight.h"
#include "unit.h"
#include "util.h"

static char tmp[64];

static json_object *config_with_mounts(const char *vol_dir, const char *vol_file)
{
	char text[4096];
	snprintf(text, sizeof(text),
		 "{\"root\":{\"path\":\"rootfs\"},\"linux\":{\"cgroupsPath\":\"/a/b\"},"
		 "\"mounts\":["
		 "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
		 "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\"},"
		 "{\"destination\":\"/data\",\"type\":\"none\",\"source\":\"%s\",\"options\":[\"rbind\",\"rw\"]},"
		 "{\"destination\":\"/dev/kvm\",\"type\":\"bind\",\"source\":\"/dev/null\"},"
		 "{\"destination\":\"/etc/app.conf\",\"type\":\"bind\",\"source\":\"%s\"}"
		 "]}",
		 vol_dir, vol_file);
	return json_tokener_parse(text);
}

static void test_rootfs_and_volumes(void)
{
	char vdir[128], vfile[128];
	snprintf(vdir, sizeof(vdir), "%s/vol", tmp);
	snprintf(vfile, sizeof(vfile), "%s/app.conf", tmp);
	mkdir(vdir, 0755);
	FILE *f = fopen(vfile, "w");
	fputs("x\n", f);
	fclose(f);
	json_object *c = config_with_mounts(vdir, vfile);
	char root[4096];
	CHECK(vy_bundle_rootfs(c, "/b/x", root, sizeof(root), NULL) == 0);
	CHECK(!strcmp(root, "/b/x/rootfs"));
	struct vy_volume v[VY_MAX_VOLUMES];
	int n = -1;
	CHECK(vy_bundle_volumes(c, v, &n, NULL) == 0);
	CHECK(n == 2); /* /dev/null and the non-bind mounts are not volumes */
	CHECK(n == 2 && v[0].is_dir && !strcmp(v[0].ctr_path, "/data") && v[0].mount_index == 2);
	CHECK(n == 2 && !v[1].is_dir && !strcmp(v[1].host_path, vfile) && v[1].mount_index == 4);
	json_object_put(c);
}

static void test_missing_volume_source(void)
{
	json_object *c = config_with_mounts("/nonexistent/vy-volume", "/nonexistent/f");
	struct vy_volume v[VY_MAX_VOLUMES];
	int n;
	vy_error err;
	CHECK(vy_bundle_volumes(c, v, &n, &err) < 0);
	CHECK(strstr(err.msg, "/nonexistent/vy-volume") != NULL);
	json_object_put(c);
}

static void test_rewrite(void)
{
	char vdir[128], vfile[128];
	snprintf(vdir, sizeof(vdir), "%s/vol", tmp);
	snprintf(vfile, sizeof(vfile), "%s/app.conf", tmp);
	json_object *c = config_with_mounts(vdir, vfile);
	struct vy_volume v[VY_MAX_VOLUMES];
	int n;
	CHECK(vy_bundle_volumes(c, v, &n, NULL) == 0);
	snprintf(v[0].host_path, sizeof(v[0].host_path), "/t/volumes/0");
	snprintf(v[1].host_path, sizeof(v[1].host_path), "/t/volumes/1/app.conf");
	CHECK(vy_bundle_rewrite(c, "/t/bundle/rootfs", v, n, "/vyparent/ctr", NULL) == 0);
	CHECK(!strcmp(vy_json_str(json_object_object_get(c, "root"), "path", ""), "/t/bundle/rootfs"));
	CHECK(!strcmp(vy_json_str(json_object_object_get(c, "linux"), "cgroupsPath", ""), "/vyparent/ctr"));
	json_object *m = json_object_object_get(c, "mounts");
	CHECK(!strcmp(vy_json_str(json_object_array_get_idx(m, 2), "source", ""), "/t/volumes/0"));
	CHECK(!strcmp(vy_json_str(json_object_array_get_idx(m, 4), "source", ""), "/t/volumes/1/app.conf"));
	CHECK(!strcmp(vy_json_str(json_object_array_get_idx(m, 0), "source", ""), "proc"));
	/* without a cgroup path the source's is kept */
	CHECK(vy_bundle_rewrite(c, "/r", v, n, NULL, NULL) == 0);
	CHECK(!strcmp(vy_json_str(json_object_object_get(c, "linux"), "cgroupsPath", ""), "/vyparent/ctr"));
	/* save + load round trip */
	CHECK(vy_bundle_save(c, tmp, NULL) == 0);
	json_object *back = NULL;
	CHECK(vy_bundle_load(tmp, &back, NULL) == 0);
	CHECK(back && json_object_equal(back, c));
	json_object_put(back);
	json_object_put(c);
}

static void test_bad_configs(void)
{
	vy_error err;
	json_object *c = json_tokener_parse("{\"mounts\": 3}");
	struct vy_volume v[VY_MAX_VOLUMES];
	int n;
	char root[256];
	CHECK(vy_bundle_volumes(c, v, &n, &err) < 0);
	CHECK(vy_bundle_rootfs(c, "/b", root, sizeof(root), &err) < 0);
	CHECK(strstr(err.msg, "root") != NULL);
	CHECK(vy_bundle_rewrite(c, "/r", v, 0, NULL, &err) < 0);
	json_object_put(c);
	char path[128];
	snprintf(path, sizeof(path), "%s/config.json", tmp);
	FILE *f = fopen(path, "w");
	fputs("[1,2", f);
	fclose(f);
	json_object *o = NULL;
	CHECK(vy_bundle_load(tmp, &o, &err) < 0 && o == NULL);
	CHECK(strstr(err.msg, "not a JSON object") != NULL);
}

static void test_criu_version(void)
{
	int a, b, c;
	CHECK(vy_parse_criu_version("Version: 4.2.1\n", &a, &b, &c) == 0 && a == 4 && b == 2 && c == 1);
	CHECK(vy_parse_criu_version("Version: 3.17\nGitID: x\n", &a, &b, &c) == 0 && a == 3 && b == 17 && c == 0);
	CHECK(vy_parse_criu_version("criu 4.2", &a, &b, &c) < 0);
	CHECK(vy_parse_criu_version("Version: x", &a, &b, &c) < 0);
}

static void test_memory_mode(void)
{
	/* The whole rule is in test_memory_modes.c; the old cases still hold. */
	const char *chosen = NULL;
	char why[256];
	vy_error err;
	struct vy_memory_caps no_pc = { .uffd = true, .runtime = "crun" };
	struct vy_memory_caps none = { .runtime = "runc" };
	struct vy_memory_caps sd = { .soft_dirty = true, .lazy_pages = true, .runtime = "runc" };
	CHECK(vy_memory_mode_choose("auto", &no_pc, &chosen, why, sizeof(why), NULL) == 0);
	CHECK(chosen && !strcmp(chosen, "stop-copy"));
	CHECK(strstr(why, "no soft-dirty") != NULL);
	CHECK(vy_memory_mode_choose("stop-copy", &none, &chosen, why, sizeof(why), NULL) == 0);
	CHECK(vy_memory_mode_choose("pre-copy", &no_pc, &chosen, why, sizeof(why), &err) < 0);
	CHECK(strstr(err.msg, "soft-dirty") != NULL);
	CHECK(vy_memory_mode_choose("post-copy", &sd, &chosen, why, sizeof(why), &err) < 0);
	CHECK(strstr(err.msg, "userfaultfd") != NULL);
	CHECK(vy_memory_mode_choose("lazy", &sd, &chosen, why, sizeof(why), &err) < 0);
	CHECK(strstr(err.msg, "unknown memory mode") != NULL);
}

static void test_names(void)
{
	CHECK(vy_name_is_safe("redis-1"));
	CHECK(vy_name_is_safe("a.b_c"));
	CHECK(!vy_name_is_safe(""));
	CHECK(!vy_name_is_safe(".hidden"));
	CHECK(!vy_name_is_safe("../x"));
	CHECK(!vy_name_is_safe("a/b"));
	CHECK(!vy_name_is_safe("a b"));
	char longname[200];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CHECK(!vy_name_is_safe(longname));
}

int main(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/vytest-XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	RUN(test_rootfs_and_volumes);
	RUN(test_missing_volume_source);
	RUN(test_rewrite);
	RUN(test_bad_configs);
	RUN(test_criu_version);
	RUN(test_names);
	RUN(test_memory_mode);
	vy_rm_rf(tmp, NULL);
	return unit_summary();
}

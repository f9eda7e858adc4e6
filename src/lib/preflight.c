/* preflight.c - see preflight.h. */
#include "preflight.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "cleanup.h"
#include "lazypages.h"
#include "util.h"

int vy_parse_criu_version(const char *text, int *major, int *minor, int *patch)
{
	const char *v = strstr(text, "Version:");
	if (!v)
		return -1;
	v += strlen("Version:");
	*major = *minor = *patch = 0;
	int n = sscanf(v, " %d.%d.%d", major, minor, patch);
	return n >= 2 ? 0 : -1;
}

int vy_criu_version(int *major, int *minor, int *patch, vy_error *err)
{
	char *argv[] = { "criu", "--version", NULL };
	struct vy_cmd_result res;
	if (vy_cmd_run(argv, 10000, &res, err) < 0)
		return vy_error_wrap(err, "CRIU is not installed (scripts/install-deps.sh installs 4.2)");
	int rc = vy_parse_criu_version(res.out, major, minor, patch);
	vy_cmd_result_free(&res);
	if (rc < 0)
		return vy_error_set(err, EINVAL, "cannot parse `criu --version`");
	return 0;
}

static int check_criu(json_object *facts, vy_error *err)
{
	int maj, min, pat;
	if (vy_criu_version(&maj, &min, &pat, err) < 0)
		return -1;
	char v[32];
	snprintf(v, sizeof(v), "%d.%d.%d", maj, min, pat);
	json_object_object_add(facts, "criu_version", json_object_new_string(v));
	if (maj < VY_CRIU_MIN_MAJOR || (maj == VY_CRIU_MIN_MAJOR && min < VY_CRIU_MIN_MINOR))
		return vy_error_set(err, ENOTSUP,
				    "CRIU %s is too old: Voyager needs >= %d.%d (on kernels >= 6.16 "
				    "older CRIU cannot dump TCP sockets); scripts/install-deps.sh "
				    "installs it from Debian forky",
				    v, VY_CRIU_MIN_MAJOR, VY_CRIU_MIN_MINOR);
	return 0;
}

static int check_kernel(json_object *facts, vy_error *err)
{
	struct utsname u;
	uname(&u);
	json_object_object_add(facts, "kernel", json_object_new_string(u.release));
	json_object_object_add(facts, "arch", json_object_new_string(u.machine));
	static const char *const need[] = { "/proc/self/ns/net", "/proc/self/ns/mnt",
					    "/proc/self/ns/pid", "/proc/self/ns/ipc",
					    "/proc/self/ns/uts" };
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (access(need[i], F_OK) != 0)
			return vy_error_set(err, ENOTSUP,
					    "kernel lacks a namespace CRIU needs (%s missing)", need[i]);
	if (access("/proc/sys/vm/unprivileged_userfaultfd", F_OK) == 0 ||
	    access("/dev/userfaultfd", F_OK) == 0)
		json_object_object_add(facts, "userfaultfd", json_object_new_boolean(1));
	if (geteuid() != 0)
		return vy_error_set(err, EPERM, "voyagerd must run as root (CRIU needs it)");
	return 0;
}

/* Post-copy needs CRIU's page server to size a 4 MiB pipe: above
 * fs.pipe-max-size that takes CAP_SYS_RESOURCE, which processes here lack
 * even as root.  Record both, so that the pre-flight can explain it. */
static void check_pipe_limit(json_object *facts)
{
	char *text = NULL;
	if (vy_read_file("/proc/sys/fs/pipe-max-size", 64, &text, NULL, NULL) == 0) {
		json_object_object_add(facts, "pipe_max_size",
				       json_object_new_int64(strtoll(text, NULL, 10)));
		free(text);
	}
	text = NULL;
	bool cap = false;
	if (vy_read_file("/proc/self/status", 1u << 16, &text, NULL, NULL) == 0) {
		const char *c = strstr(text, "CapEff:");
		if (c)
			cap = (strtoull(c + 7, NULL, 16) >> 24) & 1; /* CAP_SYS_RESOURCE */
		free(text);
	}
	json_object_object_add(facts, "cap_sys_resource", json_object_new_boolean(cap));
}

int vy_preflight_host(const struct vy_runtime *rt, json_object **facts,
		      vy_error *err)
{
	json_object *f = json_object_new_object();
	char ver[256];
	if (check_criu(f, err) < 0 || check_kernel(f, err) < 0)
		goto fail;
	if (vy_runtime_version(rt, ver, sizeof(ver), err) < 0)
		goto fail;
	check_pipe_limit(f);
	json_object_object_add(f, "runtime", json_object_new_string(rt->name));
	json_object_object_add(f, "runtime_version", json_object_new_string(ver));
	/* post-copy (lazypages.h): does the runtime drive CRIU's lazy pages? */
	json_object_object_add(f, "lazy_pages", json_object_new_boolean(vy_runtime_has_lazy_pages(rt)));
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	json_object_object_add(f, "hostname", json_object_new_string(host));
	*facts = f;
	return 0;
fail:
	json_object_put(f);
	return vy_error_wrap(err, "pre-flight on this host");
}

static int run_criu(char **argv, const char *what, vy_error *err)
{
	struct vy_cmd_result res;
	if (vy_cmd_run(argv, 30000, &res, err) < 0)
		return -1;
	int rc = 0;
	if (res.status != 0) {
		const char *msg = res.errout[0] ? res.errout : res.out;
		rc = vy_error_set(err, EINVAL, "%s: %s", what, msg[0] ? msg : "failed");
	}
	vy_cmd_result_free(&res);
	return rc;
}

int vy_criu_cpuinfo_dump(const char *dir, vy_error *err)
{
	char *argv[] = { "criu", "cpuinfo", "dump", "--images-dir", (char *)dir, NULL };
	return run_criu(argv, "criu cpuinfo dump", err);
}

int vy_criu_cpuinfo_check(const char *dir, vy_error *err)
{
	char *argv[] = { "criu", "cpuinfo", "check", "--images-dir", (char *)dir, NULL };
	if (run_criu(argv, "criu cpuinfo check", err) < 0)
		return vy_error_wrap(err, "the target's CPU cannot run what the source's CPU ran");
	return 0;
}

static void pid_facts(int pid, int *uid, uint64_t *rss)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	*uid = -1;
	*rss = 0;
	cleanup_fclose FILE *f = fopen(path, "re");
	if (!f)
		return;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		int r, e;
		unsigned long long kb;
		if (sscanf(line, "Uid: %d %d", &r, &e) == 2)
			*uid = r ? r : e;
		else if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
			*rss = (uint64_t)kb * 1024;
	}
}

int vy_container_processes(int pid, int *nonroot_uid, uint64_t *rss_bytes)
{
	char nspath[64], want[128], got[128];
	*nonroot_uid = 0;
	*rss_bytes = 0;
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/pid", pid);
	ssize_t n = readlink(nspath, want, sizeof(want) - 1);
	if (n < 0)
		return -1;
	want[n] = '\0';
	cleanup_closedir DIR *d = opendir("/proc");
	if (!d)
		return -1;
	struct dirent *de;
	while ((de = readdir(d))) {
		int p = atoi(de->d_name);
		if (p <= 0)
			continue;
		snprintf(nspath, sizeof(nspath), "/proc/%d/ns/pid", p);
		ssize_t m = readlink(nspath, got, sizeof(got) - 1);
		if (m < 0)
			continue;
		got[m] = '\0';
		if (strcmp(got, want) != 0)
			continue;
		int uid;
		uint64_t rss;
		pid_facts(p, &uid, &rss);
		if (uid > 0 && !*nonroot_uid)
			*nonroot_uid = uid;
		*rss_bytes += rss;
	}
	return 0;
}

int vy_process_freezer_cgroup(int pid, char *out, size_t len, bool *v2)
{
	char path[64], line[4096], unified[4096] = "";
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	out[0] = '\0';
	cleanup_fclose FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		if (!strcmp(c1 + 1, "freezer")) {
			snprintf(out, len, "%s", c2 + 1);
			if (v2)
				*v2 = false;
			return 0;
		}
		if (c1[1] == '\0')
			snprintf(unified, sizeof(unified), "%s", c2 + 1);
	}
	snprintf(out, len, "%s", unified);
	if (v2)
		*v2 = true;
	return 0;
}

bool vy_criu_has_feature(const char *name)
{
	char *argv[] = { "criu", "check", "--feature", (char *)name, NULL };
	struct vy_cmd_result res;
	if (vy_cmd_run(argv, 30000, &res, NULL) < 0)
		return false;
	bool ok = res.status == 0;
	vy_cmd_result_free(&res);
	return ok;
}

/* Why this runtime cannot do post-copy, in words. */
static const char *no_lazy_pages_reason(const char *runtime)
{
	return runtime && !strcmp(runtime, "crun")
		       ? "crun has no lazy pages (crun 1.21: \"checkpoint: unrecognized option "
			 "'--lazy-pages'\", no --page-server, no --status-fd); post-copy needs runc"
		       : "the runtime's checkpoint has no --lazy-pages/--page-server/--status-fd";
}

int vy_memory_mode_choose(const char *requested, const struct vy_memory_caps *caps,
			  const char **chosen, char *reason, size_t len, vy_error *err)
{
	if (!strcmp(requested, "stop-copy")) {
		*chosen = "stop-copy";
		snprintf(reason, len, "requested");
		return 0;
	}
	if (!strcmp(requested, "pre-copy")) {
		if (!caps->soft_dirty)
			return vy_error_set(err, ENOTSUP, "pre-copy needs soft-dirty page tracking, "
					    "which this kernel lacks (criu check --feature "
					    "mem_dirty_track fails); use --memory post-copy, "
					    "stop-copy or auto");
		return vy_error_set(err, ENOTSUP, "pre-copy memory is not implemented in this "
				    "version; use --memory post-copy, stop-copy or auto");
	}
	if (!strcmp(requested, "post-copy")) {
		if (!caps->uffd)
			return vy_error_set(err, ENOTSUP, "post-copy needs userfaultfd, which this "
					    "kernel lacks (criu check --feature uffd-noncoop fails); "
					    "use --memory stop-copy or auto");
		if (!caps->lazy_pages)
			return vy_error_set(err, ENOTSUP, "post-copy is impossible with %s: %s; use "
					    "--memory stop-copy or auto",
					    caps->runtime ? caps->runtime : "this runtime",
					    no_lazy_pages_reason(caps->runtime));
		*chosen = "post-copy";
		snprintf(reason, len, "requested");
		return 0;
	}
	if (strcmp(requested, "auto") != 0)
		return vy_error_set(err, EINVAL, "unknown memory mode '%.32s' (auto, stop-copy, "
				    "pre-copy, post-copy)", requested);
	const char *pre = caps->soft_dirty ? "pre-copy is not implemented in this version"
					   : "no pre-copy (no soft-dirty tracking in this kernel)";
	if (caps->uffd && caps->lazy_pages && caps->memory_bytes &&
	    caps->memory_bytes < VY_POSTCOPY_MIN_BYTES) {
		*chosen = "stop-copy";
		snprintf(reason, len, "auto: %s; post-copy is possible, but with %llu MiB of "
			 "memory stop-copy moves it in a moment and spares the container page "
			 "faults over the network, so stop-copy", pre,
			 (unsigned long long)(caps->memory_bytes >> 20));
		return 0;
	}
	if (caps->uffd && caps->lazy_pages) {
		*chosen = "post-copy";
		snprintf(reason, len, "auto: %s; userfaultfd and %s lazy pages are available, "
			 "so post-copy", pre, caps->runtime ? caps->runtime : "the runtime's");
		return 0;
	}
	*chosen = "stop-copy";
	snprintf(reason, len, "auto: %s; no post-copy (%s); so stop-copy", pre,
		 !caps->uffd ? "no userfaultfd" : no_lazy_pages_reason(caps->runtime));
	return 0;
}

bool vy_netns_loopback_only(int pid)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/net/dev", pid);
	FILE *f = pid > 0 ? fopen(path, "re") : NULL;
	if (!f)
		return false;
	int n = 0, others = 0;
	while (fgets(line, sizeof(line), f)) {
		if (++n <= 2) /* two lines of headers */
			continue;
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		const char *name = line + strspn(line, " ");
		if (strcmp(name, "lo") != 0)
			others++;
	}
	fclose(f);
	return n > 2 && others == 0;
}

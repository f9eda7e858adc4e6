/* test_util.c - running commands (exit status, timeout, environment), the
 * environment and configuration handed to the runtime's CRIU, and the
 * step timer behind the report's steps_ms. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "preflight.h"
#include "runtime.h"
#include "util.h"

#include "tmptree.h"
#include "unit.h"

static void test_exit_status_and_output(void)
{
	char *argv[] = { "sh", "-c", "echo out; echo err >&2; exit 7", NULL };
	struct vy_cmd_result r;
	vy_error err;
	CHECK(vy_cmd_run(argv, 10000, &r, &err) == 0);
	CHECK(r.status == 7);
	CHECK(strcmp(r.out, "out\n") == 0);
	CHECK(strcmp(r.errout, "err\n") == 0);
	vy_cmd_result_free(&r);
}

static void test_missing_command(void)
{
	char *argv[] = { "vy-no-such-command-here", NULL };
	struct vy_cmd_result r;
	vy_error err;
	CHECK(vy_cmd_run(argv, 10000, &r, &err) < 0);
	CHECK(strstr(err.msg, "vy-no-such-command-here") != NULL);
}

/* A child that outlives its timeout is killed, and the caller learns so
 * soon after, not when the child would have ended. */
static void test_timeout_kills(void)
{
	char *argv[] = { "sleep", "20", NULL };
	struct vy_cmd_result r;
	vy_error err;
	uint64_t t0 = vy_now_ms();
	CHECK(vy_cmd_run(argv, 300, &r, &err) == 0);
	uint64_t spent = vy_now_ms() - t0;
	CHECK(r.status == 128 + 9);
	CHECK(spent >= 300 && spent < 10000);
	vy_cmd_result_free(&r);
}

/* A child that closes its output and lives on is still waited for: the
 * status is its exit, not a guess made when the pipes closed. */
static void test_waits_past_closed_pipes(void)
{
	char *argv[] = { "sh", "-c", "exec >&- 2>&-; sleep 0.3; exit 3", NULL };
	struct vy_cmd_result r;
	vy_error err;
	CHECK(vy_cmd_run(argv, 10000, &r, &err) == 0);
	CHECK(r.status == 3);
	vy_cmd_result_free(&r);
}

static void test_env_replaces_criu_config(void)
{
	setenv("CRIU_CONFIG_FILE", "/operator/own.conf", 1);
	setenv("VY_TEST_KEEP", "kept", 1);
	char **env = vy_criu_env("/agent/criu.conf");
	CHECK(env != NULL);
	int ours = 0, theirs = 0, kept = 0;
	for (int i = 0; env && env[i]; i++) {
		ours += strcmp(env[i], "CRIU_CONFIG_FILE=/agent/criu.conf") == 0;
		theirs += strcmp(env[i], "CRIU_CONFIG_FILE=/operator/own.conf") == 0;
		kept += strcmp(env[i], "VY_TEST_KEEP=kept") == 0;
	}
	CHECK(ours == 1 && theirs == 0 && kept == 1);
	char *argv[] = { "sh", "-c", "printf %s \"$CRIU_CONFIG_FILE:$VY_TEST_KEEP\"", NULL };
	struct vy_cmd_result r;
	vy_error err;
	CHECK(vy_cmd_run_env(argv, env, 10000, &r, &err) == 0);
	CHECK(strcmp(r.out, "/agent/criu.conf:kept") == 0);
	vy_cmd_result_free(&r);
	vy_criu_env_free(env);
	unsetenv("CRIU_CONFIG_FILE");
	unsetenv("VY_TEST_KEEP");
}

static bool file_has(const char *path, const char *needle)
{
	char *text = NULL;
	vy_error err;
	if (vy_read_file(path, 1 << 20, &text, NULL, &err) < 0)
		return false;
	bool yes = strstr(text, needle) != NULL;
	free(text);
	return yes;
}

/* The agent's CRIU configuration: accepted by this CRIU, skips CRIU's own
 * network lock, and keeps an operator's CRIU_CONFIG_FILE lines. */
static void test_criu_config(void)
{
	cleanup_tree char *dir = make_tmpdir();
	char conf[512], own[512];
	snprintf(conf, sizeof(conf), "%s", join(dir, "criu.conf"));
	snprintf(own, sizeof(own), "%s", join(dir, "own.conf"));
	vy_error err;
	CHECK(vy_criu_config_write(conf, true, &err) == 0);
	CHECK(file_has(conf, "\nnetwork-lock skip\n"));
	CHECK(file_has(conf, "\nfile-validation filesize\n"));
	CHECK(vy_criu_config_write(conf, false, &err) == 0);
	CHECK(!file_has(conf, "network-lock"));
	CHECK(file_has(conf, "\nfile-validation filesize\n"));

	FILE *f = fopen(own, "w");
	CHECK(f != NULL);
	if (f) {
		fputs("tcp-close\n", f);
		fclose(f);
	}
	setenv("CRIU_CONFIG_FILE", own, 1);
	CHECK(vy_criu_config_write(conf, true, &err) == 0);
	CHECK(file_has(conf, "tcp-close\n"));
	CHECK(file_has(conf, "\nnetwork-lock skip\n"));

	/* An operator's file that CRIU refuses: nothing is left at conf. */
	f = fopen(own, "w");
	if (f) {
		fputs("no-such-criu-option-anywhere\n", f);
		fclose(f);
	}
	CHECK(vy_criu_config_write(conf, true, &err) < 0);
	CHECK(access(conf, F_OK) < 0 && errno == ENOENT);
	CHECK(strstr(err.msg, "criu refuses") != NULL);

	/* One that cannot be read says so. */
	setenv("CRIU_CONFIG_FILE", "/nonexistent/vy.conf", 1);
	CHECK(vy_criu_config_write(conf, true, &err) < 0);
	CHECK(strstr(err.msg, "CRIU_CONFIG_FILE") != NULL);
	unsetenv("CRIU_CONFIG_FILE");
}

static void test_steps(void)
{
	struct vy_steps st;
	vy_steps_start(&st);
	usleep(20000);
	vy_steps_mark(&st, "a");
	vy_steps_mark(&st, "b");
	usleep(10000);
	vy_steps_mark(&st, "a"); /* adds to a */
	CHECK(st.n == 2);
	CHECK(st.us[0] >= 30000 && st.us[0] < 5000000);
	CHECK(st.us[1] < st.us[0]);
	json_object *o = vy_steps_json(&st);
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	CHECK(strncmp(s, "{\"a\":", 5) == 0);
	CHECK(strstr(s, ",\"b\":") != NULL);
	double a = json_object_get_double(json_object_object_get(o, "a"));
	CHECK(a >= 30.0 && a < 5000.0);
	json_object_put(o);

	/* Past VY_STEPS_MAX names the last slot takes the rest. */
	vy_steps_start(&st);
	static const char *names[] = { "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8",
				       "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17" };
	for (int i = 0; i < 18; i++)
		vy_steps_mark(&st, names[i]);
	CHECK(st.n == VY_STEPS_MAX);
}

/* A process in a namespace of its own with nothing but loopback, against
 * this one's (the host's, with its interfaces), and no process at all. */
static void test_netns_loopback_only(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t child = fork();
	if (child == 0) {
		char ok = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
		if (write(p[1], &ok, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char ok = 0;
	CHECK(read(p[0], &ok, 1) == 1);
	CHECK(ok == 'y');
	CHECK(vy_netns_loopback_only(child));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(p[0]);
	close(p[1]);
	if (access("/proc/self/net/dev", R_OK) == 0 &&
	    system("test \"$(grep -c : /proc/self/net/dev)\" -gt 1") == 0)
		CHECK(!vy_netns_loopback_only(getpid()));
	CHECK(!vy_netns_loopback_only(0));
	CHECK(!vy_netns_loopback_only(child)); /* gone */
}

int main(void)
{
	RUN(test_exit_status_and_output);
	RUN(test_missing_command);
	RUN(test_timeout_kills);
	RUN(test_waits_past_closed_pipes);
	RUN(test_env_replaces_criu_config);
	RUN(test_criu_config);
	RUN(test_steps);
	RUN(test_netns_loopback_only);
	return unit_summary();
}

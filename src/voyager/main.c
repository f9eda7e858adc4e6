/* main.c - `voyager`, the CLI.  It talks to the local voyagerd over its
 * root-only control socket; each verb lives in its own cmd_*.c file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "cli.h"
#include "config.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: voyager [--socket PATH] [--json] COMMAND [ARGS]\n"
		"Live-migrate OCI containers between hosts running voyagerd.\n\n"
		"Commands:\n"
		"  migrate CONTAINER --to ADDR[:PORT]   move a running container to another host\n"
		"                 [--mode jit|presync|stop-copy]  (prints a report; jit is the default)\n"
		"  drain --to ADDR[:PORT] [--mode M]    migrate every running container, one by one\n"
		"  status [ID]                          migrations in flight, or one migration\n"
		"  list                                 all migrations this agent knows, with phase\n"
		"  check                                pre-flight this host (CRIU, kernel, runtime)\n"
		"  keygen [--key FILE]                  write a new cluster key (default %s)\n"
		"  net create CONTAINER --ip A/P --bridge BR [--gateway IP] [--mac MAC]\n"
		"                                       give a container a network namespace that\n"
		"                                       migrates with it (prints its path)\n"
		"  net show|delete CONTAINER            describe or remove it\n\n"
		"Options:\n"
		"  -s, --socket PATH   voyagerd's control socket (default %s)\n"
		"  -j, --json          machine-readable output\n"
		"  -h, --help          this help\n"
		"  -V, --version       print the version\n",
		"/etc/voyager/cluster.key", VY_DEFAULT_SOCKET);
}

int main(int argc, char **argv)
{
	struct cli_globals g = { .socket = VY_DEFAULT_SOCKET };
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if ((!strcmp(a, "--socket") || !strcmp(a, "-s")) && i + 1 < argc) {
			g.socket = argv[++i];
		} else if (!strncmp(a, "--socket=", 9)) {
			g.socket = a + 9;
		} else if (!strcmp(a, "--json") || !strcmp(a, "-j")) {
			g.json = 1;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
			printf("voyager %s\n", VOYAGER_VERSION);
			return 0;
		} else {
			fprintf(stderr, "voyager: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (i == argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[i];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "status"))
		return cmd_status(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "list"))
		return cmd_list(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "keygen"))
		return cmd_keygen(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "check"))
		return cmd_check(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "net"))
		return cmd_net(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "drain"))
		return cmd_drain(&g, sub_argc, sub_argv);
	if (!strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "voyager: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}

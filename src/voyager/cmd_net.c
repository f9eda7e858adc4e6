/* cmd_net.c - `voyager net`: give a container a network identity that can
 * migrate (a namespace held by the agent, a veth on a bridge, a stable MAC
 * and address).  Put the printed path in config.json as the container's
 * network namespace (linux.namespaces[type=network].path). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: voyager net create CONTAINER --ip ADDR/PREFIX [--ip ...] --bridge BR\n"
		   "                         [--gateway IP] [--mac MAC] [--mtu N]\n"
		   "       voyager net show CONTAINER\n"
		   "       voyager net delete CONTAINER\n");
}

int cmd_net(struct cli_globals *g, int argc, char **argv)
{
	static const struct option opts[] = { { "ip", required_argument, 0, 'i' },
					      { "bridge", required_argument, 0, 'b' },
					      { "gateway", required_argument, 0, 'g' },
					      { "mac", required_argument, 0, 'm' },
					      { "mtu", required_argument, 0, 'M' },
					      { "help", no_argument, 0, 'h' },
					      { 0, 0, 0, 0 } };
	if (argc < 3 || (strcmp(argv[1], "create") && strcmp(argv[1], "show") &&
			 strcmp(argv[1], "delete"))) {
		usage(stderr);
		return 2;
	}
	char cmd[32];
	snprintf(cmd, sizeof(cmd), "net-%s", argv[1]);
	json_object *req = json_object_new_object(), *ips = json_object_new_array(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	json_object_object_add(req, "container", json_object_new_string(argv[2]));
	int c;
	optind = 3;
	while ((c = getopt_long(argc, argv, "i:b:g:m:M:h", opts, NULL)) != -1) {
		switch (c) {
		case 'i': json_object_array_add(ips, json_object_new_string(optarg)); break;
		case 'b': json_object_object_add(req, "bridge", json_object_new_string(optarg)); break;
		case 'g': json_object_object_add(req, "gateway", json_object_new_string(optarg)); break;
		case 'm': json_object_object_add(req, "mac", json_object_new_string(optarg)); break;
		case 'M': json_object_object_add(req, "mtu", json_object_new_int(atoi(optarg))); break;
		case 'h': usage(stdout); json_object_put(req); json_object_put(ips); return 0;
		default: json_object_put(req); json_object_put(ips); return 2;
		}
	}
	json_object_object_add(req, "ips", ips);
	vy_error err;
	int rc = cli_request(g, req, NULL, NULL, &res, &err);
	json_object_put(req);
	if (rc < 0) {
		fprintf(stderr, "voyager net: %s\n", err.msg);
		return 1;
	}
	int ok = !strcmp(vy_json_str(res, "result", ""), "ok");
	json_object_object_del(res, "event");
	if (!ok)
		fprintf(stderr, "voyager net %s: %s\n", argv[1], vy_json_str(res, "error", "failed"));
	else if (g->json || !strcmp(argv[1], "show"))
		printf("%s\n", json_object_to_json_string_ext(res, (g->json ? JSON_C_TO_STRING_PLAIN : JSON_C_TO_STRING_PRETTY) |
								      JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		printf("%s\n", vy_json_str(res, "netns", ""));
	json_object_put(res);
	return ok ? 0 : 1;
}

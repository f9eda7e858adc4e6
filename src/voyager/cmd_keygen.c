/* cmd_keygen.c - `voyager keygen`: write a new cluster key.  Every host of
 * a cluster needs the same key; copy it over a channel you trust. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "channel.h"
#include "cli.h"

int cmd_keygen(struct cli_globals *g, int argc, char **argv)
{
	static const struct option opts[] = { { "key", required_argument, 0, 'k' },
					      { "help", no_argument, 0, 'h' },
					      { 0, 0, 0, 0 } };
	const char *path = "/etc/voyager/cluster.key";
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
		if (c == 'k') {
			path = optarg;
		} else if (c == 'h') {
			printf("Usage: voyager keygen [--key FILE]\n"
			       "Write 32 random bytes as hex, mode 0600; never overwrites.\n");
			return 0;
		} else {
			return 2;
		}
	}
	vy_error err;
	if (vy_key_generate(path, &err) < 0) {
		fprintf(stderr, "voyager keygen: %s\n", err.msg);
		return 1;
	}
	if (g->json)
		printf("{\"key\":\"%s\"}\n", path);
	else
		printf("wrote a new cluster key to %s; copy it to every host's voyagerd\n", path);
	return 0;
}

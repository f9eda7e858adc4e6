/* cli.h - the voyager command line: one file per verb. */
#ifndef VY_CLI_H
#define VY_CLI_H

#include <json-c/json.h>

#include "control.h"
#include "error.h"

struct cli_globals {
	const char *socket;
	int json;
};

int cmd_migrate(struct cli_globals *g, int argc, char **argv);
int cmd_status(struct cli_globals *g, int argc, char **argv);
int cmd_list(struct cli_globals *g, int argc, char **argv);
int cmd_keygen(struct cli_globals *g, int argc, char **argv);
int cmd_check(struct cli_globals *g, int argc, char **argv);
int cmd_net(struct cli_globals *g, int argc, char **argv);
int cmd_drain(struct cli_globals *g, int argc, char **argv);

/* Send one request and return the final {"event":"result"} object; other
 * events go to on_event (may be NULL). */
int cli_request(struct cli_globals *g, json_object *req,
		void (*on_event)(json_object *ev, void *arg), void *arg,
		json_object **result, vy_error *err);
void cli_format_bytes(unsigned long long b, char *out, size_t len);

#endif

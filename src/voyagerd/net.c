/* net.c - `voyager net create|delete|show`: the agent makes a container's
 * network namespace the way a migration expects to find it, with a veth on
 * a bridge of this host's L2 segment and a stable MAC and address, and
 * holds it in its netns directory so that a migration can move it. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "daemon.h"
#include "log.h"
#include "netns.h"
#include "util.h"

static json_object *reply_error(const char *msg)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "result", json_object_new_string("failed"));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

/* A locally administered MAC derived from the container's name. */
static void default_mac(const char *container, char out[18])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)container, strlen(container), md);
	snprintf(out, 18, "02:%02x:%02x:%02x:%02x:%02x", md[0], md[1], md[2], md[3], md[4]);
}

static json_object *identity_from_request(const char *container, json_object *req,
					  vy_error *err)
{
	json_object *ips = json_object_object_get(req, "ips");
	const char *bridge = vy_json_str(req, "bridge", "");
	if (!ips || !json_object_is_type(ips, json_type_array) || !json_object_array_length(ips)) {
		vy_error_set(err, EINVAL, "give at least one --ip ADDRESS/PREFIX");
		return NULL;
	}
	if (!*bridge) {
		vy_error_set(err, EINVAL, "give the --bridge to attach the container to");
		return NULL;
	}
	char mac[18], host_if[16];
	default_mac(container, mac);
	vy_net_host_ifname(container, 0, host_if);
	json_object *i = json_object_new_object();
	json_object_object_add(i, "name", json_object_new_string("eth0"));
	json_object_object_add(i, "mac", json_object_new_string(vy_json_str(req, "mac", mac)));
	json_object_object_add(i, "mtu", json_object_new_int64(vy_json_int(req, "mtu", 1500)));
	json_object_object_add(i, "addrs", json_object_get(ips));
	json_object_object_add(i, "host_if", json_object_new_string(host_if));
	json_object_object_add(i, "bridge", json_object_new_string(bridge));
	json_object *ifs = json_object_new_array(), *routes = json_object_new_array();
	json_object_array_add(ifs, i);
	const char *gw = vy_json_str(req, "gateway", "");
	if (*gw) {
		json_object *r = json_object_new_object();
		json_object_object_add(r, "dst", json_object_new_string("default"));
		json_object_object_add(r, "gateway", json_object_new_string(gw));
		json_object_object_add(r, "dev", json_object_new_string("eth0"));
		json_object_array_add(routes, r);
	}
	json_object *id = json_object_new_object();
	json_object_object_add(id, "interfaces", ifs);
	json_object_object_add(id, "routes", routes);
	return id;
}

static json_object *net_create(struct vy_daemon *d, const char *container, const char *path,
			       json_object *req)
{
	vy_error err;
	json_object *id = identity_from_request(container, req, &err);
	if (!id)
		return reply_error(err.msg);
	if (access(path, F_OK) == 0) {
		json_object_put(id);
		snprintf(err.msg, sizeof(err.msg), "%s already exists", path);
		return reply_error(err.msg);
	}
	if (vy_net_check_target(id, NULL, d->netns_dir, &err) < 0 ||
	    vy_net_probe(vy_json_str(req, "bridge", ""), id, 600, &err) < 0 ||
	    vy_netns_create(path, &err) < 0) {
		json_object_put(id);
		return reply_error(err.msg);
	}
	if (vy_net_build(path, id, NULL, &err) < 0 || vy_net_link(id, true, &err) < 0 ||
	    vy_net_announce(path, id, &err) < 0) {
		vy_netns_delete(path, NULL);
		json_object_put(id);
		return reply_error(err.msg);
	}
	vy_info("network namespace for %s at %s", container, path);
	json_object *o = json_object_new_object();
	json_object_object_add(o, "result", json_object_new_string("ok"));
	json_object_object_add(o, "netns", json_object_new_string(path));
	json_object_object_add(o, "identity", id);
	return o;
}

json_object *vy_net_control(struct vy_daemon *d, const char *cmd, json_object *req)
{
	const char *container = vy_json_str(req, "container", "");
	if (!vy_name_is_safe(container))
		return reply_error("invalid container name");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", d->netns_dir, container);
	vy_error err;
	if (!strcmp(cmd, "net-create"))
		return net_create(d, container, path, req);
	if (access(path, F_OK) != 0) {
		snprintf(err.msg, sizeof(err.msg), "no network namespace for %s here (%s)", container,
			 path);
		return reply_error(err.msg);
	}
	json_object *o = json_object_new_object();
	json_object_object_add(o, "netns", json_object_new_string(path));
	if (!strcmp(cmd, "net-delete")) {
		if (vy_netns_delete(path, &err) < 0) {
			json_object_put(o);
			return reply_error(err.msg);
		}
	} else if (!strcmp(cmd, "net-show")) {
		json_object *id;
		if (vy_net_describe(path, &id, &err) < 0) {
			json_object_put(o);
			return reply_error(err.msg);
		}
		json_object_object_add(o, "identity", id);
	} else {
		json_object_put(o);
		return reply_error("unknown net command");
	}
	json_object_object_add(o, "result", json_object_new_string("ok"));
	return o;
}

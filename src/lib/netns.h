/* netns.h - a container's network identity: its network namespace, made
 * by the host and named in config.json, with a veth into a bridge on the
 * host's L2 segment, a stable MAC and stable addresses.
 *
 * The source describes the identity (interfaces, MACs, addresses, routes,
 * the bridge each veth hangs on); the target builds the same identity in a
 * namespace of its own and attaches it to its own bridge.  While the
 * container is frozen, a lock (an nftables table inside the container's
 * namespace that drops all but loopback traffic) keeps either kernel from
 * answering the client: without it the target resets a connection whose
 * socket CRIU has not recreated yet.  After restore the target announces
 * the move with a gratuitous ARP, so peers on the segment find the new
 * host at once.
 *
 * Namespaces live as nsfs bind mounts in a directory of the agent's (not
 * /run/netns), so that several agents on one kernel (the lab) never see
 * each other's.  Configuration inside a namespace uses iproute2 and nft
 * through nsenter.
 */
#ifndef VY_NETNS_H
#define VY_NETNS_H

#include <stdbool.h>

#include <json-c/json.h>

#include "error.h"

/* Create an empty network namespace held at path (lo up). */
int vy_netns_create(const char *path, vy_error *err);
/* Unmount and remove; the namespace's veths go with it. */
int vy_netns_delete(const char *path, vy_error *err);

/* The identity of the namespace at path:
 * {"interfaces":[{"name","mac","mtu","addrs":["a/p",...],"host_if","bridge"}],
 *  "routes":[{"dst","gateway","dev"}]} */
int vy_net_describe(const char *path, json_object **out, vy_error *err);

/* Build identity in the (new) namespace at path: for each interface a veth
 * whose host end (host_if) is attached to bridge_override or the
 * interface's own bridge; addresses and routes.  Links stay down until
 * vy_net_link(). */
int vy_net_build(const char *path, json_object *identity,
		 const char *bridge_override, vy_error *err);
/* Set the host ends of identity's veths up or down (attach / detach). */
int vy_net_link(json_object *identity, bool up, vy_error *err);
/* Delete identity's veths by their host ends, where they still exist: once
 * the identity lives on elsewhere, so that nothing of it is left here even
 * when something still holds the old namespace open. */
int vy_net_unlink(json_object *identity, vy_error *err);
/* Check on this host: every bridge exists, no host_if name is taken, and
 * no address of identity is configured here or in a namespace of dir. */
int vy_net_check_target(json_object *identity, const char *bridge_override,
			const char *netns_dir, vy_error *err);

/* The lock: an nftables table in the namespace at path whose input and
 * output chains drop everything but loopback. */
int vy_net_lock(const char *path, vy_error *err);
/* Let traffic through a locked namespace at once: accept rules at the head
 * of both chains (0 if it is not locked).  The table stays until
 * vy_net_unlock(): removing it unregisters its hooks, and the kernel waits
 * out an RCU grace period for that (10-15 ms on this VM), which should not
 * fall inside a freeze. */
int vy_net_open(const char *path, vy_error *err);
/* Remove the lock (0 if there is none). */
int vy_net_unlock(const char *path, vy_error *err);

/* Gratuitous ARP for every IPv4 address, sent from inside the namespace. */
int vy_net_announce(const char *path, json_object *identity, vy_error *err);

/* Duplicate address detection on the segment behind bridge (an interface
 * of this host): ARP-probe every IPv4 address of identity and wait up to
 * wait_ms for an answer.  Fails with EADDRINUSE naming the address and
 * the MAC that answered. */
int vy_net_probe(const char *bridge, json_object *identity, int wait_ms, vy_error *err);

/* A veth host-side name for a container: "vy" + 10 hex of its hash. */
void vy_net_host_ifname(const char *container, int index, char out[16]);

#endif

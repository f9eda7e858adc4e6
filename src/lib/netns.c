/* netns.c - see netns.h. */
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/if_ether.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <nftables/libnftables.h>
#include <openssl/sha.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"

#define LOCK_TABLE "voyager_lock"

/* Run argv, inside the namespace at ns when ns is not NULL. */
static int run(const char *ns, const char *const *argv, char **out, vy_error *err)
{
	const char *full[32];
	int n = 0;
	char nsarg[4200];
	if (ns) {
		snprintf(nsarg, sizeof(nsarg), "--net=%s", ns);
		full[n++] = "nsenter";
		full[n++] = nsarg;
	}
	for (int i = 0; argv[i] && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	struct vy_cmd_result res;
	if (vy_cmd_run((char *const *)full, 30000, &res, err) < 0)
		return -1;
	if (res.status != 0) {
		size_t l = strlen(res.errout);
		while (l && res.errout[l - 1] == '\n')
			res.errout[--l] = '\0';
		vy_error_set(err, EIO, "%s: %s", vy_cmd_string((char *const *)full),
			     res.errout[0] ? res.errout : "failed");
		vy_cmd_result_free(&res);
		return -1;
	}
	if (out)
		*out = take_ptr(res.out);
	vy_cmd_result_free(&res);
	return 0;
}

#define RUN(ns, err, ...)                                          \
	({                                                         \
		const char *_argv[] = { __VA_ARGS__, NULL };       \
		run((ns), _argv, NULL, (err));                     \
	})

static json_object *run_json(const char *ns, const char *const *argv, vy_error *err)
{
	cleanup_free char *out = NULL;
	if (run(ns, argv, &out, err) < 0)
		return NULL;
	json_object *o = json_tokener_parse(out);
	if (!o || !json_object_is_type(o, json_type_array)) {
		json_object_put(o);
		vy_error_set(err, EINVAL, "unexpected output from %s", argv[0]);
		return NULL;
	}
	return o;
}

int vy_netns_create(const char *path, vy_error *err)
{
	int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (fd < 0)
		return vy_error_sys(err, errno, "create %s", path);
	close(fd);
	pid_t pid = fork();
	if (pid < 0) {
		unlink(path);
		return vy_error_sys(err, errno, "fork");
	}
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0 ||
		    mount("/proc/self/ns/net", path, "none", MS_BIND, NULL) < 0)
			_exit(1);
		_exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		unlink(path);
		return vy_error_set(err, EPERM, "cannot create a network namespace at %s", path);
	}
	return RUN(path, err, "ip", "link", "set", "lo", "up");
}

int vy_netns_delete(const char *path, vy_error *err)
{
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		return vy_error_sys(err, errno, "unmount %s", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return vy_error_sys(err, errno, "remove %s", path);
	return 0;
}

void vy_net_host_ifname(const char *container, int index, char out[16])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)container, strlen(container), md);
	snprintf(out, 16, "vy%02x%02x%02x%02x%d", md[0], md[1], md[2], md[3], index % 10);
}

static json_object *find_by_index(json_object *links, int64_t ifindex)
{
	for (size_t i = 0; i < json_object_array_length(links); i++) {
		json_object *l = json_object_array_get_idx(links, i);
		if (vy_json_int(l, "ifindex", -1) == ifindex)
			return l;
	}
	return NULL;
}

static json_object *describe_addrs(json_object *link)
{
	json_object *addrs = json_object_new_array(), *info;
	if (!json_object_object_get_ex(link, "addr_info", &info))
		return addrs;
	for (size_t k = 0; k < json_object_array_length(info); k++) {
		json_object *a = json_object_array_get_idx(info, k);
		const char *fam = vy_json_str(a, "family", "");
		const char *scope = vy_json_str(a, "scope", "");
		if (strcmp(fam, "inet") && !(strcmp(fam, "inet6") == 0 && !strcmp(scope, "global")))
			continue;
		char buf[128];
		snprintf(buf, sizeof(buf), "%s/%lld", vy_json_str(a, "local", ""),
			 (long long)vy_json_int(a, "prefixlen", 32));
		json_object_array_add(addrs, json_object_new_string(buf));
	}
	return addrs;
}

static json_object *describe_routes(const char *path, vy_error *err)
{
	json_object *out = json_object_new_array();
	static const char *const fams[] = { "-4", "-6" };
	for (int f = 0; f < 2; f++) {
		const char *argv[] = { "ip", "-j", fams[f], "route", "show", NULL };
		json_object *routes = run_json(path, argv, err);
		if (!routes) {
			json_object_put(out);
			return NULL;
		}
		for (size_t i = 0; i < json_object_array_length(routes); i++) {
			json_object *r = json_object_array_get_idx(routes, i);
			if (!vy_json_str(r, "gateway", NULL))
				continue;
			json_object *o = json_object_new_object();
			json_object_object_add(o, "dst", json_object_new_string(vy_json_str(r, "dst", "default")));
			json_object_object_add(o, "gateway", json_object_new_string(vy_json_str(r, "gateway", "")));
			json_object_object_add(o, "dev", json_object_new_string(vy_json_str(r, "dev", "")));
			json_object_array_add(out, o);
		}
		json_object_put(routes);
	}
	return out;
}

static json_object *describe_interface(json_object *l, json_object *host_links)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(vy_json_str(l, "ifname", "")));
	json_object_object_add(o, "mac", json_object_new_string(vy_json_str(l, "address", "")));
	json_object_object_add(o, "mtu", json_object_new_int64(vy_json_int(l, "mtu", 1500)));
	json_object_object_add(o, "addrs", describe_addrs(l));
	json_object *peer = find_by_index(host_links, vy_json_int(l, "link_index", -1));
	json_object_object_add(o, "host_if",
			       json_object_new_string(peer ? vy_json_str(peer, "ifname", "") : ""));
	json_object_object_add(o, "bridge",
			       json_object_new_string(peer ? vy_json_str(peer, "master", "") : ""));
	return o;
}

int vy_net_describe(const char *path, json_object **out, vy_error *err)
{
	const char *addr_argv[] = { "ip", "-j", "addr", "show", NULL };
	const char *link_argv[] = { "ip", "-j", "link", "show", NULL };
	json_object *links = run_json(path, addr_argv, err);
	json_object *host = links ? run_json(NULL, link_argv, err) : NULL;
	json_object *routes = host ? describe_routes(path, err) : NULL;
	if (!routes) {
		json_object_put(links);
		json_object_put(host);
		return vy_error_wrap(err, "describe network namespace %s", path);
	}
	json_object *ifs = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(links); i++) {
		json_object *l = json_object_array_get_idx(links, i);
		if (strcmp(vy_json_str(l, "link_type", ""), "ether") != 0)
			continue;
		json_object_array_add(ifs, describe_interface(l, host));
	}
	json_object *id = json_object_new_object();
	json_object_object_add(id, "interfaces", ifs);
	json_object_object_add(id, "routes", routes);
	json_object_put(links);
	json_object_put(host);
	*out = id;
	return 0;
}

static int build_interface(const char *path, json_object *i, const char *bridge,
			   vy_error *err)
{
	const char *name = vy_json_str(i, "name", "eth0");
	const char *host_if = vy_json_str(i, "host_if", "");
	char pid[16], mtu[16];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	snprintf(mtu, sizeof(mtu), "%lld", (long long)vy_json_int(i, "mtu", 1500));
	/* The host end gets a high MAC (fe:...), so that it never becomes the
	 * lowest port MAC that a bridge without an address of its own adopts:
	 * the bridge's MAC would change under its peers' ARP caches. */
	unsigned char md[SHA256_DIGEST_LENGTH];
	char host_mac[18];
	SHA256((const unsigned char *)host_if, strlen(host_if), md);
	snprintf(host_mac, sizeof(host_mac), "fe:%02x:%02x:%02x:%02x:%02x", md[0], md[1], md[2],
		 md[3], md[4]);
	if (RUN(path, err, "ip", "link", "add", name, "type", "veth", "peer", "name", host_if,
		"netns", pid) < 0 ||
	    RUN(NULL, err, "ip", "link", "set", host_if, "address", host_mac) < 0 ||
	    RUN(path, err, "ip", "link", "set", name, "address", vy_json_str(i, "mac", ""),
		"mtu", mtu) < 0 ||
	    RUN(NULL, err, "ip", "link", "set", host_if, "master", bridge, "mtu", mtu) < 0)
		return -1;
	json_object *addrs = json_object_object_get(i, "addrs");
	for (size_t k = 0; addrs && k < json_object_array_length(addrs); k++) {
		const char *a = json_object_get_string(json_object_array_get_idx(addrs, k));
		if (RUN(path, err, "ip", "addr", "add", a, "dev", name, "nodad") < 0)
			return -1;
	}
	return RUN(path, err, "ip", "link", "set", name, "up");
}

int vy_net_build(const char *path, json_object *identity, const char *bridge_override,
		 vy_error *err)
{
	json_object *ifs = json_object_object_get(identity, "interfaces");
	json_object *routes = json_object_object_get(identity, "routes");
	for (size_t k = 0; ifs && k < json_object_array_length(ifs); k++) {
		json_object *i = json_object_array_get_idx(ifs, k);
		const char *br = bridge_override && *bridge_override ? bridge_override
								      : vy_json_str(i, "bridge", "");
		if (build_interface(path, i, br, err) < 0)
			return vy_error_wrap(err, "build interface %s", vy_json_str(i, "name", "?"));
	}
	for (size_t k = 0; routes && k < json_object_array_length(routes); k++) {
		json_object *r = json_object_array_get_idx(routes, k);
		if (RUN(path, err, "ip", "route", "replace", vy_json_str(r, "dst", "default"), "via",
			vy_json_str(r, "gateway", ""), "dev", vy_json_str(r, "dev", ""),
			"onlink") < 0)
			return vy_error_wrap(err, "route");
	}
	return 0;
}

int vy_net_link(json_object *identity, bool up, vy_error *err)
{
	json_object *ifs = json_object_object_get(identity, "interfaces");
	for (size_t k = 0; ifs && k < json_object_array_length(ifs); k++) {
		const char *h = vy_json_str(json_object_array_get_idx(ifs, k), "host_if", "");
		if (*h && RUN(NULL, err, "ip", "link", "set", h, up ? "up" : "down") < 0)
			return -1;
	}
	return 0;
}

int vy_net_unlink(json_object *identity, vy_error *err)
{
	json_object *ifs = json_object_object_get(identity, "interfaces");
	for (size_t k = 0; ifs && k < json_object_array_length(ifs); k++) {
		const char *h = vy_json_str(json_object_array_get_idx(ifs, k), "host_if", "");
		const char *show[] = { "ip", "link", "show", h, NULL };
		vy_error gone;
		if (!*h || run(NULL, show, NULL, &gone) < 0)
			continue;
		if (RUN(NULL, err, "ip", "link", "del", h) < 0)
			return -1;
	}
	return 0;
}

static bool has_address(json_object *links, const char *cidr)
{
	char want[128];
	snprintf(want, sizeof(want), "%s", cidr);
	char *slash = strchr(want, '/');
	if (slash)
		*slash = '\0';
	for (size_t i = 0; links && i < json_object_array_length(links); i++) {
		json_object *info = json_object_object_get(json_object_array_get_idx(links, i),
							   "addr_info");
		for (size_t k = 0; info && k < json_object_array_length(info); k++)
			if (!strcmp(vy_json_str(json_object_array_get_idx(info, k), "local", ""), want))
				return true;
	}
	return false;
}

/* Is any address of identity configured in the namespace ns (NULL: ours)? */
static int address_taken(const char *ns, json_object *identity, const char **which)
{
	const char *argv[] = { "ip", "-j", "addr", "show", NULL };
	json_object *links = run_json(ns, argv, NULL);
	if (!links)
		return 0;
	json_object *ifs = json_object_object_get(identity, "interfaces");
	int taken = 0;
	for (size_t k = 0; !taken && ifs && k < json_object_array_length(ifs); k++) {
		json_object *addrs = json_object_object_get(json_object_array_get_idx(ifs, k), "addrs");
		for (size_t a = 0; !taken && addrs && a < json_object_array_length(addrs); a++) {
			const char *cidr = json_object_get_string(json_object_array_get_idx(addrs, a));
			if (has_address(links, cidr)) {
				*which = cidr;
				taken = 1;
			}
		}
	}
	json_object_put(links);
	return taken;
}

static int check_links(json_object *i, const char *bridge_override, vy_error *err)
{
	const char *br = bridge_override && *bridge_override ? bridge_override
							      : vy_json_str(i, "bridge", "");
	const char *host_if = vy_json_str(i, "host_if", "");
	const char *argv[] = { "ip", "-j", "-d", "link", "show", "dev", br, NULL };
	json_object *l = *br ? run_json(NULL, argv, NULL) : NULL;
	json_object *kind = NULL;
	if (l && json_object_array_length(l) == 1) {
		json_object *info = json_object_object_get(json_object_array_get_idx(l, 0), "linkinfo");
		kind = info ? json_object_object_get(info, "info_kind") : NULL;
	}
	bool is_bridge = kind && !strcmp(json_object_get_string(kind), "bridge");
	json_object_put(l);
	if (!is_bridge)
		return vy_error_set(err, ENODEV, "bridge '%s' for %s does not exist on this host", br,
				    vy_json_str(i, "name", "?"));
	const char *argv2[] = { "ip", "link", "show", "dev", host_if, NULL };
	if (!*host_if || run(NULL, argv2, NULL, NULL) == 0)
		return vy_error_set(err, EEXIST, "interface name '%s' is taken on this host", host_if);
	return 0;
}

int vy_net_check_target(json_object *identity, const char *bridge_override,
			const char *netns_dir, vy_error *err)
{
	json_object *ifs = json_object_object_get(identity, "interfaces");
	for (size_t k = 0; ifs && k < json_object_array_length(ifs); k++)
		if (check_links(json_object_array_get_idx(ifs, k), bridge_override, err) < 0)
			return -1;
	const char *which = NULL;
	if (address_taken(NULL, identity, &which))
		return vy_error_set(err, EADDRINUSE, "address %s is already in use on this host", which);
	cleanup_closedir DIR *d = netns_dir ? opendir(netns_dir) : NULL;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", netns_dir, de->d_name);
		if (address_taken(p, identity, &which))
			return vy_error_set(err, EADDRINUSE, "address %s is already in use on this "
					    "host (network namespace %s)", which, de->d_name);
	}
	return 0;
}

struct nft_job {
	const char *path;
	const char *rules;
	int eno;
	char msg[1024];
};

/* One libnftables context at a time: it keeps some state of its own that
 * is not documented as safe to share between threads. */
static pthread_mutex_t nft_mutex = PTHREAD_MUTEX_INITIALIZER;

/* setns() changes only the calling thread, and a netlink socket belongs
 * to the namespace it was made in: the context is made in a thread that
 * joined the namespace. */
static void *nft_thread(void *arg)
{
	struct nft_job *j = arg;
	int nsfd = open(j->path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		j->eno = errno;
		snprintf(j->msg, sizeof(j->msg), "enter %s: %s", j->path, strerror(errno));
		if (nsfd >= 0)
			close(nsfd);
		return NULL;
	}
	close(nsfd);
	pthread_mutex_lock(&nft_mutex);
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!ctx) {
		j->eno = ENOMEM;
		snprintf(j->msg, sizeof(j->msg), "nft_ctx_new failed");
	} else {
		nft_ctx_buffer_output(ctx);
		nft_ctx_buffer_error(ctx);
		if (nft_run_cmd_from_buffer(ctx, j->rules) != 0) {
			const char *e = nft_ctx_get_error_buffer(ctx);
			size_t n = e ? strlen(e) : 0;
			while (n && (e[n - 1] == '\n' || e[n - 1] == ' '))
				n--;
			j->eno = EIO;
			snprintf(j->msg, sizeof(j->msg), "nft: %.*s", (int)n, n ? e : "failed");
		}
		nft_ctx_free(ctx);
	}
	pthread_mutex_unlock(&nft_mutex);
	return NULL;
}

/* Run an nft script (one transaction) in the namespace at path, with
 * libnftables in this process: in the freeze, nsenter and nft cost 3 to
 * 6 ms more each time. */
static int nft_script(const char *path, const char *rules, vy_error *err)
{
	struct nft_job j = { .path = path, .rules = rules };
	pthread_t t;
	int e = pthread_create(&t, NULL, nft_thread, &j);
	if (e)
		return vy_error_sys(err, e, "nft thread");
	pthread_join(t, NULL);
	if (j.eno)
		return vy_error_set(err, j.eno, "%s", j.msg);
	return 0;
}

int vy_net_lock(const char *path, vy_error *err)
{
	/* One nft transaction: both hooks drop everything but loopback. */
	static const char rules[] =
		"table inet " LOCK_TABLE " {\n"
		" chain in { type filter hook input priority -300; policy drop; iif \"lo\" accept; }\n"
		" chain out { type filter hook output priority -300; policy drop; oif \"lo\" accept; }\n"
		"}\n";
	return nft_script(path, rules, err) < 0 ? vy_error_wrap(err, "network lock") : 0;
}

int vy_net_open(const char *path, vy_error *err)
{
	static const char rules[] = "insert rule inet " LOCK_TABLE " in accept\n"
				    "insert rule inet " LOCK_TABLE " out accept\n";
	vy_error local;
	if (nft_script(path, rules, &local) == 0 || strstr(local.msg, "No such file or directory"))
		return 0; /* open, or not locked */
	if (err)
		*err = local;
	return vy_error_wrap(err, "open the network lock");
}

int vy_net_unlock(const char *path, vy_error *err)
{
	/* The deletion waits for the kernel to unregister the hooks (about
	 * 10 ms here): a thaw opens with vy_net_open first and calls this
	 * after. */
	vy_error local;
	if (nft_script(path, "delete table inet " LOCK_TABLE "\n", &local) == 0)
		return 0;
	if (strstr(local.msg, "No such file or directory"))
		return 0; /* not locked */
	if (err)
		*err = local;
	return -1;
}

struct announce_job {
	const char *path;
	json_object *identity;
	vy_error *err;
	int rc;
	int done; /* write end: rc goes there once every frame is sent */
};

/* The address of family af (AF_INET: struct in_addr, AF_INET6: struct
 * in6_addr) in "ADDR/p"; false when it is not one of that family. */
static bool addr_of(const char *cidr, int af, void *out)
{
	char ip_s[64];
	snprintf(ip_s, sizeof(ip_s), "%s", cidr);
	char *slash = strchr(ip_s, '/');
	if (slash)
		*slash = '\0';
	return inet_pton(af, ip_s, out) == 1;
}

/* Broadcast one ARP request from mac on ifindex: a gratuitous ARP when
 * sender == target, an RFC 5227 probe when sender is 0.0.0.0. */
static int send_arp_request(int sock, int ifindex, const unsigned char mac[6],
			    struct in_addr sender, struct in_addr target)
{
	unsigned char frame[42] = { 0 };
	struct ether_header *eh = (struct ether_header *)frame;
	struct ether_arp *arp = (struct ether_arp *)(frame + sizeof(*eh));
	memset(eh->ether_dhost, 0xff, 6);
	memcpy(eh->ether_shost, mac, 6);
	memcpy(arp->arp_sha, mac, 6);
	eh->ether_type = htons(ETHERTYPE_ARP);
	arp->arp_hrd = htons(ARPHRD_ETHER);
	arp->arp_pro = htons(ETHERTYPE_IP);
	arp->arp_hln = 6;
	arp->arp_pln = 4;
	arp->arp_op = htons(ARPOP_REQUEST);
	memcpy(arp->arp_spa, &sender, 4);
	memcpy(arp->arp_tpa, &target, 4);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				   .sll_ifindex = ifindex, .sll_halen = 6 };
	memset(sll.sll_addr, 0xff, 6);
	return sendto(sock, frame, sizeof(frame), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0 ? -1 : 0;
}

/* An unsolicited neighbour advertisement (RFC 4861 7.2.6) of addr from
 * mac to all nodes, override set: the IPv6 twin of a gratuitous ARP. */
static int send_una(int sock, int ifindex, const unsigned char mac[6],
		    const struct in6_addr *addr)
{
	enum { ETH = 14, IP6 = 40, NA = 24, OPT = 8 };
	unsigned char f[ETH + IP6 + NA + OPT] = { 0 };
	static const unsigned char all_nodes_mac[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	struct in6_addr all_nodes;
	inet_pton(AF_INET6, "ff02::1", &all_nodes);
	memcpy(f, all_nodes_mac, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x86;
	f[13] = 0xdd;
	unsigned char *ip = f + ETH, *icmp = ip + IP6;
	ip[0] = 0x60;
	ip[5] = NA + OPT;       /* payload length (low byte) */
	ip[6] = 58;             /* ICMPv6 */
	ip[7] = 255;            /* hop limit: receivers drop anything else */
	memcpy(ip + 8, addr, 16);
	memcpy(ip + 24, &all_nodes, 16);
	icmp[0] = 136;          /* neighbour advertisement */
	icmp[4] = 0x20;         /* override; not a router, not solicited */
	memcpy(icmp + 8, addr, 16);
	icmp[24] = 2;           /* target link-layer address, 8 bytes */
	icmp[25] = 1;
	memcpy(icmp + 26, mac, 6);
	/* checksum over the pseudo-header (addresses, length, next header) */
	uint32_t s = NA + OPT + 58;
	for (int i = 8; i < IP6; i += 2)
		s += (uint32_t)(ip[i] << 8 | ip[i + 1]);
	for (int i = 0; i < NA + OPT; i += 2)
		s += (uint32_t)(icmp[i] << 8 | icmp[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	icmp[2] = (unsigned char)(~s >> 8);
	icmp[3] = (unsigned char)~s;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IPV6),
				   .sll_ifindex = ifindex, .sll_halen = 6 };
	memcpy(sll.sll_addr, all_nodes_mac, 6);
	return sendto(sock, f, sizeof(f), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0 ? -1 : 0;
}

/* Announce one address of the identity: gratuitous ARP for IPv4 (sock4),
 * unsolicited neighbour advertisement for IPv6 (sock6). */
static int send_garp(int sock4, int sock6, const char *ifname, const char *mac_s,
		     const char *cidr)
{
	struct in_addr ip;
	struct in6_addr ip6;
	unsigned m[6];
	unsigned char mac[6];
	if (sscanf(mac_s, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
		return -1;
	for (int k = 0; k < 6; k++)
		mac[k] = (unsigned char)m[k];
	int ifindex = (int)if_nametoindex(ifname);
	if (!ifindex)
		return -1;
	if (addr_of(cidr, AF_INET, &ip))
		return send_arp_request(sock4, ifindex, mac, ip, ip);
	if (addr_of(cidr, AF_INET6, &ip6))
		return send_una(sock6, ifindex, mac, &ip6);
	return 0;
}

/* setns() changes only the calling thread, so announce from a thread.
 * The caller goes on once the frames are sent; the thread then closes
 * its sockets and ends by itself, because closing a packet socket waits
 * for an RCU grace period (synchronize_net), about 10 ms each here, and
 * the container is frozen until the target says it runs. */
static void *announce_thread(void *arg)
{
	struct announce_job *j = arg;
	int s = -1, s6 = -1;
	int nsfd = open(j->path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		j->rc = vy_error_sys(j->err, errno, "enter %s", j->path);
		goto out;
	}
	s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
	s6 = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IPV6));
	if (s < 0 || s6 < 0) {
		j->rc = vy_error_sys(j->err, errno, "packet socket");
		goto out;
	}
	json_object *ifs = json_object_object_get(j->identity, "interfaces");
	for (size_t k = 0; ifs && k < json_object_array_length(ifs); k++) {
		json_object *i = json_object_array_get_idx(ifs, k);
		json_object *addrs = json_object_object_get(i, "addrs");
		for (size_t a = 0; addrs && a < json_object_array_length(addrs); a++)
			if (send_garp(s, s6, vy_json_str(i, "name", ""), vy_json_str(i, "mac", ""),
				      json_object_get_string(json_object_array_get_idx(addrs, a))) < 0)
				j->rc = vy_error_sys(j->err, errno, "announce %s on %s",
						     json_object_get_string(json_object_array_get_idx(addrs, a)),
						     vy_json_str(i, "name", ""));
	}
out:
	/* From here on the caller's err and identity are not ours. */
	if (write(j->done, &j->rc, sizeof(j->rc)) != (ssize_t)sizeof(j->rc))
		vy_warn("announce: cannot tell the caller: %s", strerror(errno));
	close(j->done);
	if (nsfd >= 0)
		close(nsfd);
	if (s >= 0)
		close(s);
	if (s6 >= 0)
		close(s6);
	free(j);
	return NULL;
}

int vy_net_announce(const char *path, json_object *identity, vy_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return vy_error_sys(err, errno, "pipe");
	struct announce_job *j = malloc(sizeof(*j));
	if (!j) {
		close(p[0]);
		close(p[1]);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	*j = (struct announce_job){ path, identity, err, 0, p[1] };
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&t, &a, announce_thread, j);
	pthread_attr_destroy(&a);
	if (rc != 0) {
		free(j);
		close(p[0]);
		close(p[1]);
		return vy_error_set(err, EAGAIN, "cannot start a thread");
	}
	int got = -1;
	ssize_t n;
	do
		n = read(p[0], &got, sizeof(got));
	while (n < 0 && errno == EINTR);
	close(p[0]);
	if (n != (ssize_t)sizeof(got))
		return vy_error_set(err, EIO, "announce: the thread ended without a word");
	return got;
}

static int arp_probe_socket(const char *ifname, int *ifindex, unsigned char mac[6], vy_error *err)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
	if (s < 0)
		return vy_error_sys(err, errno, "packet socket");
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	/* ifr_hwaddr and ifr_ifindex share a union: read one, then the other. */
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
		int e = errno;
		close(s);
		return vy_error_sys(err, e, "interface %s", ifname);
	}
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
		int e = errno;
		close(s);
		return vy_error_sys(err, e, "interface %s", ifname);
	}
	*ifindex = ifr.ifr_ifindex;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
				   .sll_ifindex = *ifindex };
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int e = errno;
		close(s);
		return vy_error_sys(err, e, "bind to %s", ifname);
	}
	return s;
}

/* Wait for an ARP reply from ip; fills who with the answering MAC. */
static bool await_reply(int s, struct in_addr ip, int wait_ms, char who[18])
{
	uint64_t end = vy_now_ms() + (uint64_t)wait_ms;
	for (;;) {
		uint64_t now = vy_now_ms();
		if (now >= end)
			return false;
		struct pollfd p = { s, POLLIN, 0 };
		if (poll(&p, 1, (int)(end - now)) <= 0)
			continue;
		unsigned char buf[128];
		ssize_t n = recv(s, buf, sizeof(buf), 0);
		if (n < 42)
			continue;
		struct ether_arp *arp = (struct ether_arp *)(buf + sizeof(struct ether_header));
		if (ntohs(arp->arp_op) != ARPOP_REPLY || memcmp(arp->arp_spa, &ip, 4) != 0)
			continue;
		snprintf(who, 18, "%02x:%02x:%02x:%02x:%02x:%02x", arp->arp_sha[0], arp->arp_sha[1],
			 arp->arp_sha[2], arp->arp_sha[3], arp->arp_sha[4], arp->arp_sha[5]);
		return true;
	}
}

int vy_net_probe(const char *bridge, json_object *identity, int wait_ms, vy_error *err)
{
	int ifindex = 0;
	unsigned char mac[6];
	int s = arp_probe_socket(bridge, &ifindex, mac, err);
	if (s < 0)
		return vy_error_wrap(err, "duplicate address detection");
	int rc = 0;
	json_object *ifs = json_object_object_get(identity, "interfaces");
	for (size_t k = 0; rc == 0 && ifs && k < json_object_array_length(ifs); k++) {
		json_object *addrs = json_object_object_get(json_object_array_get_idx(ifs, k), "addrs");
		for (size_t a = 0; rc == 0 && addrs && a < json_object_array_length(addrs); a++) {
			const char *cidr = json_object_get_string(json_object_array_get_idx(addrs, a));
			struct in_addr ip, none = { 0 };
			char who[18];
			if (!addr_of(cidr, AF_INET, &ip))
				continue;
			for (int tries = 0; rc == 0 && tries < 2; tries++) {
				send_arp_request(s, ifindex, mac, none, ip);
				if (await_reply(s, ip, wait_ms / 2, who))
					rc = vy_error_set(err, EADDRINUSE, "address %s is already in use "
							  "on the segment (answered by %s); pick "
							  "another", cidr, who);
			}
		}
	}
	close(s);
	return rc;
}

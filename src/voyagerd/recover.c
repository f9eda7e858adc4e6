/* recover.c - what a restarted agent does with migrations its previous run
 * left unfinished, read from the journals.
 *
 * As source: a migration that was committed only lacks its cleanup; one
 * that checkpointed but never committed is rolled back (the container is
 * restored here from our checkpoint); one that never checkpointed did not
 * touch the container.  As target: a migration that restored but had not
 * heard COMMIT asks the source; anything earlier is dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "daemon.h"
#include "jit.h"
#include "log.h"
#include "netns.h"
#include "postcopy.h"
#include "util.h"

static void finish_journal(struct vy_daemon *d, json_object *j, const char *result,
			   const char *why)
{
	json_object_object_add(j, "recovered", json_object_new_boolean(1));
	struct vy_journal *jr;
	vy_error err;
	if (vy_journal_adopt(d->state_dir, json_object_get(j), &jr, &err) < 0 ||
	    vy_journal_finish(jr, result, why, &err) < 0)
		vy_err("recover %s: %s", vy_json_str(j, "id", "?"), err.msg);
	vy_journal_free(jr);
}

/* Undo the network lock and detach of an interrupted migration. */
static void recover_network(json_object *j)
{
	const char *ns = vy_json_str(j, "netns", NULL);
	json_object *net = json_object_object_get(j, "net");
	if (!ns || !net)
		return;
	vy_net_link(net, true, NULL);
	vy_net_unlock(ns, NULL);
	vy_net_announce(ns, net, NULL);
}

static void recover_source(struct vy_daemon *d, json_object *j)
{
	const char *id = vy_json_str(j, "id", "");
	const char *container = vy_json_str(j, "container", "");
	const char *dir = vy_json_str(j, "source_dir", "");
	const char *dec = vy_json_str(j, "decision", "");
	vy_error err;
	struct vy_container_state st;
	/* post-copy: end CRIU's page-server session first (postcopy.c) */
	bool lazy = vy_postcopy_recover_source(d, j);
	if (!strcmp(dec, "committed")) {
		/* The target owns it: the frozen original must not run again. */
		if (vy_runtime_state(&d->rt, container, &st, NULL) == 0 &&
		    strcmp(st.status, "absent") != 0)
			vy_runtime_delete(&d->rt, container, true, NULL);
		const char *ns = vy_json_str(j, "netns", NULL);
		if (ns && vy_path_is_under(ns, d->netns_dir))
			vy_netns_delete(ns, NULL);
		if (!strcmp(vy_json_str(j, "mode", ""), "jit")) {
			/* The target still reads its files from us. */
			json_object_object_add(j, "serving", json_object_new_boolean(1));
			finish_journal(d, j, "migrated", NULL);
			if (vy_serve_recover(d, j, &err) < 0)
				vy_err("recover %s: %s", id, err.msg);
			return;
		}
		/* We do not know whether the target confirmed its copy is on
		 * disk, so our checkpoint stays until an operator removes it. */
		json_object_object_add(j, "checkpoint_kept", json_object_new_string(dir));
		finish_journal(d, j, "migrated", NULL);
		vy_warn("recover %s: committed; checkpoint kept in %s", id, dir);
		return;
	}
	bool checkpointed = json_object_get_boolean(json_object_object_get(j, "checkpointed"));
	bool frozen = json_object_get_boolean(json_object_object_get(j, "frozen"));
	if (!checkpointed && !frozen) {
		finish_journal(d, j, "failed", "agent restarted before the checkpoint");
		return;
	}
	/* No commit was recorded, so the container is ours: thaw the frozen
	 * original, or restore it from our checkpoint if it is gone. */
	json_object_object_add(j, "decision", json_object_new_string("rolled-back"));
	finish_journal(d, j, "rolled-back", "agent restarted mid-migration");
	if (vy_runtime_state(&d->rt, container, &st, &err) < 0) {
		vy_err("recover %s: %s", id, err.msg);
		return;
	}
	recover_network(j);
	if (!strcmp(st.status, "paused")) {
		if (vy_runtime_resume(&d->rt, container, &err) < 0)
			vy_err("recover %s: cannot thaw %s: %s", id, container, err.msg);
		else
			vy_info("recover %s: rolled back, %s runs here again", id, container);
		vy_rm_rf(dir, NULL);
	} else if (!strcmp(st.status, "absent") && checkpointed && !lazy) {
		char images[PATH_MAX], work[PATH_MAX];
		snprintf(images, sizeof(images), "%s/images", dir);
		snprintf(work, sizeof(work), "%s/work-recover", dir);
		vy_mkdir_p(work, 0700, NULL);
		const char *bundle = vy_json_str(j, "bundle", "");
		if (vy_runtime_restore(&d->rt, container, bundle, images, work, NULL, &err) < 0)
			vy_err("recover %s: cannot restore %s: %s", id, container, err.msg);
		else
			vy_info("recover %s: rolled back, %s runs here again", id, container);
	}
}

/* jit, committed: voyager-fs went on without us; follow it to the end. */
static void resume_hydration(struct vy_daemon *d, json_object *j)
{
	const char *id = vy_json_str(j, "id", "");
	json_object *arr = json_object_object_get(j, "fs");
	struct vy_fs_mount fs[2 + VY_MAX_VOLUMES];
	int n = 0;
	vy_error err;
	for (size_t i = 0; arr && i < json_object_array_length(arr) && n < 2 + VY_MAX_VOLUMES; i++)
		if (vy_fs_from_json(json_object_array_get_idx(arr, i), &fs[n], &err) == 0)
			n++;
	struct vy_journal *jr;
	if (vy_journal_adopt(d->state_dir, json_object_get(j), &jr, &err) < 0) {
		vy_err("recover %s: %s", id, err.msg);
		return;
	}
	struct vy_active *act = vy_active_add(id, vy_json_str(j, "container", ""), "target",
					      vy_json_str(j, "peer", ""));
	vy_info("recover %s: committed; following hydration of %d trees", id, n);
	vy_jit_hydrate(d, jr, act, id, vy_json_str(j, "peer", ""), fs, n);
	vy_active_remove(act);
	vy_journal_free(jr);
}

static void *recover_target(void *arg)
{
	void **a = arg;
	struct vy_daemon *d = a[0];
	json_object *j = a[1];
	free(a);
	const char *container = vy_json_str(j, "container", "");
	const char *dirs = vy_json_str(j, "target_dirs", "");
	const char *id = vy_json_str(j, "id", "");
	const char *phase = vy_json_str(j, "phase", "");
	char mig[PATH_MAX];
	snprintf(mig, sizeof(mig), "%s/migrations/%s", d->state_dir, id);
	if (!strcmp(vy_json_str(j, "mode", ""), "jit") &&
	    (!strcmp(phase, "committed") || !strcmp(phase, "hydrating") ||
	     !strcmp(phase, "independent"))) {
		vy_rm_rf(mig, NULL);
		resume_hydration(d, j);
	} else if (json_object_get_boolean(json_object_object_get(j, "restored"))) {
		vy_runtime_pause(&d->rt, container, NULL);
		vy_warn("recover %s: %s was restored but not committed; asking the source", id,
			container);
		for (int i = 0;; i++) {
			const char *dec = vy_target_ask_source(d, vy_json_str(j, "peer", ""), id);
			if (!strcmp(dec, "committed")) {
				vy_runtime_resume(&d->rt, container, NULL);
				vy_rm_rf(mig, NULL);
				if (!strcmp(vy_json_str(j, "mode", ""), "jit")) {
					resume_hydration(d, j);
					break;
				}
				finish_journal(d, j, "migrated", NULL);
				break;
			}
			if (!strcmp(dec, "rolled-back") || !strcmp(dec, "unknown")) {
				vy_runtime_delete(&d->rt, container, true, NULL);
				vy_rm_rf(mig, NULL);
				if (dirs[0])
					vy_fs_unmount_under(dirs);
				vy_rm_rf(dirs, NULL);
				if (vy_json_str(j, "netns", NULL))
					vy_netns_delete(vy_json_str(j, "netns", ""), NULL);
				finish_journal(d, j, "aborted", "the source rolled back");
				break;
			}
			sleep(i < 10 ? 1 : 5);
		}
	} else {
		vy_rm_rf(mig, NULL);
		if (dirs[0])
			vy_fs_unmount_under(dirs);
		if (dirs[0])
			vy_rm_rf(dirs, NULL);
		if (vy_json_str(j, "netns", NULL))
			vy_netns_delete(vy_json_str(j, "netns", ""), NULL);
		finish_journal(d, j, "aborted", "agent restarted before restore");
	}
	json_object_put(j);
	return NULL;
}

void vy_recover(struct vy_daemon *d)
{
	json_object *all;
	if (vy_journal_load_all(d->state_dir, &all, NULL) < 0)
		return;
	for (size_t i = 0; i < json_object_array_length(all); i++) {
		json_object *j = json_object_array_get_idx(all, i);
		const char *role = vy_json_str(j, "role", "");
		if (json_object_object_get(j, "result")) {
			/* A jit source keeps serving until the target releases it. */
			vy_error err;
			if (!strcmp(role, "source") && !strcmp(vy_json_str(j, "mode", ""), "jit") &&
			    json_object_get_boolean(json_object_object_get(j, "serving")) &&
			    !json_object_get_boolean(json_object_object_get(j, "released")) &&
			    vy_serve_recover(d, j, &err) < 0)
				vy_err("recover: %s", err.msg);
			continue;
		}
		vy_info("recovering migration %s (%s, %s, phase %s)", vy_json_str(j, "id", ""),
			role, vy_json_str(j, "container", ""), vy_json_str(j, "phase", ""));
		if (!strcmp(role, "source")) {
			recover_source(d, j);
		} else if (!strcmp(role, "target")) {
			void **a = malloc(2 * sizeof(void *));
			pthread_t t;
			if (!a)
				continue;
			a[0] = d;
			a[1] = json_object_get(j);
			if (pthread_create(&t, NULL, recover_target, a) == 0)
				pthread_detach(t);
		}
	}
	json_object_put(all);
}

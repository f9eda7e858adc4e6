/* postcopy.h - post-copy memory (CRIU lazy pages) in a migration.
 *
 * The container resumes on the target before its memory has arrived: the
 * checkpoint keeps the pages on the source, served by CRIU's page server,
 * and the target's `criu lazy-pages` fetches them on fault and in the
 * background.  The page traffic never crosses an open port: the page
 * server's port is guarded (lazypages.h) and the target reaches it through
 * a tunnel (tunnel.h) of two TLS channels that the target opens to the
 * source agent's own port, each starting with HELLO {"role": "tunnel",
 * "tunnel": ID, "direction"}.
 *
 *   source                                   target
 *   prepare: port, guard, pipe limit         pre-flight: uffd, lazy pages,
 *   freeze, lazy checkpoint -> status byte     pipe limit
 *   images (small) as stream 0 ------------> receive
 *   RESTORE {"lazy_pages": true} ----------> criu lazy-pages, tunnel
 *                                            runc restore --lazy-pages
 *   downtime ends <------------------------- RESTORED
 *   EXPOSED: the target's memory lives here  pages move through the tunnel
 *   pages_ok <------------------------------ ACK {"what": "pages", "ok",
 *                                                 "lazy_pages_exit", ...}
 *   commit, cleanup (as for stop-copy)
 *
 * The decision.  Nothing commits before the target's lazy-pages daemon has
 * exited 0: that is the one witness that every page arrived (the source's
 * checkpoint exits 0 on any clean end of file).  Until then the source's
 * frozen container is the only whole copy, so every failure rolls back:
 * - the lazy-pages daemon fails, or the link to the source breaks, while
 *   exposed: the target deletes its copy (its memory is incomplete and can
 *   never be completed) and then says so; the source thaws its original;
 * - the source must never thaw while the target's copy may run: after
 *   RESTORED a rollback first gets the target's word that its copy is gone
 *   (ABORT acknowledged, retried for a minute); without it the container
 *   stays frozen here and the migration fails, saying so;
 * - the source dies while exposed: the target's copy is deleted as above;
 *   a restarted source agent ends the page-server session and thaws its
 *   original.  If the source *host* is lost, so is the container: a
 *   post-copy checkpoint holds no pages.  The report says the migration
 *   was exposed, and for how long.
 */
#ifndef VY_POSTCOPY_H
#define VY_POSTCOPY_H

#include <json-c/json.h>

#include "channel.h"
#include "daemon.h"
#include "error.h"

struct migration;

/* ---- source (source.c) ------------------------------------------------ */

/* Before the freeze: pick the page server's port, guard it, raise the
 * pipe limit if CRIU needs it, open the tunnel for the target. */
int vy_postcopy_prepare(struct migration *m, vy_error *err);
/* In the freeze, instead of the runtime's checkpoint: the lazy checkpoint,
 * until CRIU's status byte.  On failure CRIU has ended. */
int vy_postcopy_dump(struct migration *m, vy_error *err);
/* After RESTORED: wait for the target's word that every page arrived. */
int vy_postcopy_await_pages(struct migration *m, vy_error *err);
/* Before the source thaws (rollback) or deletes (cleanup) its original:
 * make sure the target's copy is gone (rollback after RESTORED), then end
 * the page-server session and wait for CRIU, so the container is paused
 * and no longer under ptrace. */
int vy_postcopy_source_end(struct migration *m, bool rollback, vy_error *err);
/* The report's "post_copy" member. */
void vy_postcopy_report(struct migration *m, json_object *report);
/* Always, last: guard removed, pipe lease released, tunnel closed. */
void vy_postcopy_source_free(struct migration *m);

/* server.c: a peer's HELLO {"role": "tunnel"}.  Returns when the tunnel is
 * over; the caller closes ch. */
void vy_postcopy_tunnel_serve(struct vy_daemon *d, vy_channel *ch, json_object *hello);

/* recover.c: an interrupted post-copy source migration: end its page
 * server session (so the container is paused again) and drop its guard.
 * Returns true if the journal is a post-copy one (its checkpoint holds no
 * pages, so it can never be restored from). */
bool vy_postcopy_recover_source(struct vy_daemon *d, json_object *journal);

/* ---- target (target.c) ------------------------------------------------ */

struct vy_pc_target;

/* Pre-flight: when req asks for post-copy, check this host (userfaultfd,
 * the runtime's lazy pages, the pipe limit) and make *out; else *out is
 * NULL. */
int vy_postcopy_target_preflight(struct vy_daemon *d, json_object *req,
				 struct vy_pc_target **out, vy_error *err);
/* Before `runc restore --lazy-pages`: the tunnel's local end and the
 * lazy-pages daemon, reading images from image_dir, its socket in work. */
int vy_postcopy_target_start(struct vy_pc_target *pc, const char *source_addr,
			     const char *id, const char *image_dir,
			     const char *work_dir, vy_error *err);
/* A message from the source while pages arrive: 0 if it was taken. */
typedef int (*vy_pc_message_fn)(void *arg, struct vy_message *msg);
/* After RESTORED: wait until every page is here, and tell the source.  On
 * failure the container has been deleted (before the source is told).  A
 * message the source sends meanwhile goes to on_message (may be NULL). */
int vy_postcopy_target_pages(struct vy_pc_target *pc, vy_channel *ch,
			     const char *container, struct vy_journal *j,
			     vy_pc_message_fn on_message, void *arg, vy_error *err);
/* Whether vy_postcopy_target_start() ran (the target starts the daemon as
 * soon as the images are in, while the trees still arrive, else at the
 * restore). */
bool vy_postcopy_target_started(const struct vy_pc_target *pc);
/* Until the started daemon listens for the restore (fails if it died). */
int vy_postcopy_target_ready(struct vy_pc_target *pc, vy_error *err);
void vy_postcopy_target_free(struct vy_pc_target *pc);
/* vy_target_abort: has migration id settled here (no journal, or one with
 * a result)?  A restarted agent's recovery may still be deciding. */
bool vy_postcopy_target_settled(struct vy_daemon *d, const char *id);

#endif

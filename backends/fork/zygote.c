/*
 * EXEC_FORK: a generation's zygote, a single-threaded process forked by the
 * supervisor thread after the context was built (with fork hooks: by the
 * host's thread, hostfork.c). It forks the workers on request (so they never
 * come from a host's threads), passes each one's pidfd to the supervisor,
 * reaps them and reports their wait status. A worker it cannot give a pidfd
 * for is killed and reported as failed: the supervisor never has a process
 * it cannot watch. It ends when its channel does, and when the host process
 * does: PR_SET_PDEATHSIG when the supervisor forked it (the thread lives as
 * long as the executor), a pidfd of the host when a host's thread did (that
 * thread may end any time; the death signal would follow the thread, not the
 * process). Everything here runs in the zygote process.
 */
#include "fork.h"

#include <ck_pr.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* Closes what belongs to other processes' business: other generations'
 * channels and every pidfd the supervisor holds. */
static void fk_z_close_theirs(struct fk *fk)
{
    for (unsigned k = 0; k < FK_MAXGEN; k++) {
        struct fk_gen *o = &fk->gens[k];
        if (o->zsock >= 0)
            close(o->zsock);
        if (o->zpidfd >= 0)
            close(o->zpidfd);
        if (o->w)
            for (unsigned i = 0; i < o->nw; i++) {
                if (o->w[i].p.pidfd >= 0)
                    close(o->w[i].p.pidfd);
                if (o->w[i].s.pidfd >= 0)
                    close(o->w[i].s.pidfd);
            }
    }
}

static int fk_z_int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* EXEC_CLOSE_FDS: closes every descriptor but 0-2, the zygote's channel,
 * the two eventfds its workers write and the host's keep_fds. */
static void fk_z_close_host(struct fk *fk, int sock)
{
    const exec_options_t *o = fk->o;
    int keep[1024 + 6];
    unsigned n = 0;
    keep[n++] = 0, keep[n++] = 1, keep[n++] = 2;
    keep[n++] = sock;
    keep[n++] = exec__efd(fk->ex);
    keep[n++] = fk->sup_efd;
    for (unsigned i = 0; i < o->n_keep_fds; i++)
        keep[n++] = o->keep_fds[i];
    qsort(keep, n, sizeof keep[0], fk_z_int_cmp);
    unsigned lo = 0;
    for (unsigned i = 0; i <= n; i++) {
        unsigned hi = i < n ? (unsigned)keep[i] : ~0u; /* close [lo, hi) */
        if (hi > lo && close_range(lo, hi - 1, 0) != 0) {
            /* Kernels before 5.9: one at a time, up to the table's size. */
            long max = sysconf(_SC_OPEN_MAX);
            for (long fd = lo; fd < (long)hi && fd < max; fd++)
                close((int)fd);
        }
        if (i < n && (unsigned)keep[i] + 1 > lo)
            lo = (unsigned)keep[i] + 1;
    }
}

/* Forks process number zi; reports SPAWNED with its pidfd, or FAILED. */
static void fk_z_spawn(struct fk *fk, struct fk_gen *g, int *sock, int sfd, int hostfd,
                       const struct fk_msg *m, pid_t self, unsigned *live)
{
    pid_t *pids = g->zpids;
    const exec_fork_hooks_t *hk = &fk->o->fork_hooks;
    if (hk->prepare)
        hk->prepare(hk->arg);
    pid_t c = fork();
    if (c == 0)
        fk_worker_main(fk, g, (unsigned)m->idx % g->nw, m->val != 0, *sock, sfd, hostfd, self);
    int err = errno;
    if (hk->parent)
        hk->parent(hk->arg, c < 0 ? -err : c);
    if (c < 0) {
        struct fk_msg f = {FK_M_FAILED, m->idx, 0, err};
        fk_chan_send(sock, &f, -1);
        return;
    }
    setpgid(c, c);
    int pfd = pidfd_open(c, 0);
    if (pfd < 0) {
        /* Without its pidfd the supervisor could not watch it: it never runs
         * a record (it waits to be admitted), so it goes now. */
        err = errno;
        kill(-c, SIGKILL);
        kill(c, SIGKILL);
        waitpid(c, NULL, __WALL);
        struct fk_msg f = {FK_M_FAILED, m->idx, 0, err};
        fk_chan_send(sock, &f, -1);
        return;
    }
    pids[m->idx] = c;
    (*live)++;
    struct fk_msg s = {FK_M_SPAWNED, m->idx, c, 0};
    fk_chan_send(sock, &s, pfd);
    close(pfd);
}

void fk_zygote_main(struct fk *fk, struct fk_gen *g, int sock, pid_t parent)
{
    const bool hooked = fk_hooked(fk);
    if (!hooked)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    setpgid(0, 0);
    fk_z_close_theirs(fk);
    if (fk->o->flags & EXEC_CLOSE_FDS)
        fk_z_close_host(fk, sock);
    int hostfd = -1;
    if (hooked) {
        /* The host process, watched: opened, then checked to be our parent
         * still (if it died first, the pid may be another process's now). */
        hostfd = pidfd_open(parent, 0);
        if (hostfd < 0) {
            struct fk_msg f = {FK_M_FAILED, -1, 0, errno};
            fk_chan_send(&sock, &f, -1);
            _exit(1);
        }
        if (getppid() != parent)
            _exit(1);
    }
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    const exec_fork_hooks_t *hk = &fk->o->fork_hooks;
    if (hk->child)
        hk->child(hk->arg);
    /* Every signal is still blocked (the forking thread's mask): SIGCHLD
     * comes through a signalfd. Workers unblock them all. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        struct fk_msg f = {FK_M_FAILED, -1, 0, errno};
        fk_chan_send(&sock, &f, -1);
        _exit(1);
    }
    pid_t self = getpid();
    pid_t *pids = g->zpids;
    unsigned live = 0;
    bool exiting = false;
    uint64_t deadline = 0;
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG | __WALL)) > 0) {
            for (unsigned i = 0; i < 2 * g->nw; i++) {
                if (pids[i] == p) {
                    pids[i] = 0;
                    live--;
                    /* Whatever it forked into its group goes with it. */
                    kill(-p, SIGKILL);
                    struct fk_msg m = {FK_M_EXITED, (int32_t)i, p, st};
                    fk_chan_send(&sock, &m, -1);
                    break;
                }
            }
        }
        if (exiting && live == 0)
            _exit(0);
        int timeout = -1;
        if (exiting) {
            uint64_t now = exec__now_ns();
            if (now >= deadline) {
                for (unsigned i = 0; i < 2 * g->nw; i++)
                    if (pids[i] > 0) {
                        kill(-pids[i], SIGKILL);
                        kill(pids[i], SIGKILL);
                    }
                timeout = 50;
            } else {
                timeout = (int)((deadline - now) / 1000000u) + 1;
            }
        }
        /* The signalfd, the host (-1: not watched, or gone), the channel. */
        struct pollfd pf[3] = {{.fd = sfd, .events = POLLIN},
                               {.fd = hostfd, .events = POLLIN},
                               {.fd = sock, .events = POLLIN}};
        int r = poll(pf, sock >= 0 ? 3 : 2, timeout);
        if (r < 0 && errno != EINTR)
            _exit(1);
        if (pf[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
        }
        if (hostfd >= 0 && pf[1].revents) {
            /* The host process is gone (its channel may live on in a child
             * it forked): stop now, as at the channel's end. */
            close(hostfd);
            hostfd = -1;
            if (sock >= 0)
                close(sock);
            sock = -1;
            exiting = true;
            deadline = 0;
            continue;
        }
        if (sock < 0 || !pf[2].revents)
            continue;
        struct fk_msg m;
        int fd;
        bool cut;
        int got = fk_chan_recv(sock, &m, &fd, &cut);
        if (fd >= 0)
            close(fd); /* the supervisor never sends one */
        if (got == 0)
            continue;
        if (got < 0) {
            /* The supervisor is gone: stop now. */
            close(sock);
            sock = -1;
            exiting = true;
            deadline = 0;
            continue;
        }
        if (m.op == FK_M_EXIT) {
            exiting = true;
            deadline = exec__now_ns() + (uint64_t)(m.val > 0 ? m.val : 0) * 1000000u;
            for (unsigned i = 0; i < g->nw; i++) {
                struct fk_hdr *h = fk_hdr_at(g, i);
                ck_pr_store_32(&h->stop, 1);
                ck_ec32_inc(&h->ec, &exec__ec_procs);
            }
        } else if (m.op == FK_M_KILL && m.idx >= 0 && (unsigned)m.idx < 2 * g->nw &&
                   pids[m.idx] == m.pid && m.pid > 0) {
            /* Ours and not reaped yet: the pid is still that process. */
            kill(-m.pid, SIGKILL);
            kill(m.pid, SIGKILL);
        } else if (m.op == FK_M_SPAWN && !exiting && m.idx >= 0 &&
                   (unsigned)m.idx < 2 * g->nw && pids[m.idx] == 0) {
            fk_z_spawn(fk, g, &sock, sfd, hostfd, &m, self, &live);
        }
    }
}

/*
 * EXEC_FORK: the channel between the supervisor thread and a generation's
 * zygote, a SOCK_SEQPACKET pair: fixed-size messages (struct fk_msg), a new
 * worker's pidfd passed with SCM_RIGHTS. Both sides use these calls.
 */
#include "fork.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void fk_chan_send(int *sock, const struct fk_msg *m, int fd)
{
    if (*sock < 0)
        return;
    struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t r;
    do
        r = sendmsg(*sock, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN) {
        close(*sock);
        *sock = -1;
    }
}

int fk_chan_recv(int sock, struct fk_msg *m, int *fd, bool *cut)
{
    *fd = -1;
    *cut = false;
    struct iovec iov = {.iov_base = m, .iov_len = sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    /* A peer that left with our messages unread (a zygote that failed and
     * exited before it read its SPAWNs) resets the pair: the kernel says so
     * once, ECONNRESET, and then still hands over what the peer sent before
     * it left (the FAILED that says why). */
    ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == ECONNRESET)
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                c->cmsg_len >= CMSG_LEN(sizeof(int)) && *fd < 0)
                memcpy(fd, CMSG_DATA(c), sizeof *fd);
        /* A descriptor we had no room for (a full fd table) is dropped by the
         * kernel: the message says so. */
        *cut = (mh.msg_flags & MSG_CTRUNC) != 0;
    }
    if (n != (ssize_t)sizeof *m) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return -1; /* the end, or not our message: the peer is gone or broken */
    }
    return 1;
}

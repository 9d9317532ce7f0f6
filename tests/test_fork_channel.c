/*
 * EXEC_FORK's channel between the supervisor and a zygote (channel.c): what
 * one side sent reaches the other, also when the sender has gone, and also
 * when it went with messages of ours unread (a zygote that failed at start
 * exits before it reads its SPAWNs; its FAILED still says why).
 */
#include "suite.h"

#include "fork.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static int recv1(int sock, struct fk_msg *m)
{
    int fd;
    bool cut;
    int got = fk_chan_recv(sock, m, &fd, &cut);
    assert_int_equal(fd, -1);
    assert_false(cut);
    return got;
}

/* Messages both ways, then the end. */
static void test_both_ways(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct fk_msg a = {FK_M_SPAWN, 3, 0, 1}, b = {FK_M_SPAWNED, 3, 1234, 0}, m;
    fk_chan_send(&sv[0], &a, -1);
    fk_chan_send(&sv[1], &b, -1);
    assert_int_equal(recv1(sv[1], &m), 1);
    assert_memory_equal(&m, &a, sizeof m);
    assert_int_equal(recv1(sv[0], &m), 1);
    assert_memory_equal(&m, &b, sizeof m);
    assert_int_equal(recv1(sv[0], &m), 0); /* nothing yet */
    close(sv[1]);
    assert_int_equal(recv1(sv[0], &m), -1); /* the end */
    close(sv[0]);
}

/* The peer sent FAILED and left without reading what we had sent it: the
 * FAILED arrives first, then the end. */
static void test_peer_left_with_ours_unread(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    for (int i = 0; i < 3; i++) {
        struct fk_msg spawn = {FK_M_SPAWN, i, 0, 0};
        fk_chan_send(&sv[0], &spawn, -1);
    }
    struct fk_msg failed = {FK_M_FAILED, -1, 0, EMFILE}, m;
    fk_chan_send(&sv[1], &failed, -1);
    assert_true(sv[1] >= 0);
    close(sv[1]); /* three SPAWNs unread */
    assert_int_equal(recv1(sv[0], &m), 1);
    assert_int_equal(m.op, FK_M_FAILED);
    assert_int_equal(m.idx, -1);
    assert_int_equal(m.val, EMFILE);
    assert_int_equal(recv1(sv[0], &m), -1);
    close(sv[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_ways),
        cmocka_unit_test(test_peer_left_with_ours_unread),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}

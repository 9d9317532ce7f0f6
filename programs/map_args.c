/*
 * executor-map's command line (map_args.h): apart from main() so that the
 * fuzzer can drive it.
 */
#include "map_args.h"
#include "parse_num.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "executor-map"

int map_args_parse(int argc, char **argv, struct map_args *a)
{
    memset(a, 0, sizeof *a);
    a->backend = EXEC_AUTO;
    a->so.flags = EXEC_SOURCE_HEADER;
    unsigned long long v;
    optind = 0; /* getopt's own state: a fresh scan */
    enum { O_PLUGIN = 1, O_SPEC, O_BACKEND, O_WORKERS, O_ORDERED, O_FORMAT, O_NOHDR, O_DELIM,
           O_SKIP, O_MAXREC, O_PROGRESS, O_QUIET, O_STATS, O_HELP, O_RANKS, O_RANK_BACKEND,
           O_RANK_TIMEOUT, O_STATUS_FILE };
    static const struct option longopts[] = {
        {"plugin", required_argument, NULL, O_PLUGIN},
        {"spec", required_argument, NULL, O_SPEC},
        {"backend", required_argument, NULL, O_BACKEND},
        {"workers", required_argument, NULL, O_WORKERS},
        {"ordered", no_argument, NULL, O_ORDERED},
        {"format", required_argument, NULL, O_FORMAT},
        {"no-header", no_argument, NULL, O_NOHDR},
        {"delim", required_argument, NULL, O_DELIM},
        {"skip-bad", no_argument, NULL, O_SKIP},
        {"max-record", required_argument, NULL, O_MAXREC},
        {"progress", no_argument, NULL, O_PROGRESS},
        {"quiet", no_argument, NULL, O_QUIET},
        {"stats", no_argument, NULL, O_STATS},
        {"help", no_argument, NULL, O_HELP},
        {"ranks", required_argument, NULL, O_RANKS},
        {"rank-backend", required_argument, NULL, O_RANK_BACKEND},
        {"rank-timeout", required_argument, NULL, O_RANK_TIMEOUT},
        {"status-file", required_argument, NULL, O_STATUS_FILE},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_PLUGIN: a->plugin_path = optarg; break;
        case O_SPEC: a->spec = optarg; break;
        case O_BACKEND:
            if (strcmp(optarg, "auto") == 0)
                a->backend = EXEC_AUTO;
            else if (strcmp(optarg, "threads") == 0)
                a->backend = EXEC_THREADS;
            else if (strcmp(optarg, "fork") == 0)
                a->backend = EXEC_FORK;
            else if (strcmp(optarg, "mpi") == 0)
                a->backend = EXEC_MPI;
            else {
                fprintf(stderr,
                        PROG ": --backend: expected auto, threads, fork or mpi, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case O_RANKS:
            if (prog_parse_uint(optarg, 1024, &v) || v == 0) {
                fprintf(stderr, PROG ": --ranks: expected 1..1024, not '%s'\n", optarg);
                return 2;
            }
            a->ranks = (unsigned)v;
            break;
        case O_RANK_BACKEND:
            if (strcmp(optarg, "auto") == 0)
                a->eo.rank_backend = EXEC_AUTO;
            else if (strcmp(optarg, "threads") == 0)
                a->eo.rank_backend = EXEC_THREADS;
            else if (strcmp(optarg, "fork") == 0)
                a->eo.rank_backend = EXEC_FORK;
            else {
                fprintf(stderr, PROG ": --rank-backend: expected auto, threads or fork\n");
                return 2;
            }
            break;
        case O_RANK_TIMEOUT:
            if (prog_parse_uint(optarg, 86400000, &v) || v == 0) {
                fprintf(stderr, PROG ": --rank-timeout: expected 1..86400000 ms, not '%s'\n",
                        optarg);
                return 2;
            }
            a->eo.rank_timeout_ms = (unsigned)v;
            break;
        case O_STATUS_FILE: a->status_file = optarg; break;
        case O_WORKERS:
            if (prog_parse_uint(optarg, 1024, &v) || v == 0) {
                fprintf(stderr, PROG ": --workers: expected 1..1024, not '%s'\n", optarg);
                return 2;
            }
            a->eo.workers = (unsigned)v;
            break;
        case O_ORDERED: a->eo.flags |= EXEC_ORDERED; break;
        case O_FORMAT:
            if (strcmp(optarg, "csv") == 0)
                a->so.format = EXEC_SOURCE_CSV;
            else if (strcmp(optarg, "lines") == 0)
                a->so.format = EXEC_SOURCE_LINES;
            else if (strcmp(optarg, "len32le") == 0)
                a->so.format = EXEC_SOURCE_LEN32LE;
            else if (strcmp(optarg, "len32be") == 0)
                a->so.format = EXEC_SOURCE_LEN32BE;
            else {
                fprintf(stderr, PROG ": --format: expected csv, lines, len32le or len32be\n");
                return 2;
            }
            break;
        case O_NOHDR: a->so.flags &= ~EXEC_SOURCE_HEADER; break;
        case O_DELIM:
            if (strlen(optarg) != 1 || optarg[0] == '"' || optarg[0] == '\n' ||
                optarg[0] == '\r') {
                fprintf(stderr, PROG ": --delim: expected one character other than a quote\n");
                return 2;
            }
            a->so.delim = (unsigned char)optarg[0];
            break;
        case O_SKIP: a->mo.flags |= EXEC_MAPS_SKIP_BAD; break;
        case O_MAXREC:
            if (prog_parse_uint(optarg, 64ul << 20, &v) || v == 0) {
                fprintf(stderr, PROG ": --max-record: expected 1..%lu bytes\n", 64ul << 20);
                return 2;
            }
            a->eo.max_record = v;
            break;
        case O_PROGRESS: a->mo.flags |= EXEC_MAPS_PROGRESS; break;
        case O_QUIET: a->mo.flags |= EXEC_MAPS_QUIET; break;
        case O_STATS: a->stats = true; break;
        case O_HELP:
        case 'h': a->help = true; break;
        default:
            if (optopt)
                fprintf(stderr, PROG ": option needs an argument or is unknown: %s\n",
                        argv[optind - 1]);
            else
                fprintf(stderr, PROG ": unknown option: %s\n", argv[optind - 1]);
            fprintf(stderr, "Try '" PROG " --help'.\n");
            return 2;
        }
    }
    if (a->so.format != EXEC_SOURCE_CSV)
        a->so.flags &= ~EXEC_SOURCE_HEADER;
    if (optind < argc)
        a->input = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, PROG ": one input file at most (got '%s' too)\n", argv[optind]);
        return 2;
    }
    if (a->backend != EXEC_MPI &&
        (a->ranks || a->eo.rank_backend != EXEC_AUTO || a->eo.rank_timeout_ms)) {
        fprintf(stderr, PROG ": --ranks, --rank-backend and --rank-timeout are for --backend mpi\n");
        return 2;
    }
    return 0;
}

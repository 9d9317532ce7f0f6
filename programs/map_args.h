/*
 * executor-map's command line, parsed (map_args.c).
 */
#ifndef EXEC_MAP_ARGS_H
#define EXEC_MAP_ARGS_H

#include "executor_records.h"

#include <stdbool.h>

struct map_args {
    const char *plugin_path, *spec, *input; /* pointers into argv; NULL when absent */
    const char *status_file;                /* --status-file, or NULL */
    exec_backend_t backend;
    exec_options_t eo;      /* workers, flags, max_record, rank_backend, rank_timeout_ms */
    exec_source_options_t so; /* format, flags, delim */
    exec_map_options_t mo;  /* flags */
    bool help, stats;
    unsigned ranks;         /* --ranks (mpi only), 0 when not given */
};

/* Fills a from the command line (getopt_long, scanned afresh). 0, or 2 after
 * a message on stderr for a usage error. Checks only what the line alone
 * says; whether --plugin and --spec are there is main()'s to say (--help
 * needs neither). */
int map_args_parse(int argc, char **argv, struct map_args *a);

#endif /* EXEC_MAP_ARGS_H */

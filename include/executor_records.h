/*
 * libexecutor's record layer: record sources that cut a file or descriptor
 * into records, CSV fields split inside process(), the file-to-file map
 * (exec_map_source(), exec_map_fd()), and the plugin ABI (exec_plugin_t,
 * exec_plugin_open()). Link with -lexecutor, as for executor.h.
 *
 * Everything here is a client of executor.h: it uses only calls that header
 * offers, and executor.h does not include this one (a program that only runs
 * records of its own needs nothing from it). The record sources' error codes
 * (EXEC_ENOBUFS, EXEC_EUNTERMINATED, EXEC_EBADQUOTE, EXEC_ETRUNCATED) are in
 * executor.h beside the others, so that exec_strerror() names every code.
 * The conventions are executor.h's: exec_/EXEC_ names, 0 or a negative code.
 */
#ifndef EXECUTOR_RECORDS_H
#define EXECUTOR_RECORDS_H

#include "executor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; everything declared here is its ABI. */
#pragma GCC visibility push(default)

/*
 * A record source reads a file or descriptor with large reads and cuts it into
 * records without parsing their fields. The reader only finds boundaries (a
 * quote-aware scan for CSV); fields are split later, inside process(), with
 * exec_csv_split() and friends, so parsing runs in parallel on the workers.
 *
 * Records are numbered from 1 in file order, the header row (if any) included:
 * record 1 is the first row of the file. The number is what error reports name
 * and what exec_map_source() uses as each record's tag.
 *
 * A source is used by one thread at a time. It holds one descriptor (closed by
 * exec_source_close() when the source opened it) and one buffer.
 */
typedef enum exec_source_format {
    EXEC_SOURCE_CSV = 0,      /* RFC 4180: quotes, "", delimiters and newlines
                                 inside quotes, LF or CRLF line ends */
    EXEC_SOURCE_LINES = 1,    /* one record per line, no quoting */
    EXEC_SOURCE_LEN32LE = 2,  /* each record: a 32-bit little-endian length,
                                 then that many bytes */
    EXEC_SOURCE_LEN32BE = 3   /* the same with a big-endian (network) length */
} exec_source_format_t;

/* Flags in exec_source_options_t.flags. */
#define EXEC_SOURCE_HEADER     0x1u /* the first record is a header: read at open,
                                       kept (exec_source_header), not returned */
#define EXEC_SOURCE_SKIP_EMPTY 0x2u /* CSV/LINES: drop empty lines (as csv.DictReader
                                       does); by default an empty line is an empty
                                       record (as csv.reader does) */

typedef struct exec_source_options {
    exec_source_format_t format; /* default EXEC_SOURCE_CSV */
    unsigned flags;              /* EXEC_SOURCE_* */
    int delim;                   /* CSV field delimiter: a byte (0..255) other
                                    than '"', CR and LF; default ',' */
    size_t max_record;           /* records longer than this are not held in
                                    memory: reported as EXEC_E2BIG; default and
                                    at most 64 MiB */
    size_t read_size;            /* bytes per read(); default 1 MiB */
} exec_source_options_t;

typedef struct exec_source exec_source_t;

/* Where and why a record could not be returned. */
typedef struct exec_source_error {
    int code;         /* EXEC_EUNTERMINATED, EXEC_EBADQUOTE, EXEC_ETRUNCATED,
                         EXEC_E2BIG, or an I/O error (-errno) */
    uint64_t record;  /* the record's number (from 1, header included) */
    uint64_t offset;  /* byte offset of the record's first byte in the input */
    uint64_t where;   /* byte offset of the offending byte (the stray quote, the
                         unterminated opening quote, the end of input) */
    uint64_t length;  /* the record's length in bytes as far as it was read */
    const void *data; /* the raw record (malformed records only; NULL for
                         EXEC_E2BIG); valid until the next call on the source */
} exec_source_error_t;

/*
 * Opens a source on path, or on fd (which stays the caller's: not closed). The
 * descriptor is read from its current position to its end. With
 * EXEC_SOURCE_HEADER the header is read now: a malformed header fails the open
 * with its code. opts may be NULL (CSV, no header, defaults).
 * Errors: EXEC_EINVAL, EXEC_ENOMEM, -errno of open/read, and the header's
 * EXEC_EUNTERMINATED/EXEC_EBADQUOTE/EXEC_E2BIG. On error *sp is NULL.
 */
int exec_source_open(exec_source_t **sp, const char *path, const exec_source_options_t *opts);
int exec_source_open_fd(exec_source_t **sp, int fd, const exec_source_options_t *opts);

/*
 * The next record: 1 with *rec and *len set (bytes valid until the next call on
 * the source; the line end is not included, the record's quotes are), 0 at
 * end of input, or a negative code for a record that cannot be returned, with
 * the details in exec_source_error(). After EXEC_EUNTERMINATED, EXEC_EBADQUOTE,
 * EXEC_ETRUNCATED or EXEC_E2BIG the source stands after the bad record: call
 * again to skip it and go on, or stop. Every record before it was returned.
 * An I/O error is final (every later call returns it).
 * recno may be NULL; else it gets the record's number.
 */
int exec_source_next(exec_source_t *s, const void **rec, size_t *len, uint64_t *recno);

/* The last error's details (zeroed if there was none). */
const exec_source_error_t *exec_source_error(const exec_source_t *s);
/* The header record (EXEC_SOURCE_HEADER): 0, or EXEC_ENOENT without a header. */
int exec_source_header(const exec_source_t *s, const void **rec, size_t *len);
/* Input bytes consumed so far, and the input's size (-1 when not a regular file). */
uint64_t exec_source_offset(const exec_source_t *s);
int64_t exec_source_size(const exec_source_t *s);
/* Closes the descriptor (if opened by path) and frees the source. NULL is ignored. */
void exec_source_close(exec_source_t *s);

/*
 * Fields, for process(). A field points either into the record (unquoted
 * fields, and quoted ones without "") or into the caller's buffer (quoted
 * fields with "" turned into "). A buffer as long as the record always
 * suffices; a record without "" needs none. All of these are pure functions:
 * safe in any thread and in forked workers.
 */
typedef struct exec_field {
    const char *data;
    size_t len;
} exec_field_t;

/*
 * Splits a CSV record into fields. Fills fields[0..max) and returns how many
 * fields the record has (more than max when it has more: only max are filled).
 * delim: 0 means ','; else a byte other than '"', CR and LF, as for the
 * sources. Errors: EXEC_EINVAL, EXEC_EBADQUOTE, EXEC_EUNTERMINATED,
 * EXEC_ENOBUFS (buf too small for the unquoted fields).
 */
int exec_csv_split(const void *rec, size_t len, int delim, exec_field_t *fields, size_t max,
                   char *buf, size_t buflen);
/* One field by index (from 0), scanning no further than needed. 0, EXEC_ENOENT
 * (the record has fewer fields), or exec_csv_split()'s errors. */
int exec_csv_field(const void *rec, size_t len, int delim, size_t index, exec_field_t *out,
                   char *buf, size_t buflen);

/*
 * Column names from a header row, built once before the workers start
 * (exec_source_header() gives the row); then read-only: shared by threads and
 * inherited by forked workers. Resolve names to indexes once (in ctx_build)
 * and use exec_csv_field() per record.
 */
typedef struct exec_csv_header exec_csv_header_t;
/* Errors: EXEC_EINVAL, EXEC_ENOMEM, exec_csv_split()'s parse errors. */
int exec_csv_header_create(exec_csv_header_t **hp, const void *rec, size_t len, int delim);
size_t exec_csv_header_count(const exec_csv_header_t *h);
/* Column i's name (NUL-terminated, unquoted), or NULL past the end. */
const char *exec_csv_header_name(const exec_csv_header_t *h, size_t i);
/* The first column named name: its index (>= 0), or EXEC_ENOENT / EXEC_EINVAL. */
int exec_csv_header_index(const exec_csv_header_t *h, const char *name);
/* The delimiter the header was split with. */
int exec_csv_header_delim(const exec_csv_header_t *h);
/* A record's field by column name: exec_csv_header_index() then exec_csv_field(). */
int exec_csv_get(const exec_csv_header_t *h, const void *rec, size_t len, const char *name,
                 exec_field_t *out, char *buf, size_t buflen);
void exec_csv_header_free(exec_csv_header_t *h);

/*
 * Runs every record of a source through an executor: exec_map() with the
 * source as reader, each record's number as its tag. The executor must be
 * fresh (exec_map()'s rules: it is finished on return).
 *
 * A record longer than the executor's max_record (or the source's) is not
 * submitted; it gets a result of its own through emit_cb, with status
 * EXEC_E2BIG, tag = its record number, seq = UINT64_MAX, no data, and the
 * stream goes on. With EXEC_ORDERED it keeps its place in the order.
 *
 * A malformed record (EXEC_EUNTERMINATED, EXEC_EBADQUOTE, EXEC_ETRUNCATED) is
 * passed to on_bad when set. Then without EXEC_MAPS_SKIP_BAD the map stops:
 * what was submitted before it is still processed and emitted, and its code is
 * returned. With EXEC_MAPS_SKIP_BAD it is skipped and the map goes on (on_bad
 * returning non-zero stops it anyway, with that value).
 *
 * Progress: for long inputs a line on stderr (records, MB/s, percent and ETA
 * when the size is known), refreshed a few times a second and only when stderr
 * is a terminal (EXEC_MAPS_PROGRESS forces it, EXEC_MAPS_QUIET silences it).
 *
 * Returns 0, emit_cb's or on_bad's non-zero return, the malformed record's
 * code, an I/O error, or exec_map()'s errors.
 */
#define EXEC_MAPS_SKIP_BAD 0x1u /* skip malformed records instead of stopping */
#define EXEC_MAPS_PROGRESS 0x2u /* progress line even when stderr is not a tty */
#define EXEC_MAPS_QUIET    0x4u /* never a progress line */

typedef int (*exec_bad_fn)(void *arg, const exec_source_error_t *err);

typedef struct exec_map_options {
    unsigned flags;     /* EXEC_MAPS_* */
    exec_bad_fn on_bad; /* optional: told about each malformed record */
    void *bad_arg;
    exec_emit_fn on_failed; /* exec_map_fd(): optional, gets each result whose
                               status is not 0 (they are never written) */
    void *failed_arg;
} exec_map_options_t;

/* What a map did. */
typedef struct exec_map_report {
    uint64_t records; /* records read (the header not counted), bad ones included */
    uint64_t ok;      /* results with status 0 */
    uint64_t failed;  /* results with another status (EXEC_E2BIG included) */
    uint64_t too_big; /* of which EXEC_E2BIG */
    uint64_t bad;     /* malformed records skipped or stopped at */
    uint64_t bytes;   /* input bytes consumed */
    double seconds;   /* wall time */
} exec_map_report_t;

/* rep may be NULL. */
int exec_map_source(exec_t *ex, exec_source_t *src, exec_emit_fn emit_cb, void *emit_arg,
                    const exec_map_options_t *opts, exec_map_report_t *rep);

/*
 * The file-to-file case: writes the bytes of each result with status 0 to
 * out_fd, each followed by a newline unless it already ends with one, in
 * input order with EXEC_ORDERED, else as they finish. Other results go to
 * opts->on_failed (if set) and are counted. Output is buffered and written in
 * large writes. Errors: exec_map_source()'s, and -errno of write().
 */
int exec_map_fd(exec_t *ex, exec_source_t *src, int out_fd, const exec_map_options_t *opts,
                exec_map_report_t *rep);

/*
 * Plugins: a shared object for the executor-map command (and any host) exports
 * one symbol, EXEC_PLUGIN_SYMBOL, a const exec_plugin_t (exec_plugin_open()
 * loads and checks one):
 *
 *     const exec_plugin_t exec_plugin_v1 = {
 *         .abi = EXEC_PLUGIN_ABI, .name = "wordtable", .ops = &wordtable_ops,
 *         .ctx_build = wordtable_build, .ctx_free = wordtable_free,
 *     };
 *
 * The host builds the context once with ctx_build(spec, header, &ctx, err,
 * errlen) (header: the input's column names, or NULL without a header row;
 * 0 or non-zero with a message in err), runs the ops over it, and frees it with
 * ctx_free after exec_destroy(). ops->ctx_release should be NULL.
 *
 * A plugin need not come from a shared object: a program may define one to
 * say how its classifier is built from a spec. That is what EXEC_MPI needs
 * (options.plugin): each worker rank builds its own context with ctx_build,
 * in the rank's own process, and frees it with ctx_free.
 */
#define EXEC_PLUGIN_ABI 1
#define EXEC_PLUGIN_SYMBOL "exec_plugin_v1"

typedef struct exec_plugin {
    unsigned abi;          /* EXEC_PLUGIN_ABI */
    const char *name;
    const char *usage;     /* one line on the spec, for --help; may be NULL */
    const exec_ops_t *ops;
    int (*ctx_build)(const char *spec, const exec_csv_header_t *header, void **ctx,
                     char *err, size_t errlen);
    void (*ctx_free)(void *ctx);
} exec_plugin_t;

/*
 * Loads a plugin from the shared object at path: dlopen(path, RTLD_NOW |
 * RTLD_LOCAL), then EXEC_PLUGIN_SYMBOL, checked: abi is EXEC_PLUGIN_ABI,
 * ops, ops->process, ctx_build and ctx_free are set, ops->version is
 * EXEC_OPS_VERSION. *plugin stays valid until exec_plugin_close(*plugin),
 * which must come after every executor over it was destroyed and every
 * context it built was freed. err (may be NULL) gets why it failed,
 * NUL-terminated, at most errlen bytes: "cannot load plugin: <dlerror()>",
 * "<path>: not a plugin (no symbol exec_plugin_v1)", "<path>: plugin ABI
 * ...". On error *plugin is NULL and nothing stays loaded.
 * "<path>: plugin NAME has no ctx_build: ..." (naming each part missing).
 * Errors: EXEC_EINVAL (NULL plugin or path; no such symbol), EXEC_ECAPS (ops,
 * process, ctx_build or ctx_free missing), EXEC_ENOENT (dlopen failed: no
 * such file, not a shared object, a library it needs is missing),
 * EXEC_EVERSION (abi or ops->version is another), EXEC_ENOMEM. Thread-safe.
 */
int exec_plugin_open(const exec_plugin_t **plugin, const char *path, char *err, size_t errlen);
/* Unloads a plugin from exec_plugin_open() (and only such). NULL is ignored. */
void exec_plugin_close(const exec_plugin_t *plugin);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* EXECUTOR_RECORDS_H */

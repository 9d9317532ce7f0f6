/*
 * Record sources, internal: what exec_map_source() asks of a source beyond
 * the public calls. In region mode the source reads into memory a caller
 * hands out (regions of exec_buffer(): records are then passed to workers
 * where they lie) instead of its own buffer, and never moves or overwrites a
 * byte of a region once it has gone on to the next one: a region is reused
 * only when its caller hands it out again, once every record in it is done.
 */
#ifndef EXEC_SOURCE_H
#define EXEC_SOURCE_H

#include "executor_records.h"

/*
 * From the next read on, s reads into regions: get(arg, need, &cap) returns
 * one of cap >= need bytes (what is left of the record in progress is moved
 * there first), or NULL when none is free yet: exec_source_next() then
 * returns EXEC_EAGAIN, and is called again later. Records longer than
 * max_record are not kept (EXEC_E2BIG, as for the source's own max_record
 * when it is lower), so a region of max_record + 8 KiB always does.
 * 0 or EXEC_EINVAL.
 */
int exec__source_regions(exec_source_t *s, char *(*get)(void *arg, size_t need, size_t *cap),
                         void *arg, size_t max_record);
/* Back to a buffer of the source's own (what is still to be read is copied
 * there): the regions may go. 0 or EXEC_ENOMEM (sticky, as a read error). */
int exec__source_own(exec_source_t *s);

#endif /* EXEC_SOURCE_H */

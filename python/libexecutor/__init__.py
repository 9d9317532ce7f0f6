"""Apply one read-only context to a stream of records, in parallel.

libexecutor runs a stream of small records (CSV rows, lines, messages) through
a classifier built once (a model, a rule set, a table) on worker processes or
threads, and hands the results back as they finish or in input order. The
context is passed explicitly: never a global, never pickled, never rebuilt in
each worker.

Two uses:

(a) A C plugin driven from Python (a shared object exporting
    ``exec_plugin_v1``, as ``executor-map`` loads)::

        import libexecutor
        table = libexecutor.Plugin("libwordtable.so")
        libexecutor.map_file(table, "table=words.txt,column=text,id=id",
                             "rows.csv", "out.csv")            # executor-map's speed
        with libexecutor.Executor(table, spec="table=words.txt") as ex:
            for result in ex.imap_unordered(rows):             # bytes in, bytes out
                ...

(b) A Python callable as the classifier, on forked workers::

        def classify(model, row):                  # row: bytes, as read
            fields = libexecutor.csv_fields(row)
            return model.label(fields[1])          # bytes, str or None

        model = build_model()                      # once, in this process
        with libexecutor.Executor(classify, model, workers=4, timeout=5) as ex:
            for result in ex.imap_unordered(rows):
                ...

    The workers are forks of a process forked from this one after ``model``
    was built: each reads it copy-on-write, nothing is pickled. A row that
    raises, crashes its worker or runs past ``timeout`` costs that row one
    :class:`RecordError` (raised, or yielded with ``errors="return"``); the
    stream goes on with a replacement worker.

The rules of fork (docs/python.md says more):

- Build the context single-threaded, and create executors before starting
  threads: a lock another thread holds at the fork stays held in every
  worker. The module warns (``RuntimeWarning``, once per executor) when other
  Python threads run at a fork.
- ``gc.freeze()`` is called around the fork (``freeze_gc=True``): a garbage
  collection in a worker then never writes the headers of the context's
  objects, which would copy every page of them. Reading an object still
  writes its reference count: the pages of objects a worker touches become
  its own. Large data is best kept in buffers (bytes, arrays, mmap).
- Workers leave through ``_exit()``: ``worker_fini`` runs, and the module
  flushes ``sys.stdout`` and ``sys.stderr``, but ``atexit`` handlers and
  ``finally`` blocks of the parent's code do not run there.
"""

from _libexecutor import (
    LIBRARY_VERSION,
    Executor,
    ExecutorError,
    Plugin,
    PluginError,
    RecordError,
    SwapRejected,
    csv_fields,
    map_file,
    records,
)

__all__ = [
    "Executor",
    "ExecutorError",
    "Plugin",
    "PluginError",
    "RecordError",
    "SwapRejected",
    "csv_fields",
    "imap",
    "imap_unordered",
    "map_file",
    "records",
]

__version__ = LIBRARY_VERSION

Executor.__doc__ = """Executor(target, context=None, **options)

Runs records through ``target`` on workers; a context manager
(``close()`` at the end stops every worker and process).

target
    A :class:`Plugin` (its context is built from ``spec=``; ``header=``
    gives it the input's column names), or a callable
    ``process(context, row)`` called in the workers with the row as
    ``bytes``; it returns ``bytes``, ``str`` (sent as UTF-8), ``None``
    (an empty result), or with ``result="pickle"`` any picklable object.
context
    Any object, for a callable: built once here, inherited by the forked
    workers, never pickled.

Options (keyword only):

backend
    ``"auto"`` (default): ``"fork"`` for a callable, the plugin's own choice
    for a plugin; ``"fork"``; ``"threads"`` (a callable only with
    ``thread_safe=True``: every record takes the GIL, so only code that
    releases it gains).
workers
    Worker count (default: one per CPU).
ordered
    Results in input order for every stream (``imap`` orders anyway).
timeout, grace
    Seconds: a record running longer than ``timeout`` is stopped
    (SIGTERM, then SIGKILL ``grace`` later) and reads ``EXEC_ERECTIMEOUT``.
max_records_per_worker, max_worker_growth_kb
    Replace a worker after that many records, or once its private memory
    grew by that much (a successor is ready first).
result
    ``"bytes"`` (default), ``"str"`` (decoded as UTF-8 with
    surrogateescape), ``"pickle"`` (callables: any object, pickled in the
    worker).
errors
    ``"raise"`` (default): a failed record raises :class:`RecordError`
    from the iterator, which can go on after it; ``"return"``: it is
    yielded in the record's place.
worker_init, worker_fini
    Callables ``f(context)`` run once in each worker, after the fork and
    before it leaves. A ``worker_init`` that raises makes the executor (or
    the swap) fail; its traceback is printed on the worker's stderr.
freeze_gc
    ``gc.freeze()`` around each fork of a zygote (default True).
batch, window, max_record, max_result, start_timeout, replay,
close_fds, keep_fds, result_delay_us
    As in the C library's ``exec_options_t`` (include/executor.h).
"""


def imap_unordered(process, rows, context=None, **options):
    """Runs ``rows`` through ``process(context, row)`` on a new
    :class:`Executor`, yielding results as they finish; the executor is
    closed when the iterator ends or is dropped."""
    with Executor(process, context, **options) as ex:
        yield from ex.imap_unordered(rows)


def imap(process, rows, context=None, **options):
    """As :func:`imap_unordered`, in input order."""
    with Executor(process, context, **options) as ex:
        yield from ex.imap(rows)

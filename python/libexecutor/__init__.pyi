# Type stubs for libexecutor (the C extension _libexecutor and its wrappers).
import os
from typing import Any, Callable, Iterable, Iterator, Literal, TypedDict, TypeVar, overload

__version__: str
LIBRARY_VERSION: str

_Path = str | bytes | os.PathLike[str] | os.PathLike[bytes]
_Source = _Path | int | Any  # a path, a descriptor, or an object with fileno()
_Row = bytes | bytearray | memoryview | str
_Result = Any  # bytes, str, or an unpickled object (result="pickle"), or a RecordError
_Ctx = TypeVar("_Ctx")

class ExecutorError(Exception):
    code: int
    name: str

class RecordError(ExecutorError):
    tag: int
    index: int
    status: str
    user_code: int
    signal: int
    exit_status: int
    text: str | None

class SwapRejected(ExecutorError): ...
class PluginError(ExecutorError): ...

class Plugin:
    def __init__(self, path: _Path) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def usage(self) -> str | None: ...
    @property
    def caps(self) -> frozenset[str]: ...
    @property
    def path(self) -> str: ...

class MapReport(TypedDict):
    records: int
    ok: int
    failed: int
    too_big: int
    bad: int
    bytes: int
    seconds: float
    errors: list[RecordError]

class Stream(Iterator[_Result]):
    def __next__(self) -> _Result: ...
    def close(self) -> None: ...

class Executor:
    def __init__(
        self,
        target: Plugin | Callable[[Any, bytes], Any],
        context: Any = None,
        *,
        spec: str | None = None,
        header: bytes | str | None = None,
        delim: str | bytes | int = ",",
        backend: Literal["auto", "threads", "fork"] = "auto",
        workers: int | None = None,
        ordered: bool = False,
        batch: int = 0,
        window: int = 0,
        max_record: int = 65536,
        max_result: int = 65536,
        timeout: float | None = None,
        grace: float | None = None,
        start_timeout: float | None = None,
        max_records_per_worker: int = 0,
        max_worker_growth_kb: int = 0,
        result: Literal["bytes", "str", "pickle"] = "bytes",
        errors: Literal["raise", "return"] = "raise",
        freeze_gc: bool = True,
        thread_safe: bool = False,
        worker_init: Callable[[Any], Any] | None = None,
        worker_fini: Callable[[Any], Any] | None = None,
        replay: bool = True,
        close_fds: bool = False,
        keep_fds: Iterable[int] | None = None,
        result_delay_us: int = 0,
    ) -> None: ...
    def imap_unordered(self, rows: Iterable[_Row], *, tags: bool = False) -> Stream: ...
    def imap(self, rows: Iterable[_Row], *, tags: bool = False) -> Stream: ...
    @overload
    def map_file(
        self,
        src: _Source,
        dst: None = None,
        *,
        format: Literal["csv", "lines", "len32le", "len32be"] = "csv",
        header: bool = True,
        delim: str | bytes | int = ",",
        skip_bad: bool = False,
        tags: bool = False,
    ) -> Stream: ...
    @overload
    def map_file(
        self,
        src: _Source,
        dst: _Source,
        *,
        format: Literal["csv", "lines", "len32le", "len32be"] = "csv",
        header: bool = True,
        delim: str | bytes | int = ",",
        skip_bad: bool = False,
        tags: bool = False,
    ) -> MapReport: ...
    def swap_context(self, context: Any) -> int: ...
    def cancel(self, tag: int) -> int: ...
    def cancel_all(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def worker_stats(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Executor: ...
    def __exit__(self, *exc: object) -> bool: ...
    @property
    def backend(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def closed(self) -> bool: ...

def csv_fields(row: bytes | bytearray | memoryview, delim: str | bytes | int = ",") -> list[bytes]: ...
def records(
    src: _Source,
    *,
    format: Literal["csv", "lines", "len32le", "len32be"] = "csv",
    header: bool = False,
    delim: str | bytes | int = ",",
    skip_empty: bool = False,
) -> Iterator[bytes]: ...
def map_file(
    plugin: Plugin | _Path,
    spec: str,
    src: _Source,
    dst: _Source,
    *,
    format: Literal["csv", "lines", "len32le", "len32be"] = "csv",
    header: bool = True,
    delim: str | bytes | int = ",",
    skip_bad: bool = False,
    **options: Any,
) -> MapReport: ...
def imap_unordered(
    process: Callable[[_Ctx, bytes], Any], rows: Iterable[_Row], context: _Ctx = ..., **options: Any
) -> Iterator[_Result]: ...
def imap(
    process: Callable[[_Ctx, bytes], Any], rows: Iterable[_Row], context: _Ctx = ..., **options: Any
) -> Iterator[_Result]: ...

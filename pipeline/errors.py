"""Typed errors. Item errors are data: they land in the run report and the cache's failure table.

``permanent`` says whether retrying the same key can change the outcome. A key already covers the
input's bytes, the stage version and its config, so a content error (a corrupt JPEG, silent audio)
stays failed until one of those changes; anything else (I/O trouble, an unexpected exception) is
retried on the next run.
"""


class PipelineError(Exception):
    """A run-level error: the run stops before doing work, with this message."""

    exit_code = 2


class ConfigError(PipelineError):
    pass


class UnknownStageError(ConfigError):
    """A stage name that no registered stage has (with a "did you mean" hint)."""

    def __init__(self, name: str, known: list[str]):
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; stages: {', '.join(known)}"
        super().__init__(f"unknown stage {name!r}" + hint)
        self.name = name


class ManifestError(PipelineError):
    pass


class LockBusyError(PipelineError):
    exit_code = 4


class StorageError(PipelineError):
    """The cache cannot be written (disk full, permission denied, read-only file system)."""

    exit_code = 5


class CacheCorruptError(PipelineError):
    """A committed shard failed its checksum; its entries were dropped and will be recomputed."""


class SearchError(PipelineError):
    """A search that cannot be answered: a modality with no indexed items, a query with no usable
    modality, an unknown item id."""


class ItemError(Exception):
    """One item failed in one stage. The run goes on."""

    permanent = True
    # Not a failure: the item simply has no output in this stage (downstream sees a missing input).
    absent = False

    @property
    def kind(self) -> str:
        return type(self).__name__


class MissingFile(ItemError):
    permanent = False


class PathEscapesRoot(ItemError):
    pass


class InputTooLarge(ItemError):
    pass


class TextDecodeError(ItemError):
    pass


class EmptyText(ItemError):
    pass


class ImageDecodeError(ItemError):
    pass


class DecompressionBomb(ItemError):
    pass


class AudioDecodeError(ItemError):
    pass


class EmptyAudio(ItemError):
    pass


class SilentAudio(ItemError):
    pass


class InvalidSamples(ItemError):
    pass


class NoWords(ItemError):
    """A voice note with no speech, a screenshot with no text: the item has no words for this stage. Not a
    failure: it is counted as "no words" (not listed among failures), remembered for its key like any
    outcome, and downstream treats the words as a missing modality (zeros + mask 0)."""

    absent = True


class OutputMismatch(ItemError):
    """A stage produced a record that does not match its declared outputs (a bug, not bad input)."""

    permanent = False


def absent_kinds() -> frozenset[str]:
    """Names of the item outcomes that mean "no output here", not "failed" (e.g. ``NoWords``)."""
    found, todo = set(), [ItemError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.absent:
            found.add(cls.__name__)
    return frozenset(found)


def describe(exc: BaseException) -> tuple[str, str, bool]:
    """(error type, message, permanent) for any exception raised while processing one item."""
    if isinstance(exc, ItemError):
        return exc.kind, str(exc), exc.permanent
    if isinstance(exc, MemoryError):
        return "OutOfMemory", "ran out of memory while processing this item", False
    if isinstance(exc, OSError):
        return "IOError", f"{type(exc).__name__}: {exc}", False
    return "UnexpectedError", f"{type(exc).__name__}: {exc}", False

"""The public error types of the lowering pipeline, under one root, `PipelineError`.

They are few on purpose: a caller catches `LoweringError` for anything that goes
wrong while lowering, saving or loading, and `BackendRuntimeError` /
`BackendNotAvailableError` for what goes wrong when a lowered module runs, and
`ArgumentError` (a ``TypeError``) for a call its program was not captured for;
or `PipelineError` for any of them. Each keeps the built-in base it has always
had as well, so ``except ValueError`` around a lowering still catches it.
Every message names the thing that is wrong (backend, method, key, file) and,
where there is a choice, what is allowed.

The app's errors (`pipeline.app.schema.ConfigError` and those built on it, the
search's `SearchConfigError`) are defined beside the app, whose Hydra the core
does not import, and derive from `PipelineError` too. The one exception outside
the root is `pipeline.app.faults.Interrupted`: a signal asking the run to stop is
not an error of the pipeline, and it is a ``BaseException`` so that no
``except Exception`` (nor ``except PipelineError``) swallows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def format_choices(choices: Iterable[str]) -> str:
    names = sorted(str(c) for c in choices)
    return ", ".join(repr(n) for n in names) if names else "(none)"


class PipelineError(Exception):
    """The root of every error the pipeline raises: ``except PipelineError`` catches them all."""


class LoweringError(PipelineError, ValueError):
    """Anything wrong with what was asked to be lowered, saved or loaded."""


class UnknownBackendError(LoweringError, KeyError):
    """A backend name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedOpError(LoweringError):
    """A backend's preprocess met an operator it cannot compile."""


class ArtifactError(LoweringError):
    """A lowered-module file that cannot be read: bad format, version or hash."""


class SpecError(LoweringError):
    """Options that do not fit a spec; the message names the key path and what is allowed."""


class ShapeDeclarationError(LoweringError):
    """A ``dynamic_shapes`` declaration that does not fit the method (`pipeline.core.shapes`); its message
    starts with the key path."""


class FieldError(PipelineError, ValueError):
    """Raised by a spec's ``__post_init__`` about one field: the parser adds the field's key path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ArgumentError(PipelineError, TypeError):
    """A lowered method called with values its program was not captured with.

    Export and tracing specialise a program on every argument that is not a
    tensor (and on passing a tensor or ``None``); calling it with another value
    would silently answer for the captured one, so the lowered method refuses,
    naming the argument, the captured value and the given one.
    """


class ShapeError(PipelineError, ValueError):
    """A call whose tensor sizes the lowered program cannot take: outside a dynamic dimension's bounds, or
    another size than the captured one on a static dimension. Raised before the backend sees the call."""


class MalformedInput(PipelineError, ValueError):
    """Bytes from elsewhere that do not have the expected form (internal).

    The bounded readers raise it naming the part (``manifest.json: ...``); their
    callers turn it into `ArtifactError` or `LoweringError` naming the file or
    backend, so it never reaches a user.
    """


class BackendNotAvailableError(PipelineError, RuntimeError):
    """The backend of a lowered module cannot run on this machine."""


class BackendRuntimeError(PipelineError, RuntimeError):
    """A backend failure that points back into the lowered program.

    Backends raise it with the debug handles of the instructions that failed;
    a lowered module re-raises it with each handle resolved to its module
    hierarchy and source line (the original error is its ``__cause__``).
    """

    def __init__(self, message: str, debug_handles: Sequence[int] = ()):
        super().__init__(message)
        self.message = message
        self.debug_handles = [int(h) for h in debug_handles]

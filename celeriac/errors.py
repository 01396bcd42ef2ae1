"""Every error celeriac raises, in one tree.

::

    CeleriacError
    ├── ConfigurationError            a Config or an argument cannot work; says what to change
    │   └── InvalidResourceSpecification   the executor rejects parsl_resource_specification keys
    ├── NoDataFlowKernelError         an app was called before celeriac.load()
    ├── BadCheckpoint                 a checkpoint_files entry is missing or cannot be read
    ├── SerializationError            a function, argument or result cannot be pickled
    │   └── BigValueUnavailable           a big value's file cannot be read where it is needed
    ├── UntrustedPayload              a worker refused a payload whose signature did not verify
    ├── SubmitException               an executor could not accept a task (broker down, ...)
    │   └── MessageTooLarge               a task's message or outcome is over the broker's
    │                                     size limit (RabbitMQ's max_message_size)
    ├── ExecutorError                 an executor failed as a whole (workers never started, ...)
    ├── ProviderError                 a batch system refused or lost a block (.stdout, .stderr)
    │   └── ScaleOutFailed                blocks could not be started; quotes the scheduler
    ├── ChannelError                  a command or file transfer to a host failed (.hostname)
    │   ├── HostUnreachable               the host did not answer (DNS, refused, timeout)
    │   ├── AuthenticationFailed          the host refused the key or password
    │   ├── BadHostKey                    the host key is unknown or does not match known_hosts
    │   └── FileCopyFailed                push_file/pull_file could not copy the file
    ├── StagingError                  a File could not be staged in or out (.url, password hidden)
    ├── WorkerLost                    the task's worker died under it, more times than allowed
    ├── NotRun                        a chained call was not run, as the call before it in its
    │                                 message failed (internal: the task waits for that one again)
    ├── InvalidTransition             a task was asked to make an illegal move (a celeriac bug)
    ├── DependencyError               an upstream task failed, so this one never ran
    ├── JoinError                     a future returned by a join_app failed
    └── AppException                  the app itself failed in a way celeriac detected
        ├── AppTimeout                    ran longer than its walltime and was killed
        ├── BashExitFailure               a bash app's command exited non-zero (.exitcode)
        ├── BashAppNoReturn               a bash app returned something other than a string
        ├── BadStdStreamFile              stdout=/stderr= could not be used
        ├── MissingOutputs                a bash app did not create the outputs it declared
        └── AppExited                     the app called sys.exit() or raised another
                                          BaseException (KeyboardInterrupt, ...); only its
                                          task failed

Exceptions cross process boundaries (worker -> orchestrator), so every class pickles: the
constructor arguments are kept and replayed by ``__reduce__``.

A user's own exception raised inside an app is not wrapped: ``future.result()`` re-raises the
user's class, with the worker's traceback attached as ``__cause__`` (a :class:`RemoteTraceback`).
"""

from __future__ import annotations

__all__ = [
    "CeleriacError", "ConfigurationError", "InvalidResourceSpecification",
    "NoDataFlowKernelError", "BadCheckpoint", "SerializationError", "BigValueUnavailable",
    "UntrustedPayload", "SubmitException", "MessageTooLarge", "ExecutorError", "ProviderError",
    "ScaleOutFailed", "ChannelError",
    "HostUnreachable", "AuthenticationFailed", "BadHostKey", "FileCopyFailed", "StagingError",
    "WorkerLost", "NotRun",
    "InvalidTransition",
    "DependencyError", "JoinError", "AppException", "AppTimeout", "BashExitFailure",
    "BashAppNoReturn", "BadStdStreamFile", "MissingOutputs", "AppExited", "RemoteTraceback",
]


class CeleriacError(Exception):
    """Root of celeriac's exceptions. Subclasses pickle by replaying their arguments."""

    def __init__(self, *args):
        super().__init__(*args)
        self._init_args = args

    def __reduce__(self):
        return (type(self), self._init_args, self.__dict__.copy())

    def __setstate__(self, state):
        self.__dict__.update(state)


class ConfigurationError(CeleriacError):
    """The configuration, or an argument to celeriac, cannot work."""


class InvalidResourceSpecification(ConfigurationError):
    """``parsl_resource_specification`` holds keys the chosen executor does not accept."""

    def __init__(self, invalid_keys, message=""):
        self.invalid_keys = set(invalid_keys)
        super().__init__(invalid_keys, message)
        self.message = message

    def __str__(self):
        return self.message or f"invalid resource specification keys: {sorted(self.invalid_keys)}"


class NoDataFlowKernelError(CeleriacError):
    """An app was called, or the DFK asked for, before ``celeriac.load()``."""


class BadCheckpoint(CeleriacError):
    """A checkpoint directory has no checkpoint, or it cannot be read."""


class SerializationError(CeleriacError):
    """A function, its arguments or its result could not be (un)pickled."""


class BigValueUnavailable(SerializationError):
    """A value that travelled outside the broker (a file in shared memory) cannot be read by
    the process that needs it: it runs on another host, or the file was deleted."""


class UntrustedPayload(CeleriacError):
    """A payload's signature did not verify, so it was not unpickled."""


class SubmitException(CeleriacError):
    """An executor could not accept a task."""


class MessageTooLarge(SubmitException):
    """A task's message (or its outcome) is over the broker's size limit; nothing of it was
    sent. ``message_ids``: the Celery ids of the messages refused."""

    def __init__(self, reason, message_ids=()):
        super().__init__(reason, tuple(message_ids))
        self.message_ids = tuple(message_ids)

    def __str__(self):
        return self.args[0]


class ExecutorError(CeleriacError):
    """An executor failed as a whole."""

    def __init__(self, executor, reason):
        super().__init__(executor, reason)
        self.executor = executor
        self.reason = reason

    def __str__(self):
        return f"executor {self.executor!r} failed: {self.reason}"


class ProviderError(CeleriacError):
    """A provider's batch command failed. Carries the scheduler's own words."""

    def __init__(self, provider, reason, stdout="", stderr=""):
        super().__init__(provider, reason, stdout, stderr)
        self.provider = provider
        self.reason = reason
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self):
        said = "\n".join(s.strip() for s in (self.stdout, self.stderr) if s and s.strip())
        text = f"{self.provider}: {self.reason}"
        return f"{text}\nthe scheduler said:\n{said}" if said else text


class ScaleOutFailed(ProviderError):
    """Blocks could not be started."""


class ChannelError(CeleriacError):
    """A command or a file transfer through a channel failed."""

    def __init__(self, hostname, reason):
        super().__init__(hostname, reason)
        self.hostname = hostname
        self.reason = reason

    def __str__(self):
        return f"{self.hostname}: {self.reason}"


class HostUnreachable(ChannelError):
    """The host did not answer: no such name, connection refused or timed out."""


class AuthenticationFailed(ChannelError):
    """The host refused our key or password."""


class BadHostKey(ChannelError):
    """The host's key is not in known_hosts, or does not match it."""


class FileCopyFailed(ChannelError):
    """push_file or pull_file could not copy a file."""


class StagingError(CeleriacError):
    """A File could not be staged in or out: unreachable host, refused login, 404, size or
    checksum mismatch, full disk. ``url`` is the file's URL with any password hidden."""

    def __init__(self, url, reason):
        hidden = hide_password(url)
        if hidden != url:  # never repeat the password, even where the cause quotes the URL
            password = url.partition("://")[2].split("@")[0].split(":", 1)[1]
            reason = str(reason).replace(url, hidden)
            if len(password) >= 4:  # a shorter one would garble the message
                reason = reason.replace(password, "***")
        url = hidden
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self):
        return f"staging {self.url} failed: {self.reason}"


def hide_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url
    userinfo, host = netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}:***@{host}{slash}{path}" if ":" in userinfo else url


class WorkerLost(CeleriacError):
    """The task's worker died while it held the task, more often than allowed."""


class NotRun(CeleriacError):
    """A call that travelled in one message after the call whose result it takes was not
    run, because that call failed or was not run. Users never see it: the task waits for
    that call's final outcome again, as any dependent task does."""


class InvalidTransition(CeleriacError):
    """A task was asked to make a move that its state does not allow: a bug in celeriac.

    Attributes:
        task_id: the task's id; start, finish: the state names of the refused move;
        history: the names of the states the task went through, ending with ``start``.
    """

    def __init__(self, task_id, start: str, finish: str, history: list):
        super().__init__(task_id, start, finish, history)
        self.task_id, self.start, self.finish, self.history = task_id, start, finish, history

    def __str__(self):
        return (f"task {self.task_id}: illegal move {self.start} -> {self.finish}; history "
                f"{self.history}. This is a bug in celeriac: please report it with this message")


class DependencyError(CeleriacError):
    """A task was not run because one or more of its dependencies failed.

    Attributes:
        dependent_exceptions_tids: ``[(exception, description), ...]`` of the failed inputs,
            each described as Parsl does: ``"task N"``, ``"DataFuture from task N"``, or the
            repr of a plain future.
        task_id: the id of the task that was not run.
    """

    def __init__(self, dependent_exceptions_tids, task_id):
        super().__init__(dependent_exceptions_tids, task_id)
        self.dependent_exceptions_tids = dependent_exceptions_tids
        self.task_id = task_id

    def __str__(self):
        return (f"Dependency failure for task {self.task_id} with failed dependencies from "
                f"{_described(self.dependent_exceptions_tids)}")


class JoinError(CeleriacError):
    """A future returned by a join_app failed."""

    def __init__(self, dependent_exceptions_tids, task_id):
        super().__init__(dependent_exceptions_tids, task_id)
        self.dependent_exceptions_tids = dependent_exceptions_tids
        self.task_id = task_id

    def __str__(self):
        return (f"Join failure for task {self.task_id} with failed join dependencies from "
                f"{_described(self.dependent_exceptions_tids)}")


def _described(exceptions_tids) -> str:
    return ", ".join(str(d) for _, d in exceptions_tids)


class AppException(CeleriacError):
    """An app failed in a way celeriac detected (rather than raising its own exception)."""


class AppTimeout(AppException):
    """The app ran longer than its ``walltime`` and was killed."""


class BashExitFailure(AppException):
    """A bash app's command exited with a non-zero code. ``stdout``/``stderr``: the paths its
    output went to (None: not kept), named in the message."""

    def __init__(self, app_name, exitcode, stdout=None, stderr=None):
        super().__init__(app_name, exitcode, stdout, stderr)
        self.app_name = app_name
        self.exitcode = exitcode
        self.stdout, self.stderr = stdout, stderr

    def __str__(self):
        return (f"bash_app {self.app_name} failed with unix exit code {self.exitcode}"
                + log_files_text(self.stdout, self.stderr))


def log_files_text(stdout, stderr) -> str:
    """The sentence an app's error ends with: where its output is, or how to keep it."""
    if stdout is None and stderr is None:
        return ("; its output was not kept: pass stdout=celeriac.AUTO_LOGNAME (and stderr=...)"
                " to keep it")
    if stdout == stderr:
        return f"; its output: {stdout}"
    return "; " + ", ".join(f"{name}: {path}" for name, path in
                            (("stdout", stdout), ("stderr", stderr)) if path is not None)


class BashAppNoReturn(AppException):
    """A bash app's function returned something other than a command string."""


class BadStdStreamFile(AppException):
    """The ``stdout``/``stderr`` given to a bash app could not be used."""


class MissingOutputs(AppException):
    """A bash app finished without creating the ``outputs`` it declared."""

    def __init__(self, reason, outputs):
        super().__init__(reason, outputs)
        self.reason = reason
        self.outputs = outputs

    def __str__(self):
        return f"Missing Outputs: {self.outputs}, Reason: {self.reason}"


class AppExited(AppException):
    """The app raised ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException`` that
    is not an ``Exception``. Only its task fails: the process that ran it carries on.

    Attributes:
        app_name: the app's name.
        what: what the app did, e.g. ``called sys.exit(3)`` or ``raised KeyboardInterrupt``.
        code: the code given to ``sys.exit()`` (None for any other exception).
    """

    def __init__(self, app_name, what, code=None):
        super().__init__(app_name, what, code)
        self.app_name = app_name
        self.what = what
        self.code = code

    def __str__(self):
        return (f"[{self.app_name}] the app {self.what}, which fails only this task: the process "
                "that ran it carries on (to fail a task, raise an Exception)")


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised on a worker (set as ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb

"""The public surface is pinned: adding or removing a public name is a deliberate change."""

import types

import celeriac
import celeriac.channels
import celeriac.errors
import celeriac.executors
import celeriac.launchers

PUBLIC = [
    "python_app", "bash_app", "join_app", "AppFuture", "DataFuture", "File", "AUTO_LOGNAME",
    "Config", "DataFlowKernel", "load", "clear", "dfk", "wait_for_current_tasks",
    "id_for_memo", "get_all_checkpoints", "get_last_checkpoint", "set_stream_logger",
    "set_file_logger", "__version__",
]


def test_celeriac_all_is_exactly_the_public_api():
    assert celeriac.__all__ == PUBLIC


def test_every_exported_name_exists():
    for name in celeriac.__all__:
        assert hasattr(celeriac, name), name


def test_every_public_member_is_exported():
    # submodules (celeriac.errors, celeriac.config, ...) appear as attributes once imported;
    # the public names are imported on first use, and dir() lists them before that
    members = {name for name in dir(celeriac) if not name.startswith("_")
               and not isinstance(getattr(celeriac, name), types.ModuleType)}
    assert members == set(celeriac.__all__) - {"__version__"}


def test_executors_module_exports():
    assert celeriac.executors.__all__ == ["Executor", "CeleryExecutor", "ThreadPoolExecutor"]


def test_launchers_module_exports():
    assert celeriac.launchers.__all__ == [
        "Launcher", "SimpleLauncher", "SingleNodeLauncher", "WrappedLauncher",
        "GnuParallelLauncher", "MpiExecLauncher", "MpiRunLauncher", "SrunLauncher",
        "SrunMPILauncher", "AprunLauncher", "JsrunLauncher",
    ]


def test_channels_module_exports():
    assert celeriac.channels.__all__ == ["Channel", "LocalChannel", "SSHChannel"]


def test_errors_module_exports():
    assert celeriac.errors.__all__ == [
        "CeleriacError", "ConfigurationError", "InvalidResourceSpecification",
        "NoDataFlowKernelError", "BadCheckpoint", "SerializationError", "BigValueUnavailable",
        "UntrustedPayload", "SubmitException", "MessageTooLarge", "ExecutorError",
        "ProviderError", "ScaleOutFailed", "ChannelError",
        "HostUnreachable", "AuthenticationFailed", "BadHostKey", "FileCopyFailed",
        "StagingError", "WorkerLost", "NotRun", "InvalidTransition", "DependencyError", "JoinError",
        "AppException", "AppTimeout",
        "BashExitFailure", "BashAppNoReturn", "BadStdStreamFile", "MissingOutputs",
        "AppExited", "RemoteTraceback",
    ]


def test_version_is_a_string():
    assert isinstance(celeriac.__version__, str) and celeriac.__version__.count(".") == 2


def test_providers_module_exports():
    import celeriac.providers
    assert celeriac.providers.__all__ == [
        "ExecutionProvider", "JobState", "JobStatus", "ClusterProvider", "LocalProvider",
        "SlurmProvider", "GridEngineProvider", "PBSProProvider", "TorqueProvider",
        "LSFProvider", "CondorProvider",
    ]


def test_staging_module_exports():
    import celeriac.staging
    assert celeriac.staging.__all__ == [
        "File", "Staging", "NoOpFileStaging", "HTTPStaging", "FTPStaging", "RSyncStaging",
        "ZipFileStaging", "default_staging", "HTTPSeparateTaskStaging", "HTTPInTaskStaging",
        "FTPSeparateTaskStaging", "FTPInTaskStaging"]

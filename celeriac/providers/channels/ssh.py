"""SSHChannel: batch commands and files on another host, over one reused SSH connection.

Built on fabric's :class:`~fabric.Connection` (paramiko underneath). Unlike fabric's and
Parsl's defaults, host keys are checked: a host whose key is not in ``known_hosts``, or whose
key differs from it, is refused with :class:`~celeriac.errors.BadHostKey` unless the user
explicitly opts in to trusting new hosts on first use. fabric and paramiko are imported here
only, when a connection is first opened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import secrets
import shutil
import stat
import tempfile
import threading
import time
from typing import Optional

from celeriac.errors import (
    AuthenticationFailed,
    BadHostKey,
    ChannelError,
    FileCopyFailed,
    HostUnreachable,
)
from celeriac.providers.channels import _shell
from celeriac.providers.channels.base import Channel

logger = logging.getLogger(__name__)


class _SessionNotOpened(Exception):
    """No session could be opened on the connection, so the command was never sent."""


@functools.lru_cache(maxsize=None)
def _connection_class():
    """fabric's Connection, telling a session that never opened (the link died unnoticed)
    apart from a command lost while it ran."""
    from fabric import Connection
    from paramiko import SSHException

    class _Connection(Connection):
        def create_session(self):
            try:
                return super().create_session()
            except (SSHException, OSError, EOFError) as exc:
                raise _SessionNotOpened() from exc

    return _Connection


def _serialized(method):
    """One operation at a time on a channel: providers of several executors may share one,
    and a reconnect must not close a connection another thread is using."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class SSHChannel(Channel):
    """Run commands on ``hostname`` over SSH, and copy files there and back with SFTP.

    One SSH connection carries every command and transfer (each command is a new session on
    it); if the connection has dropped since the last call it is opened again. Commands run
    in ``bash`` on the remote host.

    Args:
        hostname: the host to connect to.
        username: the remote user (default: the SSH config's, else the local user).
        password: a password, if the host accepts password login (keys are preferred).
        script_dir: where providers put submit scripts on the remote host.
        envs: environment variables added to every command.
        port: the SSH port.
        key_filename: a private key file, or a list of them. Without one, the SSH agent and
            the usual ``~/.ssh/id_*`` keys are tried.
        host_keys_filename: the known_hosts file to check the host's key against (default
            ``~/.ssh/known_hosts``; a missing file counts as empty).
        connect_timeout: seconds to wait for the host to answer.
        trust_unknown_hosts: accept (and remember for this channel's life) the key of a host
            that is not in known_hosts. Off by default: that is how man-in-the-middle attacks
            get in. A key that *differs* from known_hosts is refused either way.
        keepalive: seconds between SSH keepalives, so that an idle connection notices when
            the network dropped it (0 turns them off).

    Raises (from every operation):
        HostUnreachable, AuthenticationFailed, BadHostKey, ChannelError.
    """

    def __init__(self, hostname: str, username: Optional[str] = None,
                 password: Optional[str] = None, script_dir: Optional[str] = None,
                 envs: Optional[dict] = None, port: int = 22, key_filename=None,
                 host_keys_filename: Optional[str] = None, connect_timeout: float = 10,
                 trust_unknown_hosts: bool = False, keepalive: float = 30):
        self.hostname = hostname
        self.username = username
        self._password = password
        self.script_dir = script_dir
        self.envs = dict(envs or {})
        _shell.check_env_names(self.envs)
        self.port = int(port)
        self.key_filename = key_filename
        self.host_keys_filename = os.path.expanduser(host_keys_filename
                                                     or "~/.ssh/known_hosts")
        self.connect_timeout = connect_timeout
        self.trust_unknown_hosts = trust_unknown_hosts
        self.keepalive = keepalive
        self._conn = None
        self._lock = threading.RLock()
        #: how many times an SSH connection was opened (1 while the first one lasts)
        self.connections_opened = 0

    # -- the connection ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.hostname}:{self.port}"

    def _connection(self):
        """The open fabric Connection, opened on first use and again if it dropped."""
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        if self._conn is not None:
            logger.warning("SSH connection to %s dropped; reconnecting", self._where)
            self._drop()
        self._conn = self._open()
        self.connections_opened += 1
        return self._conn

    def _open(self):
        from paramiko import AuthenticationException, BadHostKeyException, SSHException

        connect_kwargs = {
            # given here rather than as connect_timeout=, which fabric truncates to an int
            "timeout": self.connect_timeout, "banner_timeout": self.connect_timeout,
            "auth_timeout": self.connect_timeout,
            # a named key is the key: do not also offer whatever lies in ~/.ssh
            "look_for_keys": self.key_filename is None,
        }
        if self.key_filename is not None:
            keys = ([self.key_filename] if isinstance(self.key_filename, (str, os.PathLike))
                    else list(self.key_filename))
            missing = [str(k) for k in keys if not os.path.isfile(os.path.expanduser(k))]
            if missing:
                raise AuthenticationFailed(self.hostname, f"key file {', '.join(missing)} "
                                                          "does not exist")
            connect_kwargs["key_filename"] = [os.path.expanduser(k) for k in keys]
        if self._password is not None:
            connect_kwargs["password"] = self._password
        conn = _connection_class()(self.hostname, user=self.username, port=self.port,
                                   connect_kwargs=connect_kwargs)
        if self.username is None:  # as fabric resolved it (SSH config, else the local user)
            self.username = conn.user
        # fabric accepts any host key (AutoAddPolicy) and loads no known_hosts: undo both
        if os.path.exists(self.host_keys_filename):
            conn.client.load_system_host_keys(self.host_keys_filename)
        conn.client.set_missing_host_key_policy(_host_key_policy(self))
        logger.debug("opening SSH connection to %s", self._where)
        try:
            conn.open()
        except BadHostKey:
            _abandon(conn)
            raise
        except BadHostKeyException as exc:
            _abandon(conn)
            raise BadHostKey(self.hostname, (
                f"the host key of {self._host_id()} ({_fingerprint(exc.key)}) does not match "
                f"the one in {self.host_keys_filename} ({_fingerprint(exc.expected_key)}). "
                "If the host was really reinstalled, remove the old entry with "
                f"`ssh-keygen -R {self._host_id()} -f {self.host_keys_filename}` and add the "
                f"new one with `{self._keyscan()}`; otherwise someone may be intercepting "
                "the connection.")) from None
        except AuthenticationException as exc:
            _abandon(conn)
            how = (f"key {self.key_filename}" if self.key_filename is not None
                   else "agent/default keys") + (" or password" if self._password else "")
            raise AuthenticationFailed(self.hostname, (
                f"{self._where} refused the login with the {how} ({type(exc).__name__}). "
                "Check the user name and that the public key is in the remote "
                "~/.ssh/authorized_keys.")) from None
        except (OSError, EOFError) as exc:  # DNS failure, refused, timed out, reset
            _abandon(conn)
            raise HostUnreachable(self.hostname, (
                f"cannot reach {self.hostname} port {self.port}: {_describe(exc)}. "
                "Check the host name, the port and that sshd runs there.")) from None
        except SSHException as exc:
            transport = conn.client.get_transport()
            greeted = transport is not None and bool(getattr(transport, "remote_version", ""))
            _abandon(conn)
            if not greeted:
                raise HostUnreachable(self.hostname, (
                    f"{self.hostname} port {self.port} accepted the connection but no SSH "
                    f"server answered within {self.connect_timeout} s")) from None
            raise ChannelError(self.hostname, f"SSH connection to {self._where} failed: "
                                              f"{exc}") from None
        if self.keepalive:
            conn.transport.set_keepalive(int(self.keepalive))
        logger.info("SSH connection to %s open", self._where)
        return conn

    def _host_id(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def _keyscan(self) -> str:
        port = "" if self.port == 22 else f"-p {self.port} "
        return f"ssh-keyscan {port}{self.hostname} >> {self.host_keys_filename}"

    # -- commands ---------------------------------------------------------------------------

    @_serialized
    def execute_wait(self, cmd: str, timeout: Optional[float] = None,
                     env: Optional[dict] = None) -> tuple:
        """Run ``cmd`` with bash on the host and wait for it (see :class:`Channel`).

        With a ``timeout`` the remote command runs under coreutils ``timeout``, so it is
        killed on the host too (with its children), not just abandoned.

        Raises:
            ChannelError: the command timed out or the connection was lost while it ran.
        """
        from invoke.exceptions import CommandTimedOut
        from paramiko import SSHException

        line = _shell.command_line(cmd, timeout, {**self.envs, **(env or {})})
        for attempt in (1, 2):
            conn = self._connection()
            started = time.monotonic()
            try:
                result = conn.run(line, hide=True, warn=True, in_stream=False, pty=False,
                                  timeout=_shell.client_timeout(timeout))
                break
            except _SessionNotOpened as exc:  # the command was never sent: safe to send again
                self._drop()
                why = _describe(exc.__cause__)
                if attempt == 2:
                    raise ChannelError(self.hostname, (
                        f"cannot open an SSH session on {self._where} ({why}); {cmd!r} was "
                        "not run")) from None
                logger.warning("SSH connection to %s could not open a session (%s); "
                               "reconnecting", self._where, why)
            except CommandTimedOut:
                self._drop()  # the session may be wedged: the next command starts afresh
                raise ChannelError(self.hostname,
                                   f"command timed out after {timeout} s: {cmd}") from None
            except (SSHException, OSError, EOFError) as exc:
                raise self._lost(cmd, _describe(exc)) from None
        if not conn.is_connected:  # paramiko ends the session quietly when the link dies
            raise self._lost(cmd, "connection closed")
        if _shell.timed_out(result.exited, started, timeout):
            raise ChannelError(self.hostname, f"command timed out after {timeout} s: {cmd}")
        return result.exited, result.stdout, result.stderr

    def _lost(self, cmd: str, why: str) -> ChannelError:
        self._drop()
        return ChannelError(self.hostname, (
            f"lost the SSH connection to {self._where} while running {cmd!r} ({why}); "
            "the command may or may not have run"))

    # -- files ------------------------------------------------------------------------------

    @_serialized
    def push_file(self, source: str, dest_dir: str) -> str:
        """Copy the local ``source`` into ``dest_dir`` on the host (created if missing),
        keeping its permission bits; see :class:`Channel` for the guarantees (the copy is
        renamed into place whole, is never readable by others while written, and a push onto
        the source itself leaves the source untouched). Returns the remote path.

        Raises:
            FileCopyFailed: the local file is unreadable or the remote side refused it.
        """
        from paramiko import SSHException

        dest = posixpath.join(dest_dir, os.path.basename(source))
        if not os.path.isfile(source):
            raise FileCopyFailed(self.hostname, f"cannot push {source}: no such local file")
        sftp = self._sftp()
        try:
            self._sftp_makedirs(sftp, _sftp_path(dest_dir), 0o700)
            with _private_dir(sftp, _sftp_path(dest_dir)) as private:
                if _same_file_here(sftp, private, source):
                    return dest
                temporary = posixpath.join(private, os.path.basename(source))
                # SFTP creates the file with the server's default mode; in the 0700 private
                # directory nobody else can open it before its own mode is set, which happens
                # before any byte is written.
                with open(source, "rb") as src, sftp.open(temporary, "wbx") as dst:
                    dst.chmod(stat.S_IMODE(os.stat(source).st_mode))
                    dst.set_pipelined(True)
                    shutil.copyfileobj(src, dst, 1 << 16)
                # OpenSSH's atomic rename, which replaces an existing file (plain SFTP rename
                # refuses to): a reader sees the old file or the new one, never a part
                sftp.posix_rename(temporary, _sftp_path(dest))
        except (OSError, EOFError, SSHException, ChannelError) as exc:
            raise FileCopyFailed(self.hostname, f"cannot copy {source} to "
                                                f"{self._where}:{dest_dir}: {_describe(exc)}") \
                from None
        return dest

    @_serialized
    def pull_file(self, remote_source: str, local_dir: str) -> str:
        """Copy ``remote_source`` from the host into the local ``local_dir`` (created if
        missing), keeping its permission bits. Like a push, the copy is written under a
        temporary name (mode 0600 until it has its own) and renamed into place, so pulling a
        file onto itself on a shared file system never empties it. Returns the local path.

        Raises:
            FileCopyFailed: the remote file is unreadable or the local side refused it;
                no partial file is left behind.
        """
        from paramiko import SSHException

        local = os.path.join(local_dir, posixpath.basename(remote_source))
        sftp = self._sftp()
        try:
            os.makedirs(local_dir, exist_ok=True)
            mode = stat.S_IMODE(sftp.stat(_sftp_path(remote_source)).st_mode)
            with _local_temporary(local) as (fd, temporary):
                os.fchmod(fd, mode)
                with os.fdopen(fd, "wb", closefd=False) as dst:
                    sftp.getfo(_sftp_path(remote_source), dst)
                os.replace(temporary, local)
        except (OSError, EOFError, SSHException) as exc:
            raise FileCopyFailed(self.hostname, f"cannot copy {self._where}:{remote_source} "
                                                f"to {local_dir}: {_describe(exc)}") from None
        return local

    @_serialized
    def makedirs(self, path: str, mode: int = 0o700, exist_ok: bool = True) -> None:
        """Create ``path`` and its parents on the host (see :class:`Channel`).

        Raises:
            ChannelError: the directory exists and ``exist_ok`` is false, or it cannot be
                created.
        """
        sftp = self._sftp()
        try:
            created = self._sftp_makedirs(sftp, _sftp_path(path), mode)
        except OSError as exc:
            raise ChannelError(self.hostname, f"cannot create directory {path}: "
                                              f"{_describe(exc)}") from None
        if not created and not exist_ok:
            raise ChannelError(self.hostname, f"cannot create directory {path}: it exists")

    def _sftp(self):
        from paramiko import SSHException

        conn = self._connection()
        try:
            return conn.sftp()
        except (SSHException, OSError, EOFError) as exc:
            raise ChannelError(self.hostname, f"cannot open SFTP on {self._where}: "
                                              f"{_describe(exc)}") from None

    def _sftp_makedirs(self, sftp, path: str, mode: int) -> bool:
        """mkdir -p over SFTP; True if the last directory was created."""
        created = False
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in ("", "."):
                continue
            try:
                is_dir = stat.S_ISDIR(sftp.stat(prefix).st_mode)
            except FileNotFoundError:
                sftp.mkdir(prefix, mode)
                created = True
                continue
            if not is_dir:
                raise ChannelError(self.hostname, f"{prefix} exists and is not a directory")
            created = False
        return created

    # -- lifetime ---------------------------------------------------------------------------

    def _drop(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # the SFTP session and, if fabric still thinks it is up, the link
            except Exception:  # closing a dead link can fail; it is gone either way
                logger.debug("closing SSH connection to %s failed", self._where, exc_info=True)
            finally:
                _abandon(conn)

    @_serialized
    def close(self) -> None:
        """Close the SSH connection. Safe to call twice; a later command reconnects."""
        if self._conn is not None:
            logger.debug("closing SSH connection to %s", self._where)
        self._drop()

    def __repr__(self):
        return f"SSHChannel({self._where!r})"


def _host_key_policy(channel: SSHChannel):
    """paramiko's policy for a host missing from known_hosts: refuse with the command that
    adds it, or (only when the user opted in) accept it for this connection."""
    from paramiko import MissingHostKeyPolicy

    class _Policy(MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            if channel.trust_unknown_hosts:
                logger.warning("trusting the unknown host key %s of %s (trust_unknown_hosts)",
                               _fingerprint(key), hostname)
                client.get_host_keys().add(hostname, key.get_name(), key)
                return
            raise BadHostKey(channel.hostname, (
                f"the host key of {hostname} ({_fingerprint(key)}) is not in "
                f"{channel.host_keys_filename}. If you trust this host, add its key with "
                f"`{channel._keyscan()}` (and compare the fingerprint with the one the "
                "host's administrator publishes)."))

    return _Policy()


def _abandon(conn) -> None:
    """Close a connection whose open() failed (fabric's close() ignores it: no transport yet,
    but paramiko's transport thread may be running)."""
    conn.client.close()


def _fingerprint(key) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_name()


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a low-level error."""
    # paramiko's NoValidConnectionsError wraps one error per address tried
    inner = getattr(exc, "errors", None)
    if isinstance(inner, dict) and inner:
        return "; ".join(sorted({_describe(e) for e in inner.values()}))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc) or type(exc).__name__).rstrip(".")


@contextlib.contextmanager
def _private_dir(sftp, parent: str):
    """A new directory of mode 0700 in ``parent`` on the host, removed (with anything left in
    it) on the way out. Its random name also tells whether the host shares our files."""
    path = posixpath.join(parent, f".celeriac-push-{secrets.token_hex(8)}")
    sftp.mkdir(path, 0o700)
    try:
        yield path
    finally:
        try:
            for name in sftp.listdir(path):
                sftp.remove(posixpath.join(path, name))
            sftp.rmdir(path)
        except Exception:  # a dead link raises paramiko's own errors, not only OSError
            logger.warning("could not remove the temporary directory %s", path)


def _same_file_here(sftp, private: str, source: str) -> bool:
    """Whether the host's ``private`` directory is visible here under the same path (it has
    a fresh random name, so then the host shares this file system) and its sibling named
    like ``source`` is ``source`` itself."""
    where = sftp.normalize(private)  # absolute, as the host resolves it
    if not os.path.isdir(where):
        return False
    dest = os.path.join(os.path.dirname(where), os.path.basename(source))
    try:
        return os.path.samefile(source, dest)
    except OSError:  # no such file here
        return False


@contextlib.contextmanager
def _local_temporary(path: str):
    """A new local file (mode 0600) next to ``path``, as (fd, name); closed on the way out,
    and removed unless it was renamed to ``path``."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.")
    try:
        yield fd, temporary
    finally:
        os.close(fd)
        if os.path.exists(temporary):
            os.unlink(temporary)


def _sftp_path(path: str) -> str:
    """SFTP does not expand ``~``; relative paths already start in the user's home."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path

"""Channels: one conformance suite for LocalChannel and SSHChannel, then SSH's own failures.

SSHChannel talks to a real private sshd on 127.0.0.1:2222 (tests/scripts/start_sshd.sh, key
login as root), so the "remote" files are on this machine and the tests can look at them.
"""

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from services import SSHD_PORT

from celeriac.channels import Channel, LocalChannel
from celeriac.errors import (
    AuthenticationFailed,
    BadHostKey,
    ChannelError,
    ConfigurationError,
    FileCopyFailed,
    HostUnreachable,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["local", "ssh"])
def channel(request) -> Channel:
    """Each conformance test runs against every channel."""
    if request.param == "local":
        chan = LocalChannel(envs={"CHANNEL_WIDE": "everywhere"})
    else:
        chan = request.getfixturevalue("sshd").channel(envs={"CHANNEL_WIDE": "everywhere"})
    yield chan
    chan.close()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ssh_connections() -> list:
    """This process's TCP connections to the test sshd."""
    return [c for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port == SSHD_PORT and c.status == psutil.CONN_ESTABLISHED]


# -- conformance: every channel -------------------------------------------------------------

def test_command_output_and_exit_code_come_back(channel):
    assert channel.execute_wait("echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")
    assert channel.execute_wait("printf 'a b'") == (0, "a b", "")


def test_environment_channel_wide_and_per_call(channel):
    rc, out, _ = channel.execute_wait('echo "$CHANNEL_WIDE|$PER_CALL"',
                                      env={"PER_CALL": "it's $HOME; `x`"})
    assert (rc, out) == (0, "everywhere|it's $HOME; `x`\n")


def test_environment_name_that_is_not_a_variable_is_refused(channel):
    with pytest.raises(ConfigurationError, match="invalid environment variable names"):
        channel.execute_wait("true", env={"A;touch /tmp/x": "1"})


def test_command_timeout_raises_and_kills_the_command_with_its_children(channel, tmp_path):
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(ChannelError, match="timed out after 1"):
        channel.execute_wait(f"sleep 300 & echo $! > {pidfile}; wait", timeout=1)
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    for _ in range(50):
        if not running(pid):
            break
        time.sleep(0.1)
    assert not running(pid)


def test_a_quick_exit_124_is_an_answer_not_a_timeout(channel):
    assert channel.execute_wait("exit 124", timeout=30)[0] == 124


def test_push_file_creates_the_directory_and_keeps_the_mode(channel, tmp_path):
    source = tmp_path / "submit.sh"
    source.write_text("#!/bin/bash\necho hi\n")
    source.chmod(0o751)
    dest = channel.push_file(str(source), str(tmp_path / "remote" / "a" / "b"))
    assert dest == str(tmp_path / "remote" / "a" / "b" / "submit.sh")
    assert Path(dest).read_text() == source.read_text()
    assert Path(dest).stat().st_mode & 0o777 == 0o751


def test_push_file_onto_itself_leaves_it_intact(channel, tmp_path):
    """On a host that shares this file system (a login node mounting the same home, or this
    very machine) the destination can be the source: the push must not empty it."""
    source = tmp_path / "worker.json"
    source.write_text('{"secret": "s3cr3t"}\n')
    source.chmod(0o600)
    inode = source.stat().st_ino
    assert channel.push_file(str(source), str(tmp_path)) == str(source)
    assert source.read_text() == '{"secret": "s3cr3t"}\n'
    assert source.stat().st_mode & 0o777 == 0o600
    assert source.stat().st_ino == inode  # left in place, not replaced by a copy of itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker.json"]  # no temporary left


def test_push_file_onto_itself_through_another_path_leaves_it_intact(channel, tmp_path):
    """The same directory reached through a symbolic link is still the source's."""
    (tmp_path / "real").mkdir()
    source = tmp_path / "real" / "submit.sh"
    source.write_text("#!/bin/bash\necho hi\n")
    source.chmod(0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    dest = channel.push_file(str(source), str(tmp_path / "link"))
    assert dest == str(tmp_path / "link" / "submit.sh")
    assert source.read_text() == "#!/bin/bash\necho hi\n"
    assert source.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["submit.sh"]


def test_a_reader_never_sees_a_partly_pushed_file(channel, tmp_path):
    """A push replaces the destination in one step, with its mode already set: a scheduler
    (or anyone) reading it meanwhile finds the old file or the whole new one, never a part,
    and never a secret file readable by others."""
    old, new = b"o" * (8 << 20), b"n" * (8 << 20)
    source = tmp_path / "local" / "worker.json"
    source.parent.mkdir()
    source.write_bytes(new)
    source.chmod(0o600)
    dest = tmp_path / "remote" / "worker.json"
    dest.parent.mkdir()
    dest.write_bytes(old)
    dest.chmod(0o600)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                with open(dest, "rb") as fh:
                    mode = os.fstat(fh.fileno()).st_mode & 0o777
                    data = fh.read()
            except FileNotFoundError:
                seen.append(("missing", 0, 0))
                continue
            seen.append(("old" if data == old else "new" if data == new else "partial",
                         len(data), mode))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            channel.push_file(str(source), str(dest.parent))
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    assert dest.read_bytes() == new and dest.stat().st_mode & 0o777 == 0o600
    assert {what for what, _, _ in seen} <= {"old", "new"}, \
        sorted({(what, size) for what, size, _ in seen if what not in ("old", "new")})[:5]
    assert {mode for _, _, mode in seen} == {0o600}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["worker.json"]


def test_pull_file_brings_the_file_back(channel, tmp_path):
    remote = tmp_path / "remote" / "job.out"
    remote.parent.mkdir()
    remote.write_bytes(b"line\n\x00binary\xff")
    local = channel.pull_file(str(remote), str(tmp_path / "local" / "dir"))
    assert local == str(tmp_path / "local" / "dir" / "job.out")
    assert Path(local).read_bytes() == remote.read_bytes()


def test_pull_file_onto_itself_leaves_it_intact(channel, tmp_path):
    remote = tmp_path / "job.out"
    remote.write_text("the job's output\n")
    remote.chmod(0o640)
    assert channel.pull_file(str(remote), str(tmp_path)) == str(remote)
    assert remote.read_text() == "the job's output\n"
    assert remote.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.out"]


def test_missing_files_raise_file_copy_failed_and_leave_nothing(channel, tmp_path):
    with pytest.raises(FileCopyFailed, match="nope"):
        channel.push_file(str(tmp_path / "nope"), str(tmp_path / "dest"))
    with pytest.raises(FileCopyFailed, match="gone"):
        channel.pull_file(str(tmp_path / "gone"), str(tmp_path / "back"))
    assert not (tmp_path / "back" / "gone").exists()


def test_makedirs_creates_parents_with_the_mode(channel, tmp_path):
    path = tmp_path / "x" / "y" / "z"
    channel.makedirs(str(path), mode=0o750)
    assert path.is_dir() and path.stat().st_mode & 0o777 == 0o750
    channel.makedirs(str(path))  # exist_ok by default
    with pytest.raises(ChannelError, match="exists"):
        channel.makedirs(str(path), exist_ok=False)


def test_close_twice_and_context_manager(channel):
    with channel as chan:
        assert chan.execute_wait("true")[0] == 0
    channel.close()
    channel.close()


# -- SSH: host keys ------------------------------------------------------------------------

def test_unknown_host_key_is_refused_with_the_keyscan_command(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(BadHostKey) as err, sshd.channel(host_keys_filename=str(empty)) as chan:
        chan.execute_wait("true")
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in str(err.value)
    assert "SHA256:" in str(err.value)


def test_unknown_host_is_accepted_only_when_the_user_opts_in(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with sshd.channel(host_keys_filename=str(empty), trust_unknown_hosts=True) as chan:
        assert chan.execute_wait("echo in")[1] == "in\n"
    assert empty.read_text() == ""  # trusted for this channel only, not written down


def test_mismatched_host_key_is_refused_even_when_trusting_new_hosts(sshd, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    key_type, key = Path(f"{other}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key}\n")
    with pytest.raises(BadHostKey, match="does not match") as err, \
            sshd.channel(host_keys_filename=str(known), trust_unknown_hosts=True) as chan:
        chan.execute_wait("true")
    assert "ssh-keygen -R" in str(err.value)


def test_default_known_hosts_is_the_users(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(Path(sshd.known_hosts).read_text())
    monkeypatch.setenv("HOME", str(home))
    with sshd.channel(host_keys_filename=None) as chan:
        assert chan.execute_wait("true")[0] == 0
    (home / ".ssh" / "known_hosts").unlink()
    with pytest.raises(BadHostKey, match=str(home / ".ssh" / "known_hosts")), \
            sshd.channel(host_keys_filename=None) as chan:
        chan.execute_wait("true")


# -- SSH: authentication -------------------------------------------------------------------

def test_wrong_key_is_refused(sshd, tmp_path):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    with pytest.raises(AuthenticationFailed, match="refused the login"), \
            sshd.channel(key_filename=str(wrong)) as chan:
        chan.execute_wait("true")


def test_missing_key_file_is_named(sshd, tmp_path):
    with pytest.raises(AuthenticationFailed, match="does not exist"), \
            sshd.channel(key_filename=str(tmp_path / "no_key")) as chan:
        chan.execute_wait("true")


def test_no_password_or_key_material_in_errors_or_logs(sshd, tmp_path, caplog):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    key_body = "".join(wrong.read_text().splitlines()[1:-1])
    secret = "pw-S3cr3t-do-not-log"
    caplog.set_level("DEBUG")
    chan = sshd.channel(key_filename=str(wrong), password=secret)
    with pytest.raises(AuthenticationFailed) as err:
        chan.execute_wait("true")
    chan.close()
    for text in (str(err.value), repr(err.value), repr(chan), caplog.text):
        assert secret not in text
        assert key_body[:40] not in text


# -- SSH: unreachable hosts ----------------------------------------------------------------

def test_closed_port_is_unreachable(sshd):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HostUnreachable, match=f"127.0.0.1 port {port}: Connection refused"), \
            sshd.channel(port=port) as chan:
        chan.execute_wait("true")


def test_unresolvable_host_is_unreachable(sshd):
    with pytest.raises(HostUnreachable, match="no-such-host.invalid port 22"), \
            sshd.channel(hostname="no-such-host.invalid", port=22) as chan:
        chan.execute_wait("true")


def test_host_that_never_answers_times_out(sshd):
    with socket.socket() as silent:  # accepts TCP (the kernel does), never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="no SSH server answered within 1"), \
                sshd.channel(port=port, connect_timeout=1) as chan:
            chan.execute_wait("true")
        assert time.monotonic() - started < 5


# -- SSH: one connection, reopened when it drops --------------------------------------------

def test_many_commands_and_transfers_share_one_connection(sshd, tmp_path):
    before = ssh_connections()
    source = tmp_path / "f"
    source.write_text("x")
    with sshd.channel() as chan:
        for i in range(15):
            assert chan.execute_wait(f"echo {i}")[1] == f"{i}\n"
        chan.push_file(str(source), str(tmp_path / "d"))
        chan.pull_file(str(tmp_path / "d" / "f"), str(tmp_path / "back"))
        chan.makedirs(str(tmp_path / "m"))
        assert len(ssh_connections()) == len(before) + 1
        assert chan.connections_opened == 1
    assert len(ssh_connections()) == len(before)


def test_a_dropped_connection_is_reopened(sshd):
    with sshd.channel() as chan:
        chan.execute_wait("true")
        for proc in serving_sshd():
            proc.kill()
        for _ in range(50):
            if not ssh_connections():
                break
            time.sleep(0.1)
        assert chan.execute_wait("echo again") == (0, "again\n", "")
        assert chan.connections_opened == 2


def test_a_command_sent_as_the_connection_dies_runs_once_on_a_new_one(sshd, tmp_path):
    # the link is dead but paramiko has not noticed yet: no session opens, so the command
    # was never sent and is sent again on a new connection, not reported as maybe-run
    marks = tmp_path / "ran"
    with sshd.channel() as chan:
        chan.execute_wait("true")
        for proc in serving_sshd():
            proc.kill()
        assert chan.execute_wait(f"echo x >> {marks}; echo again") == (0, "again\n", "")
        assert marks.read_text() == "x\n"
        assert chan.connections_opened == 2


def test_connection_lost_during_a_command_is_a_channel_error(sshd):
    with sshd.channel() as chan:
        chan.execute_wait("true")
        pids = " ".join(str(p.pid) for p in serving_sshd())
        with pytest.raises(ChannelError, match="may or may not have run"):
            chan.execute_wait(f"kill -9 {pids}; sleep 5")
        assert chan.execute_wait("echo back")[1] == "back\n"


def serving_sshd() -> list:
    """The sshd session process(es) at the other end of this process's one SSH connection."""
    (ours,) = ssh_connections()
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "sshd":
            continue
        try:
            conns = proc.net_connections("tcp")
        except psutil.Error:
            continue
        if any(c.raddr and c.raddr.port == ours.laddr.port for c in conns):
            found.append(proc)
    assert found, "no sshd process serves our connection"
    return found

"""QEMUMachine against a real QEMU, used the way QEMU's own iotests and functional tests use
it: launch with arguments, qmp('query-...'), cmd, events (event_wait('STOP'), events_wait),
the console socket, shutdown, wait, kill, get_log() after a failure."""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

import qemu_machine
from qemu_machine import (
    AbnormalShutdown,
    ExecuteError,
    QEMUMachine,
    QEMUMachineAddDeviceError,
    QEMUMachineError,
    VMLaunchFailure,
)

from qm_guest import guest_args


def test_the_installed_package_is_tested():
    # scripts/test-python.sh installs the wheel; the tests must not import the source tree.
    assert "site-packages" in qemu_machine.__file__, qemu_machine.__file__


def test_launch_query_shutdown(qemu_binary, no_leaks):
    vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
    vm.launch()
    assert vm.is_running()
    pid = vm.get_pid()
    assert pid and os.path.exists(f"/proc/{pid}")
    assert vm.qmp("query-status")["return"]["status"] == "running"
    assert vm.cmd("query-version")["qemu"]["major"] >= 7
    assert vm.command("query-name") == {}
    assert vm.exitcode() is None
    assert vm.get_log() is None  # QEMUMachine: the log is read at shutdown
    vm.shutdown()
    assert not vm.is_running()
    assert vm.get_pid() is None
    assert vm.exitcode() == 0
    assert vm.get_log() == ""
    assert not os.path.exists(f"/proc/{pid}")
    vm.shutdown()  # a second time does nothing


def test_error_replies_and_conv_keys(qemu_binary, no_leaks):
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        reply = vm.qmp("no-such-command")
        assert reply["error"]["class"] == "CommandNotFound"
        with pytest.raises(ExecuteError) as e:
            vm.cmd("no-such-command")
        assert e.value.error_class == "CommandNotFound"
        assert "no-such-command" in e.value.desc
        # keyword names: '_' becomes '-' (command_line -> command-line)
        out = vm.cmd("human-monitor-command", command_line="info version")
        assert out.strip().startswith("7.") or out.strip()[0].isdigit()
        # args_dict goes as it is
        assert "error" in vm.qmp("human-monitor-command", args_dict={"command_line": "info version"})
        assert vm.qmp("human-monitor-command", args_dict={"command-line": "info version"})["return"]
        # a bad argument: QEMU's GenericError, as a reply
        assert vm.qmp("query-status", bogus=1)["error"]["class"] == "GenericError"


def test_event_wait_stop_and_resume(qemu_binary, no_leaks):
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        vm.qmp("stop")
        vm.qmp("cont")
        # RESUME first: the STOP before it is kept, not lost
        resume = vm.event_wait("RESUME", timeout=10)
        assert resume["event"] == "RESUME" and "timestamp" in resume
        stop = vm.event_wait("STOP", timeout=10)
        assert stop["event"] == "STOP"
        assert vm.get_qmp_events() == []


def test_event_match_patterns(qemu_binary, no_leaks):
    assert QEMUMachine.event_match({"a": {"b": 1, "c": 2}}, {"a": {"c": 2}})
    assert QEMUMachine.event_match({"a": 5}, {"a": None})
    assert not QEMUMachine.event_match({"a": {"b": 1}}, {"a": {"x": None}})
    assert not QEMUMachine.event_match({"a": 1}, {"a": 2})
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        vm.cmd("stop")
        vm.cmd("cont")
        vm.cmd("stop")
        # events_wait: the first of several (name, match) pairs
        first = vm.events_wait([("RESUME", None), ("NOPE", None)], timeout=10)
        assert first["event"] == "RESUME"
        # a match on a field the event does not have never matches: times out
        with pytest.raises(TimeoutError):
            vm.event_wait("STOP", timeout=0.3, match={"data": {"reason": "x"}})
        # the unmatched STOPs are kept, oldest first
        events = vm.get_qmp_events()
        assert [e["event"] for e in events] == ["STOP", "STOP"]


def test_event_timeouts_and_get_qmp_event(qemu_binary, no_leaks):
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        assert vm.get_qmp_event() is None
        assert vm.event_wait("STOP", timeout=0) is None
        with pytest.raises(TimeoutError):
            vm.event_wait("STOP", timeout=0.2)
        with pytest.raises(TimeoutError):
            vm.get_qmp_event(wait=0.2)
        vm.cmd("stop")
        event = vm.get_qmp_event(wait=10)
        assert event["event"] == "STOP"
        vm.cmd("cont")
        vm.cmd("stop")
        vm.event_wait("STOP", timeout=10)  # the RESUME before it stays kept
        vm.clear_events()
        assert vm.get_qmp_events() == []
        # waiting for ever ends when an event comes from another thread's command
        timer = threading.Timer(0.2, lambda: vm.machine.execute("cont"))
        timer.start()
        try:
            assert vm.get_qmp_event(wait=True)["event"] == "RESUME"
        finally:
            timer.join()


def test_launch_failure_carries_qemus_output(qemu_binary, no_leaks):
    vm = QEMUMachine(qemu_binary, args=["-machine", "no-such-board"], base_temp_dir=no_leaks)
    with pytest.raises(VMLaunchFailure) as e:
        vm.launch()
    assert e.value.exitcode == 1
    assert "no-such-board" in e.value.command
    assert "unsupported machine type" in e.value.output
    assert "unsupported machine type" in str(e.value)
    assert "unsupported machine type" in vm.get_log()
    assert vm.exitcode() == 1
    assert not vm.is_running()
    vm.shutdown()  # nothing to do
    # launch again after a failure: the same object works once the arguments are right
    vm.args[:] = ["-machine", "none"]
    vm.launch()
    vm.shutdown()
    assert vm.exitcode() == 0


def test_binary_not_found(no_leaks, tmp_path):
    vm = QEMUMachine(str(tmp_path / "qemu-nope"), base_temp_dir=no_leaks)
    with pytest.raises(VMLaunchFailure) as e:
        vm.launch()
    assert e.value.exitcode is None
    assert e.value.__cause__.status_name == "QM_STATUS_BINARY_NOT_FOUND"
    assert "qemu-nope" in e.value.output


def test_launch_twice_is_refused(qemu_binary, no_leaks):
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        with pytest.raises(QEMUMachineError, match="already launched"):
            vm.launch()


def test_guest_initiated_exit_wait_and_abnormal_shutdown(qemu_binary, no_leaks):
    # QEMU quits without QEMUMachine sending `quit` (as when a guest powers off): wait() is
    # the clean way, shutdown() reports it as abnormal, as QEMUMachine does.
    vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
    vm.launch()
    vm.cmd("human-monitor-command", command_line="quit")
    vm.wait(timeout=10)
    assert vm.exitcode() == 0

    vm.launch()
    vm.cmd("human-monitor-command", command_line="quit")
    vm.machine.wait(10)  # QEMU has gone (the library's own wait: no clean-up)
    assert not vm.is_running() and vm.exitcode() == 0
    with pytest.raises(AbnormalShutdown):
        vm.shutdown()
    assert not vm.is_running()


def test_quit_through_qmp_then_shutdown(qemu_binary, no_leaks):
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        assert vm.qmp("quit") == {"return": {}}
    assert vm.exitcode() == 0


def test_shutdown_kills_a_qemu_that_does_not_quit(qemu_binary, no_leaks, caplog):
    vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
    vm.launch()
    os.kill(vm.get_pid(), signal.SIGSTOP)  # QEMU can answer nothing now
    with pytest.raises(AbnormalShutdown):
        vm.shutdown(timeout=0.5)
    assert vm.exitcode() == -signal.SIGKILL
    assert "qemu received signal 9" in caplog.text


def test_kill_and_wait_timeout(qemu_binary, no_leaks, caplog):
    vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
    vm.launch()
    vm.kill()
    assert vm.exitcode() == -signal.SIGKILL
    assert "received signal" not in caplog.text  # asked for: no warning
    vm.launch()
    with pytest.raises(AbnormalShutdown):
        vm.wait(timeout=0.2)  # nothing makes this QEMU exit: killed after the timeout
    assert vm.exitcode() == -signal.SIGKILL


def test_context_manager_shuts_down_on_error(qemu_binary, no_leaks):
    with pytest.raises(RuntimeError):
        with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
            vm.launch()
            pid = vm.get_pid()
            raise RuntimeError("test body failed")
    assert not os.path.exists(f"/proc/{pid}")
    assert vm.exitcode() == 0


def test_qmp_without_launch(qemu_binary):
    vm = QEMUMachine(qemu_binary)
    with pytest.raises(QEMUMachineError, match="no connection"):
        vm.qmp("query-status")


def test_add_fd_and_send_fd_scm(qemu_binary, no_leaks, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 4096)
    fd = os.open(data, os.O_RDWR)
    try:
        vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
        vm.add_fd(fd, 7, "data-file")
        with pytest.raises(QEMUMachineAddDeviceError):
            vm.add_fd(fd, 8, "x", opts="bogus=1")
        with vm:
            vm.launch()
            fdsets = vm.cmd("query-fdsets")
            assert [(s["fdset-id"], s["fds"][0]["opaque"]) for s in fdsets] == [(7, "data-file")]
            # the fdset opens as a file for QEMU's block layer
            vm.cmd("blockdev-add", node_name="d0", driver="raw",
                   file={"driver": "file", "filename": "/dev/fdset/7"})
            # SCM_RIGHTS with the next getfd, as QEMU's tests pair them
            assert vm.send_fd_scm(file_path=str(data)) == 0
            assert vm.qmp("getfd", fdname="passed") == {"return": {}}
            assert vm.qmp("closefd", fdname="passed") == {"return": {}}
            # and by fd, named at once
            vm.send_fd_scm(fd=fd, name="again")
            assert vm.qmp("closefd", fdname="again") == {"return": {}}
            assert "error" in vm.qmp("closefd", fdname="never-sent")
    finally:
        os.close(fd)


def _read_until(sock: socket.socket, needle: bytes, limit: int = 1 << 20) -> bytes:
    got = b""
    while needle not in got:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"console closed before {needle!r}; got {got[-2000:]!r}")
        got += chunk
        assert len(got) < limit, got[-2000:]
    return got


def test_console_socket_with_a_real_guest(qemu_binary, guest_fixture, no_leaks, tmp_path):
    log = tmp_path / "console.log"
    vm = QEMUMachine(qemu_binary, args=guest_args(guest_fixture), base_temp_dir=no_leaks,
                     console_log=str(log))
    vm.set_console()
    with vm:
        vm.launch()
        sock = vm.console_socket
        sock.settimeout(120)
        _read_until(sock, b"QM-GUEST-READY")
        _read_until(sock, b"qm# ")
        sock.sendall(b"echo $((6*7))\n")
        assert b"42" in _read_until(sock, b"42\r\n")
        sock.sendall(b"poweroff -f\n")
        # read on until the guest is down: closing the console (wait() does) would drop
        # input QEMU has not handed to the guest's UART yet
        _read_until(sock, b"reboot: Power down")
        vm.wait(timeout=60)
    assert vm.exitcode() == 0
    assert b"QM-GUEST-READY" in log.read_bytes()


def test_console_on_a_chosen_device_and_index(qemu_binary, guest_fixture, no_leaks):
    # the console on the second ISA serial port: the guest's ttyS1
    args = guest_args(guest_fixture)
    args[args.index("-append") + 1] = args[args.index("-append") + 1].replace("ttyS0", "ttyS1")
    vm = QEMUMachine(qemu_binary, args=args, base_temp_dir=no_leaks)
    vm.set_console(device_type="isa-serial", console_index=1)
    with vm:
        vm.launch()
        sock = vm.console_socket
        sock.settimeout(120)
        _read_until(sock, b"QM-GUEST-READY")
        chardevs = {c["label"]: c["filename"] for c in vm.cmd("query-chardev")}
        assert chardevs["serial0"] == "null"
        assert chardevs["console"].startswith("unix:")


def test_log_dir_keeps_the_log(qemu_binary, no_leaks, tmp_path):
    logs = tmp_path / "logs"
    vm2 = QEMUMachine(qemu_binary, args=["-machine", "none"], name="kept", base_temp_dir=no_leaks,
                      log_dir=str(logs))
    with vm2:
        vm2.launch()
        vm2.cmd("human-monitor-command", command_line="info version")
    assert (logs / "kept.log").exists()
    assert oct((logs / "kept.log").stat().st_mode & 0o777) == "0o600"


def test_threads_share_a_machine(qemu_binary, no_leaks):
    # The C handle must not be used concurrently: the binding serialises calls per machine,
    # and reads each call's error on the calling thread.
    with QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks) as vm:
        vm.launch()
        machine = vm.machine
        failures = []

        def worker(i: int) -> None:
            try:
                for _ in range(50):
                    assert machine.execute("query-status")["status"] == "running"
                    with pytest.raises(ExecuteError) as e:
                        machine.execute(f"bogus-{i}")
                    assert e.value.error_class == "CommandNotFound"
                    assert f"bogus-{i}" in e.value.desc, e.value.desc
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


def test_forgotten_machine_is_killed_by_the_library(qemu_binary, no_leaks):
    import gc

    vm = QEMUMachine(qemu_binary, args=["-machine", "none"], base_temp_dir=no_leaks)
    vm.launch()
    pid = vm.get_pid()
    del vm
    gc.collect()
    # qm_machine_free kills and reaps QEMU when the handle is collected
    assert not os.path.exists(f"/proc/{pid}")

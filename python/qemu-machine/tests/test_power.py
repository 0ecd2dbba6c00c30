"""The library's power state through ``Machine.power_state()`` and ``power_wait_change()``,
against a real QEMU: pause and resume, QEMU quitting or exiting by itself, a guest powering
off, a change made by another thread, and the timeouts."""

from __future__ import annotations

import threading

import pytest

from qemu_machine import ExecInterruptedError, LibraryTimeout, Machine, PowerState

from qm_guest import guest_args


def launch(qemu_binary: str, base: str, **more) -> Machine:
    return Machine.launch({"binary": qemu_binary, "args": ["-machine", "none"], "temp_dir": base,
                           **more})


def test_power_state_running_paused_running_off_after_quit(qemu_binary, no_leaks):
    with launch(qemu_binary, no_leaks) as m:
        assert m.power_state() is PowerState.RUNNING
        m.pause()
        assert m.power_state() is PowerState.PAUSED
        m.pause()  # paused again: still paused
        assert m.power_state() is PowerState.PAUSED
        m.resume()
        assert m.power_state() is PowerState.RUNNING
        m.execute("quit")
        # the change is seen (QEMU's SHUTDOWN event, or its exit), then nothing more can change
        assert m.power_wait_change(30) is PowerState.OFF
        with pytest.raises(ExecInterruptedError):
            m.power_wait_change(30)
        m.wait(30)
        assert m.power_state() is PowerState.OFF


def test_power_state_off_after_qemu_exits_by_itself(qemu_binary, no_leaks):
    # QEMU exits without a QMP `quit` (the human monitor's): its exit turns the state off.
    with launch(qemu_binary, no_leaks) as m:
        assert m.power_state() is PowerState.RUNNING
        m.execute("human-monitor-command", {"command-line": "quit"})
        m.wait(30)
        assert m.power_state() is PowerState.OFF
        with pytest.raises(ExecInterruptedError):
            m.power_wait_change(0)


def test_power_state_of_a_killed_qemu_is_off(qemu_binary, no_leaks):
    with launch(qemu_binary, no_leaks) as m:
        m.kill()
        assert m.power_state() is PowerState.OFF


def test_started_paused_then_each_change_in_order(qemu_binary, no_leaks):
    m = Machine.launch({"binary": qemu_binary, "args": ["-machine", "none", "-S"],
                        "temp_dir": no_leaks})
    with m:
        assert m.power_state() is PowerState.PAUSED
        m.resume()
        m.pause()
        m.resume()
        # the three changes were kept, and come one by one, in order
        assert m.power_wait_change(30) is PowerState.RUNNING
        assert m.power_wait_change(30) is PowerState.PAUSED
        assert m.power_wait_change(30) is PowerState.RUNNING
        with pytest.raises(LibraryTimeout):
            m.power_wait_change(0)


def test_power_wait_change_sees_another_threads_change(qemu_binary, no_leaks):
    # The wait releases the machine between slices: the other thread's pause (and resume) goes
    # through while it waits, and the waiter sees the change.
    with launch(qemu_binary, no_leaks) as m:
        assert m.power_state() is PowerState.RUNNING
        for change, expected in ((m.pause, PowerState.PAUSED), (m.resume, PowerState.RUNNING)):
            seen: list = []
            waiting = threading.Event()

            def waiter() -> None:
                waiting.set()
                try:
                    seen.append(m.power_wait_change(120))
                except BaseException as e:  # noqa: BLE001
                    seen.append(e)

            t = threading.Thread(target=waiter)
            t.start()
            waiting.wait()
            change()
            t.join()
            assert seen == [expected]


def test_power_wait_change_timeouts(qemu_binary, no_leaks):
    with launch(qemu_binary, no_leaks) as m:
        assert m.power_state() is PowerState.RUNNING
        with pytest.raises(LibraryTimeout) as e:
            m.power_wait_change(0)  # only what has already arrived: nothing
        assert e.value.status_name == "QM_STATUS_TIMEOUT"
        assert isinstance(e.value, TimeoutError)
        with pytest.raises(LibraryTimeout):
            m.power_wait_change(0.3)  # longer than one wait slice: still nothing
        with pytest.raises(ValueError, match="must be None, 0 or positive"):
            m.power_wait_change(-1)
        # a timeout changes nothing: the next change is still reported
        m.pause()
        assert m.power_wait_change(0.3) is PowerState.PAUSED


def test_closed_machine(qemu_binary, no_leaks):
    m = launch(qemu_binary, no_leaks)
    m.close()
    from qemu_machine import StateError

    with pytest.raises(StateError, match="closed"):
        m.power_state()
    with pytest.raises(StateError, match="closed"):
        m.power_wait_change(0)


def test_a_guest_that_powers_off(qemu_binary, guest_fixture, no_leaks):
    # The busybox guest powers itself off: QEMU's SHUTDOWN and exit make the state off.
    m = Machine.launch({"binary": qemu_binary, "args": guest_args(guest_fixture), "accel": "none",
                        "temp_dir": no_leaks, "console": True})
    with m:
        m.console_wait_for("qm# ", 120)
        assert m.power_state() is PowerState.RUNNING
        m.console_write(b"poweroff -f\n")
        assert m.power_wait_change(120) is PowerState.OFF
        m.wait(60)
        assert m.exit_status() == (0, 0)
        assert m.power_state() is PowerState.OFF

"""torch's CPU threads come from the CPUs genloom may use (affinity, cgroup quota) less those other
processes keep busy; GENLOOM_THREADS, then OMP_NUM_THREADS, override."""

from __future__ import annotations

import os

import pytest


def test_settings_override_in_order():
    from genloom.devices import cpu_threads

    assert cpu_threads({"GENLOOM_THREADS": "3", "OMP_NUM_THREADS": "1"}, load=0) == (3, "GENLOOM_THREADS")
    assert cpu_threads({"OMP_NUM_THREADS": "2"}, load=0) == (2, "OMP_NUM_THREADS")
    from genloom.errors import BadInput

    with pytest.raises(BadInput, match="GENLOOM_THREADS must be a whole number"):
        cpu_threads({"GENLOOM_THREADS": "many"})
    with pytest.raises(BadInput, match="at least 1"):
        cpu_threads({"GENLOOM_THREADS": "0"})


def test_automatic_threads_leave_busy_cpus_to_their_processes(monkeypatch):
    from genloom import devices

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: None)
    assert devices.cpu_threads({}, load=0.1)[0] == 4  # idle: every usable CPU
    assert devices.cpu_threads({}, load=1.2)[0] == 3  # one CPU-bound neighbour: leave it its core
    assert devices.cpu_threads({}, load=9.0)[0] == 1  # saturated: one thread, no waiting on preempted ones
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: 1.5)  # docker --cpus 1.5
    assert devices.usable_cpus() == 2 and devices.cpu_threads({}, load=0)[0] == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert devices.usable_cpus() == 1


def test_cgroup_quota_is_read_from_cpu_max(tmp_path):
    from genloom.devices import cgroup_cpu_limit

    limited = tmp_path / "limited"
    limited.write_text("150000 100000\n")
    unlimited = tmp_path / "unlimited"
    unlimited.write_text("max 100000\n")
    assert cgroup_cpu_limit(limited) == 1.5
    assert cgroup_cpu_limit(unlimited) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None

"""Reading cloud-init's own state files (samples as cloud-init 22.4 wrote them on a lab droplet)."""
from __future__ import annotations

import pytest

from remote.cloudinit import CloudInitFailed, parse_state

RUNNING = """state: running
{"v1": {"datasource": "DataSourceNoCloud", "init": {"errors": [], "finished": 1.0, "start": 0.5},
 "modules-config": {"errors": ["('locale', ProcessExecutionError('update-locale'))"], "finished": 2.0, "start": 1.5},
 "modules-final": {"errors": [], "finished": null, "start": 3.0}, "stage": "modules-final"}}"""
DONE_WITH_ERRORS = """state: done
{"v1": {"datasource": "DataSourceNoCloud", "errors": ["('package-update-upgrade-install', ProcessExecutionError('apt-get'))"]}}"""
DONE = 'state: done\n{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}'


def test_running_names_the_stage_it_is_in():
    st = parse_state(RUNNING)
    assert st.state == "running" and st.stage == "modules-final"
    assert len(st.errors) == 1   # an earlier stage failed while the final one still runs


def test_done_with_and_without_errors():
    assert parse_state(DONE).errors == ()
    st = parse_state(DONE_WITH_ERRORS)
    assert st.state == "done" and "package-update-upgrade-install" in st.errors[0]


def test_half_written_status_is_read_next_time_not_an_error():
    st = parse_state('state: running\n{"v1": {"stage": "modu')
    assert st.state == "running" and st.stage is None


def test_finished_on_an_earlier_boot_and_no_cloud_init():
    assert parse_state("state: done\n").state == "done"
    assert parse_state("state: absent\n").state == "absent"


def test_a_garbled_answer_names_what_it_got():
    with pytest.raises(CloudInitFailed, match="unexpected answer"):
        parse_state("-bash: syntax error")

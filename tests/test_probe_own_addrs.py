"""The connection probe tells taskdash's own Redis connections from the workers' by this process's socket
addresses: every TCP connection this process holds is in the set, another process's connection is not."""

from __future__ import annotations

import subprocess
import sys

import redis

from collectors.reads.worker_probe import _process_tcp_addrs


def test_own_connections_in_other_processes_out(r: redis.Redis) -> None:
    r.client_setname("mine")
    child = subprocess.Popen([sys.executable, "-c", (
        "import redis, sys, time; c = redis.Redis(port=int(sys.argv[1])); c.client_setname('child'); "
        "print('up', flush=True); time.sleep(30)"), str(r.connection_pool.connection_kwargs["port"])],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        by_name = {c.get("name"): c["addr"] for c in r.client_list()}
        own = _process_tcp_addrs()
        assert by_name["mine"] in own
        assert by_name["child"] not in own
    finally:
        child.kill()
        child.wait()

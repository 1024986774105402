"""The Dask cluster studies and chunked EM run on: a new LocalCluster of processes, or a running
scheduler named by its address (checked before any work)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator

from emvsbayes.errors import UserError, quote


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


#: A Dask scheduler address: [protocol://]host[:port] (host a name, IPv4 or [IPv6]).
ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss|ucx|inproc)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]*)(?::(\d{1,5}))?/?",
                      flags=re.ASCII)


def check_scheduler_address(scheduler: str, n_workers: int | None = None) -> None:
    """Refuse before any work what cannot be a scheduler's address (Dask would fail in its own words), and a
    number of workers beside it (it sizes a local cluster; an existing one's workers are its own: it was ignored)."""
    if n_workers is not None:
        raise UserError(f"--workers {n_workers} sizes the local cluster a command starts; with --scheduler the "
                        "cluster's own workers run it: leave out one of them")
    match = ADDRESS.fullmatch(scheduler)
    if not match or (match.group(1) and not 0 < int(match.group(1)) < 65536):
        raise UserError(f"--scheduler {quote(scheduler)} is not a scheduler address; give one such as "
                        "tcp://host:8786 (or leave --scheduler out to start a local cluster)")


def connect(scheduler: str | None, n_workers: int | None):
    """(client, cluster or None): a new LocalCluster of processes unless an address is given."""
    # Dask's own log lines ("Worker process still alive after 4.0 seconds, killing" at every shutdown,
    # nanny restarts after Ctrl-C) say nothing a user acts on: a failed replicate is recorded with its
    # error and reported by the study. Errors still show. Set in the environment before distributed is
    # imported, so the worker processes (which read it when they start) are quiet too.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    # Nor the dashboard's statistical profiler, which no study shows: it samples every worker's stacks every
    # 10 ms (1.2 s of a worker's 30 s in a py-spy profile of the bundled study, under py-spy's own sampling).
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # in case distributed was imported already

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError, ValueError) as error:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({error}); check the address, e.g. tcp://host:8786") from None
    # No dashboard; the scheduler's HTTP server (health checks) on any free port, not 8787: another cluster
    # on this machine would otherwise get a "Port 8787 is already in use" warning printed.
    cluster = LocalCluster(n_workers=n_workers or default_workers(), threads_per_worker=1, processes=True,
                           dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


@contextlib.contextmanager
def cluster_client(client=None, scheduler: str | None = None, n_workers: int | None = None) -> Iterator:
    """``client`` itself (left open), or a client of the cluster at ``scheduler``, or of a new
    ``LocalCluster`` as the studies start it (both closed on exit)."""
    if client is not None:
        yield client
        return
    if scheduler is not None:
        check_scheduler_address(scheduler, n_workers)
    client, cluster = connect(scheduler, n_workers)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

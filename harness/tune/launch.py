"""The launchers of `harness tune`: the one a study's ``launcher:`` section names.

- ``sim`` (process.SimLauncher): the built-in simulator per setting, the unmodelled settings
  as notes;
- ``local`` (process.LocalLauncher): ``vllm serve`` per setting on this machine;
- ``kserve`` (kserve_launch.KServeLauncher): an InferenceService patched per setting; only
  with ``apply`` is anything written (otherwise ``start`` returns an empty url: a dry run).

The contract they share (``Launcher``, ``Launched``, ``LaunchFailed``) is in ``contract`` and
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.gate.cluster import Cluster
from harness.spec.launcher import LauncherSpec, LocalLauncherSpec, SimLauncherSpec
from harness.tune.contract import Launched, Launcher, LaunchFailed
from harness.tune.kserve_launch import KServeLauncher
from harness.tune.process import LocalLauncher, SimLauncher

__all__ = ["LaunchFailed", "Launched", "Launcher", "make_launcher"]


def make_launcher(spec: LauncherSpec, *, apply: bool, announce: Callable[[str], None]) -> Launcher:
    """The launcher for a study's ``launcher:`` section. ``apply`` matters to ``kserve`` only
    (the process launchers start servers on this machine, which is what a study is for);
    its cluster credentials are loaded here (ClusterError when there are none)."""
    if isinstance(spec, SimLauncherSpec):
        return SimLauncher(spec, announce)
    if isinstance(spec, LocalLauncherSpec):
        return LocalLauncher(spec, announce)
    cluster = Cluster.connect(spec.namespace, spec.name, apply, spec.kubeconfig)
    return KServeLauncher(spec, cluster, announce)

"""The CPU thread policy esae.runtime sets before torch loads (bounded OpenMP spin; a user's own
settings left alone), checked in fresh processes since libgomp reads it once."""

import json
import os
import subprocess
import sys

import pytest

from esae.runtime import repo_root

PROBE = ("import json, os, esae.runtime as r; print(json.dumps({'policy': os.environ.get('OMP_WAIT_POLICY'), "
         "'spins': os.environ.get('GOMP_SPINCOUNT'), 'fair': r.passive_wait_policy()}))")


def _probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ESAE_CPU_POLICY")}
    base["PYTHONPATH"] = str(repo_root()) + os.pathsep + base.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env, expected", [
    ({}, {"policy": "PASSIVE", "spins": "1000", "fair": True}),  # the default: a bounded spin
    ({"OMP_WAIT_POLICY": "ACTIVE"}, {"policy": "ACTIVE", "spins": None, "fair": False}),  # the user's choice
    ({"GOMP_SPINCOUNT": "20000"}, {"policy": "PASSIVE", "spins": "20000", "fair": False}),
    ({"ESAE_CPU_POLICY": "off"}, {"policy": None, "spins": None, "fair": False}),  # libgomp's default
])
def test_openmp_waits_are_bounded_unless_the_user_says_otherwise(env, expected):
    assert _probe(**env) == expected

"""The ``rig`` fixture: N simulated hosts, each with its own dockerd (see rig.py).

``rig`` builds three hosts with all four local images. A test that needs
another shape passes options through indirect parametrization::

    @pytest.mark.parametrize("rig", [{"n": 2, "images": ["xavi-local/valkey:8"]}],
                             indirect=True)

The rig is torn down after the test whatever happened: a failed assertion, an
error in ``start()`` (which cleans up after itself), or Ctrl-C. On Ctrl-C,
pytest still runs fixture finalizers when the session ends, and ``Rig.stop()``
defers a second Ctrl-C until it is done. A killed test
process leaves its rig behind; ``scripts/multihost.sh down`` removes rigs whose
owner process is gone.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from typing import Any

import pytest

from tests.multihost.rig import LOCAL_IMAGES, Rig, RigError


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    options: dict[str, Any] = getattr(request, "param", {})
    built = Rig(options.get("n", 3), images=options.get("images", tuple(LOCAL_IMAGES.values())))
    atexit.register(built.stop)  # last resort if the interpreter exits without teardown
    try:
        try:
            built.start()
        except RigError as exc:
            pytest.fail(f"the multi-host rig did not start: {exc}")
        yield built
    finally:
        built.stop()
        atexit.unregister(built.stop)

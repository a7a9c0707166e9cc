"""The output profiles, by name: one line each (see ``transforms.profiles.base`` for what a profile declares)."""
from __future__ import annotations

from transforms.profiles import hackle, statsig
from transforms.profiles.base import WAREHOUSE

PROFILES = {
    WAREHOUSE.name: WAREHOUSE,
    hackle.PROFILE.name: hackle.PROFILE,
    statsig.PROFILE.name: statsig.PROFILE,
}

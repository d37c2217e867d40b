"""Every profile has a dated price."""
from __future__ import annotations

import re

import pytest

from gpuforge.core.errors import BadInputError
from gpuforge.hardware.pricing import load_pricing
from gpuforge.hardware.profiles import load_profiles


def test_pricing_covers_every_profile():
    pricing, profiles = load_pricing(), load_profiles()
    assert set(pricing) == set(profiles)
    for gpu_id, price in pricing.items():
        assert 0.01 <= price.usd_per_hour <= 100, gpu_id
        assert price.provider and re.match(r"^\d{4}-\d{2}", price.date), gpu_id


def test_bad_pricing_file(tmp_path):
    bad = tmp_path / "pricing.toml"
    bad.write_text('[t4]\nusd_per_hour = -1\nprovider = "x"\ndate = "2026-01"\n')
    with pytest.raises(BadInputError, match=r"\[t4\].*usd_per_hour"):
        load_pricing(bad)
    bad.write_text('[t4]\nusd_per_hour = 1.0\nprovider = "x"\n')
    with pytest.raises(BadInputError, match="date"):
        load_pricing(tmp_path / "pricing.toml")

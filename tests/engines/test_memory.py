"""Up-front memory estimates and their refusal (issue #26 deliverable 5)."""

import pytest

from jaxcluster.engines.memory import (
    MemoryEstimateError,
    available_memory_bytes,
    check_memory,
    estimate_survey_bytes,
    estimate_training_bytes,
)
from jaxcluster.survey import SurveyConfig


def test_estimates_grow_with_the_work():
    coarse = estimate_survey_bytes(SurveyConfig(area_deg2=4.0, cell_size=4.0, pixel_arcmin=3.0))
    fine = estimate_survey_bytes(SurveyConfig(area_deg2=4.0, cell_size=0.5, pixel_arcmin=3.0))
    assert 0.8e9 < coarse < fine < 4e9  # measured peaks: 0.87 GB and 1.52 GB (float32; x64 doubles the arrays)
    assert estimate_training_bytes(10**6, (8, 6, 4), 6) > estimate_training_bytes(10**3, (8, 6, 4), 6)


def test_check_memory_refuses_naming_estimate_limit_and_flag(monkeypatch):
    with pytest.raises(MemoryEstimateError, match=r"the survey needs about 2 GiB .* than the 1 GiB available "
                       r"\(the given limit\).*--no-memory-check"):
        check_memory(2 * 2**30, "the survey", limit=2**30)
    check_memory(2 * 2**30, "the survey", limit=2**30, enabled=False)
    monkeypatch.setenv("JAXCLUSTER_NO_MEMORY_CHECK", "1")
    check_memory(2 * 2**30, "the survey", limit=2**30)
    monkeypatch.delenv("JAXCLUSTER_NO_MEMORY_CHECK")
    limit, source = available_memory_bytes()
    assert limit > 0 and source
    check_memory(1, "nothing")
    with pytest.raises(MemoryEstimateError):
        check_memory(limit * 4, "the survey")

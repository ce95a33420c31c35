import pytest

from hpp_core.statuses import FINAL_STATUSES, Status, is_final


@pytest.mark.parametrize("status", ["COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"])
def test_final_statuses(status: str) -> None:
    assert is_final(status)


@pytest.mark.parametrize(
    "status",
    ["WAITING", "IN_PROGRESS", "FAILED", "BACK", "ERROR", "MANUAL_ID_CHECK", "TIMEOUT", "LEGACY", "X"],
)
def test_known_and_future_statuses_are_not_final(status: str) -> None:
    assert not is_final(status)


def test_expired_is_the_trackers_own_and_final() -> None:
    assert Status.EXPIRED in FINAL_STATUSES
    assert {"COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"} == FINAL_STATUSES

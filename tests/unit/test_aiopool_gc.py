"""The asyncio pool's collector settings (in this process, put back afterwards)."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest

from jobify_celery._aiopool._gc import GEN0_THRESHOLD, tune_collector

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("collector")
def test_the_heap_is_frozen_and_young_objects_collected_less_often() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("collector")
def test_a_higher_threshold_set_before_stays() -> None:
    gc.set_threshold(50_000, 20, 30)
    tune_collector()
    assert gc.get_threshold() == (50_000, 20, 30)

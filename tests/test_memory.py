"""`MemoryBudget`: one limit over every cache's entries, least recently used out first."""

from __future__ import annotations

from icefs.memory import MemoryBudget


def test_least_recently_used_goes_first_whatever_cache_it_is_in():
    budget = MemoryBudget(100)
    evicted: list[str] = []
    budget.put(("index", "a"), "A", 40, evicted.append)
    budget.put(("listing", "b"), "B", 40, evicted.append)
    assert budget.get(("index", "a")) == "A"  # now the most recently used
    budget.put(("nodes", "c"), "C", 40, evicted.append)
    assert evicted == ["B"]
    assert budget.used == 80
    assert budget.evictions == 1
    assert budget.get(("listing", "b")) is None


def test_too_large_alone_is_not_kept_and_resizing_may_evict():
    budget = MemoryBudget(100)
    evicted: list[str] = []
    assert not budget.put("huge", "H", 101, evicted.append)
    assert budget.used == 0
    assert evicted == []
    budget.put("a", "A", 30, evicted.append)
    budget.put("b", "B", 30, evicted.append)
    budget.resize("a", 80)  # grown: the other one goes
    assert evicted == ["B"]
    assert budget.used == 80
    assert budget.pop("a") == "A"
    assert evicted == ["B"], "pop forgets without evicting"
    assert budget.used == 0

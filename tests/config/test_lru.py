import threading

from config.lru import LRU


def test_the_least_recently_used_entry_goes_first():
    kept = LRU[str, int](maxsize=2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # "a" is now the most recent

    kept.put("c", 3)

    assert (kept.get("a"), kept.get("b"), kept.get("c")) == (1, None, 3)
    assert len(kept) == 2


def test_put_replaces_and_refreshes_and_clear_forgets():
    kept = LRU[str, int](maxsize=2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("a", 10)  # a replacement is a use

    kept.put("c", 3)

    assert (kept.get("a"), kept.get("b")) == (10, None)
    kept.clear()
    assert (len(kept), kept.get("a")) == (0, None)


def test_threads_never_leave_more_than_maxsize():
    kept = LRU[int, int](maxsize=50)

    def fill(start: int) -> None:
        for key in range(start, start + 2_000):
            kept.put(key, key)
            kept.get(key - 7)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(kept) == 50

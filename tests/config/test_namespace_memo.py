from config.cache.namespaces import NamespaceMemo, bump_namespace


class Loader:
    def __init__(self, value: object = "v") -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def test_a_value_is_loaded_once_while_its_namespace_keeps_its_version():
    memo, load = NamespaceMemo("memo-test"), Loader()

    assert [memo.get("k", load) for _ in range(3)] == ["v", "v", "v"]
    assert load.calls == 1


def test_a_bump_makes_every_kept_value_load_again():
    memo, load = NamespaceMemo("memo-test"), Loader()
    memo.get("k", load)

    bump_namespace("memo-test")
    load.value = "new"

    assert memo.get("k", load) == "new"
    assert load.calls == 2


def test_none_is_returned_but_not_kept():
    memo, load = NamespaceMemo("memo-test"), Loader(None)

    assert memo.get("k", load) is None
    assert memo.get("k", load) is None
    assert load.calls == 2


def test_the_least_recently_used_value_goes_first():
    memo = NamespaceMemo("memo-test", maxsize=2)
    a, b, c = Loader("a"), Loader("b"), Loader("c")
    memo.get("a", a)
    memo.get("b", b)
    memo.get("a", a)  # a is now the most recent
    memo.get("c", c)  # evicts b

    memo.get("a", a)
    memo.get("b", b)

    assert (a.calls, b.calls, c.calls) == (1, 2, 1)

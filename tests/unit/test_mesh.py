"""Provider choice: local first, then a stable rendezvous choice among live remote providers."""

from xavi.mesh import Member, choose_locations, format_services_tag, parse_services_tag


def member(name: str, address: str, services: str, state: str = "alive") -> Member:
    return Member(name, address, 7946, state, {"xavi": "0.1.0", "services": services})


def test_local_provider_wins_over_remote() -> None:
    members = [member("b", "10.77.0.12", "postgres=5432")]
    chosen = choose_locations("a", ["postgres", "app"], members)
    assert chosen["postgres"].host == "xavi-postgres"
    assert chosen["postgres"].port == 5432
    assert chosen["postgres"].local


def test_remote_provider_gives_address_and_published_port() -> None:
    members = [member("b", "10.77.0.12", "postgres=15432"), member("c", "10.77.0.13",
                                                                  "valkey=6379")]
    chosen = choose_locations("a", ["app"], members)
    assert (chosen["postgres"].host, chosen["postgres"].port) == ("10.77.0.12", 15432)
    assert (chosen["valkey"].host, chosen["valkey"].node) == ("10.77.0.13", "c")


def test_dead_and_left_members_are_not_providers() -> None:
    members = [member("b", "10.77.0.12", "postgres=5432", state="dead"),
               member("c", "10.77.0.13", "postgres=5432", state="left")]
    assert "postgres" not in choose_locations("a", ["app"], members)


def test_suspect_member_still_provides() -> None:
    members = [member("b", "10.77.0.12", "postgres=5432", state="suspect")]
    assert choose_locations("a", ["app"], members)["postgres"].node == "b"


def test_choice_is_same_whatever_the_order() -> None:
    members = [member(f"n{i}", f"10.77.0.{20 + i}", "postgres=5432") for i in range(8)]
    first = choose_locations("a", ["app"], members)
    again = choose_locations("x", ["app"], list(reversed(members)))
    assert first["postgres"] == again["postgres"]


def test_unrelated_node_joining_or_leaving_changes_nothing() -> None:
    providers = [member(f"n{i}", f"10.77.0.{20 + i}", "postgres=5432") for i in range(5)]
    before = choose_locations("a", ["app"], providers)["postgres"]
    with_other = providers + [member("other", "10.77.0.99", "valkey=6379")]
    assert choose_locations("a", ["app"], with_other)["postgres"] == before


def test_losing_a_non_chosen_provider_keeps_the_choice() -> None:
    providers = [member(f"n{i}", f"10.77.0.{20 + i}", "postgres=5432") for i in range(5)]
    chosen = choose_locations("a", ["app"], providers)["postgres"]
    for gone in providers:
        if gone.name == chosen.node:
            continue
        rest = [m for m in providers if m is not gone]
        assert choose_locations("a", ["app"], rest)["postgres"] == chosen


def test_services_tag_round_trip_and_garbage() -> None:
    assert parse_services_tag(format_services_tag({"valkey": 6379, "postgres": 5432})) == {
        "postgres": 5432, "valkey": 6379}
    assert format_services_tag({"valkey": 6379, "postgres": 5432}) == "postgres=5432,valkey=6379"
    assert parse_services_tag("postgres=99999,evil=1,valkey=x,=,valkey=6380") == {"valkey": 6380}

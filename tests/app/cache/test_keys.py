"""Cache keys: equal for requests that must share an entry, different for everything else."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from app.cache import graphql_cache_key, rest_cache_key
from infra import cache_keys as ck
from infra.settings import Settings

QUERY = """
query Batch($id: ID!, $first: Int) {
  batch(id: $id) { id status essays(first: $first) { totalCount } }
}
"""
SAME_QUERY_REFORMATTED = """# the teacher dashboard's query
query Batch($id: ID!,$first:Int){batch(id:$id){id status
  essays(first: $first) { totalCount }  # how many
}}"""


def key(
    query: str = QUERY,
    variables: Mapping[str, object] | None = None,
    user: str | None = "alice",
    op: str | None = "Batch",
) -> str | None:
    return graphql_cache_key(query, op, {"id": "b1", "first": 5} if variables is None else variables, user)


def test_whitespace_comments_and_variable_order_do_not_matter() -> None:
    assert key() == key(SAME_QUERY_REFORMATTED) == key(variables={"first": 5, "id": "b1"})
    nested = {"filter": {"b": 1, "a": [1, 2]}}
    assert key(variables=nested) == key(variables={"filter": {"a": [1, 2], "b": 1}})


def test_no_variables_and_empty_variables_are_the_same_request() -> None:
    assert graphql_cache_key("{ a }", None, None, None) == graphql_cache_key("{ a }", "", {}, None)


def test_anything_that_changes_the_answer_changes_the_key() -> None:
    base = key()
    assert base is not None
    others = [
        key(variables={"id": "b2", "first": 5}),
        key(variables={"id": "b1", "first": 6}),
        key(op=None),
        key("query Batch($id: ID!, $first: Int) { batch(id: $id) { id } }"),
        graphql_cache_key(QUERY, "Batch", {"id": "b1", "first": 5}, "alice", version="2"),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_scopes_never_share_a_key() -> None:
    keys = {key(user="alice"), key(user="bob"), key(user=None), key(user=ck.ALL_USERS), key(user="")}
    assert len(keys) == 5, "in particular X-User-ID '*' is not the unscoped view"


def test_unparsable_documents_and_unencodable_variables_are_not_cached() -> None:
    assert graphql_cache_key("query {", None, None, None) is None
    assert graphql_cache_key("{ a }", None, {"n": 2**70}, None) is None


def test_rest_keys_sort_parameters_and_keep_repeats() -> None:
    a = rest_cache_key("/v1/batches", [("status", "done"), ("limit", "10")], "alice")
    assert a == rest_cache_key("/v1/batches", [("limit", "10"), ("status", "done")], "alice")
    assert a != rest_cache_key("/v1/batches", [("limit", "10"), ("status", "done"), ("status", "done")], "alice")
    assert a != rest_cache_key("/v1/batches", [("limit", "10"), ("status", "done")], None)
    assert rest_cache_key("/x", [], None) != graphql_cache_key("{ x }", None, None, None)


def test_layout_and_tags() -> None:
    layout = ck.CacheLayout("dep1")
    assert layout.entry("e1", "abc") == layout.entry_prefix + "e1:abc" == "{dep1}:e:e1:abc"
    assert layout.tag_keys({"u:b", "b:a"}) == ["{dep1}:t:b:a", "{dep1}:s:b:a", "{dep1}:t:u:b", "{dep1}:s:u:b"]
    assert ck.changed_tags(["x"], ["alice"]) == {"b:x", "u:alice", "u:*"}
    assert ck.changed_tags([], []) == frozenset()
    assert ck.read_tags(["x"], [ck.ALL_USERS]) == {"b:x", "u:*"}
    assert (ck.tag_kind("b:x"), ck.tag_kind("u:*")) == ("batch", "user")
    assert ck.new_epoch() != ck.new_epoch()


def test_every_key_a_script_touches_is_in_one_cluster_slot() -> None:
    """The scripts run on Redis Cluster only because their keys share the prefix's hash slot; ids with braces in
    them (a made-up batch id) must not move a key to another slot, and deployments use different slots."""
    layout = ck.CacheLayout("dep1")
    tags = ck.read_tags(["x", "{y}", "}z{"], ["alice", ck.ALL_USERS])
    keys = [layout.epoch, layout.counter, layout.entry("e1", "abc"), *layout.tag_keys(tags), layout.events_pattern]
    keys += [layout.batch_channel("{y}"), layout.user_channel("alice"), layout.positions_channel]
    keys += [layout.watermark, *layout.lsn_keys(tags)]  # the replica guard's (docs/cache.md)
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"dep1")}
    assert key_slot(ck.CacheLayout("dep2").epoch.encode()) != key_slot(b"dep1")


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b"])
def test_a_prefix_that_cannot_be_a_hash_tag_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="cache_prefix"):
        Settings(database_url="postgresql+asyncpg://u@h/d", cache_prefix=prefix)

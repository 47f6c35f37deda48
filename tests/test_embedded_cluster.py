"""The embedded Redis Cluster: start, topology, failover, clean stop."""

from __future__ import annotations

import redis
from support.waiting import process_gone

from fastredis.embedded import EmbeddedCluster


def test_three_primaries_three_replicas_cover_every_slot(cluster_url: str) -> None:
    with redis.RedisCluster.from_url(cluster_url) as client:
        primaries = client.get_primaries()
        assert len(primaries) == 3
        assert len(client.get_replicas()) == 3
        # one key per primary: every node takes writes for its own slots
        keys = {}
        for i in range(200):
            keys.setdefault(client.get_node_from_key(f"k{i}").name, f"k{i}")
        assert len(keys) == 3
        for key in keys.values():
            client.xadd(key, {"d": key})
        assert all(client.xrange(key)[0][1] == {b"d": key.encode()} for key in keys.values())
        slots = client.cluster_slots()
    covered = sum(last - first + 1 for first, last in slots)
    assert covered == EmbeddedCluster.SLOTS


def test_no_persistence_and_clean_stop() -> None:
    cluster = EmbeddedCluster().start()
    dirs = [node.data_dir for node in cluster.nodes]
    pids = [node.pid for node in cluster.nodes]
    with redis.Redis.from_url(cluster.nodes[0].url) as node:
        assert node.config_get("save")["save"] == ""
        assert node.config_get("appendonly")["appendonly"] == "no"
    cluster.close()
    assert all(pid is not None and process_gone(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)


def test_killed_primary_is_replaced_by_its_replica(private_cluster: EmbeddedCluster) -> None:
    key = "{cam1}:rgb"
    with redis.RedisCluster.from_url(private_cluster.url) as client:
        client.xadd(key, {"d": b"before"})
        # make sure the entry reached the replica before the crash
        primary = client.get_node_from_key(key)
        assert client.execute_command("WAIT", 1, 5000, target_nodes=primary) == 1
    killed = private_cluster.kill_primary(key)
    private_cluster.wait_failover(key, killed)
    promoted = private_cluster.primary_of(key)
    assert promoted is not killed and promoted.pid is not None
    with redis.RedisCluster.from_url(private_cluster.url) as client:
        assert [fields for _id, fields in client.xrange(key)] == [{b"d": b"before"}]
        client.xadd(key, {"d": b"after"})
    private_cluster.revive(killed)
    assert private_cluster.primary_of(key) is promoted  # the old primary rejoined as a replica
    assert len(private_cluster.primaries()) == 3

# Drives a running Tern agent with py-consul, unchanged, the way Consul users
# do; run by tests/consul_clients.rs with TERN_HTTP_PORT set. Fails loudly.
import os, threading, time
import consul

c = consul.Consul(host="127.0.0.1", port=int(os.environ["TERN_HTTP_PORT"]))
assert c.status.leader() != "", "a leader"
assert len(c.status.peers()) == 1
assert c.kv.put("py/a", "1") is True
assert c.kv.put("py/b", "2", flags=7) is True
idx, v = c.kv.get("py/a")
assert v["Value"] == b"1" and int(idx) >= 1, v
assert c.kv.put("py/a", "3", cas=v["ModifyIndex"]) is True
assert c.kv.put("py/a", "4", cas=v["ModifyIndex"]) is False, "stale cas must fail"
assert c.kv.put("py/new", "x", cas=0) is True
assert c.kv.put("py/new", "y", cas=0) is False, "cas 0 is create-only"
_, vs = c.kv.get("py/", recurse=True)
assert [(x["Key"], x["Value"], x["Flags"]) for x in vs] == [
    ("py/a", b"3", 0), ("py/b", b"2", 7), ("py/new", b"x", 0)], vs
_, keys = c.kv.get("py/", keys=True)
assert keys == ["py/a", "py/b", "py/new"], keys
_, missing = c.kv.get("nope")
assert missing is None
_, stale = c.kv.get("py/a", consistency="stale")
assert stale["Value"] == b"3"
_, cons = c.kv.get("py/a", consistency="consistent")
assert cons["Value"] == b"3"
assert c.kv.delete("py/", recurse=True) is True
assert c.kv.get("py/", recurse=True)[1] is None
# A blocking query returns when the key changes.
idx, _ = c.kv.get("watched")
threading.Thread(target=lambda: (time.sleep(0.5), c.kv.put("watched", "x"))).start()
t = time.time()
_, w = c.kv.get("watched", index=idx, wait="5s")
assert w["Value"] == b"x" and time.time() - t < 4, (w, time.time() - t)
assert c.agent.self()["Config"]["Datacenter"] == "dc1"
# The gossip member list, as serf encodes it (Status 1: alive).
members = c.agent.members()
assert [(m["Status"], m["Tags"]["role"], m["Tags"]["dc"]) for m in members] == [(1, "consul", "dc1")], members
assert c.agent.members(wan=True)[0]["Name"].endswith(".dc1")
assert [s["Voter"] for s in c.operator.raft_config()["Servers"]] == [True]
# The catalog, as py-consul's catalog calls send and read it.
assert c.catalog.register(
    "ext1", "10.0.0.9",
    service={"Service": "redis", "ID": "redis1", "Tags": ["primary", "v1"], "Port": 6379},
    check={"Name": "redis alive", "CheckID": "service:redis1", "Status": "passing", "ServiceID": "redis1"},
    node_meta={"ignored": "by-register"},
) is True
assert c.catalog.register("ext2", "10.0.0.10", service={"Service": "redis", "Port": 6380}) is True
assert c.catalog.datacenters() == ["dc1"]
# The agent's own node is there too: its leader registers every gossip
# member with serfHealth, and a server with the consul service.
me = c.agent.self()["Config"]["NodeName"]
idx, nodes = c.catalog.nodes()
assert [n["Node"] for n in nodes] == sorted(["ext1", "ext2", me]) and int(idx) >= 1, nodes
idx, services = c.catalog.services()
assert services == {"consul": [], "redis": ["primary", "v1"]}, services
idx, redis = c.catalog.service("redis")
assert [(s["Node"], s["ServiceID"], s["ServicePort"]) for s in redis] == [
    ("ext1", "redis1", 6379), ("ext2", "redis", 6380)], redis
_, tagged = c.catalog.service("redis", tag="PRIMARY")
assert [s["Node"] for s in tagged] == ["ext1"], tagged
_, node = c.catalog.node("ext1")
assert node["Node"]["Address"] == "10.0.0.9" and node["Services"]["redis1"]["Port"] == 6379, node
assert c.catalog.node("nope")[1] is None
# A blocking read of the service returns when an instance goes.
threading.Thread(target=lambda: (time.sleep(0.5), c.catalog.deregister("ext2"))).start()
t = time.time()
idx2, after = c.catalog.service("redis", index=idx, wait="5s")
assert [s["Node"] for s in after] == ["ext1"] and int(idx2) > int(idx) and time.time() - t < 4
assert c.catalog.deregister("ext1", service_id="redis1") is True
assert c.catalog.service("redis")[1] == []
assert c.catalog.deregister("ext1") is True
assert [n["Node"] for n in c.catalog.nodes()[1]] == [me]
# Transactions (agent/txn_endpoint.go), as py-consul's txn.put sends them.
import base64
b64 = lambda s: base64.b64encode(s.encode()).decode()
r = c.txn.put([
    {"KV": {"Verb": "set", "Key": "txn/a", "Value": b64("1")}},
    {"KV": {"Verb": "set", "Key": "txn/b", "Value": b64("2")}},
    {"KV": {"Verb": "get", "Key": "txn/a"}},
])
assert r["Errors"] is None and len(r["Results"]) == 3, r
assert r["Results"][0]["KV"]["Key"] == "txn/a" and r["Results"][0]["KV"]["Value"] is None, r
assert base64.b64decode(r["Results"][2]["KV"]["Value"]) == b"1", r
idx = r["Results"][0]["KV"]["ModifyIndex"]
assert r["Results"][1]["KV"]["ModifyIndex"] == idx, r
# A failed check rolls the whole transaction back: 409 with the errors.
try:
    c.txn.put([
        {"KV": {"Verb": "set", "Key": "txn/c", "Value": b64("3")}},
        {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": idx + 1000}},
    ])
    raise AssertionError("a failed transaction did not raise")
except consul.ConsulException as e:
    assert "409" in str(e) or "failed index check" in str(e), e
assert c.kv.get("txn/c")[1] is None
# Sessions and KV locks, as py-consul sends and reads them.
_, health = c.health.node(me)
assert [(h["CheckID"], h["Status"]) for h in health] == [("serfHealth", "passing")], health
s1 = c.session.create(name="py-lock", lock_delay=0, ttl=30)
s2 = c.session.create(behavior="delete")
_, info = c.session.info(s1)
assert info["Name"] == "py-lock" and info["TTL"] == "30s" and info["Node"] == me, info
assert info["LockDelay"] == 0, info
assert sorted(x["ID"] for x in c.session.list()[1]) == sorted([s1, s2])
assert sorted(x["ID"] for x in c.session.node(me)[1]) == sorted([s1, s2])
assert c.session.renew(s1)["ID"] == s1
assert c.kv.put("py/lock", "held", acquire=s1) is True
assert c.kv.put("py/lock", "other", acquire=s2) is False
_, held = c.kv.get("py/lock")
assert held["Session"] == s1 and held["LockIndex"] == 1 and held["Value"] == b"held", held
assert c.kv.put("py/lock", "x", release=s2) is False
assert c.kv.put("py/lock", "free", release=s1) is True
_, free = c.kv.get("py/lock")
assert "Session" not in free and free["LockIndex"] == 1, free
assert c.kv.put("py/eph", "e", acquire=s2) is True
assert c.session.destroy(s2) is True
assert c.kv.get("py/eph")[1] is None, "behavior delete deletes the key"
assert c.session.destroy(s1) is True
assert c.session.info(s1)[1] is None
try:
    c.session.renew(s1)
    raise AssertionError("renewing a destroyed session must fail")
except consul.NotFound:
    pass
# The local agent's services and checks (agent/agent_endpoint.go), as
# py-consul's agent.service and agent.check calls send and read them.
from consul import Check
assert c.agent.service.register(
    "pyweb", service_id="pyweb-1", port=8080, tags=["v1"], meta={"team": "py"},
    check=Check.ttl("30s"),
    tagged_addresses={"lan": {"address": "127.0.0.1", "port": 8080}}) is True
svcs = c.agent.services()
w = svcs["pyweb-1"]
assert (w["Service"], w["Port"], w["Tags"], w["Meta"]) == ("pyweb", 8080, ["v1"], {"team": "py"}), w
assert w["TaggedAddresses"]["lan"] == {"Address": "127.0.0.1", "Port": 8080}, w
assert c.agent.service_definition("pyweb-1")["ContentHash"], "one service with its hash"
assert c.agent.checks()["service:pyweb-1"]["Status"] == "critical"
assert c.agent.check.ttl_pass("service:pyweb-1", notes="ok") is True
assert c.agent.checks()["service:pyweb-1"]["Output"] == "ok"
assert c.agent.check.register("pydisk", Check.ttl("60s"), check_id="pydisk",
                              service_id="pyweb-1") is True
assert c.agent.check.ttl_warn("pydisk", notes="80%") is True
assert c.agent.checks()["pydisk"]["ServiceID"] == "pyweb-1"
assert c.agent.check.ttl_fail("pydisk") is True
assert c.agent.check.ttl_pass("pydisk") is True
# Anti-entropy puts both in the catalog.
for _ in range(100):
    _, nodes = c.health.service("pyweb", passing=True)
    if len(nodes) == 1 and len(nodes[0]["Checks"]) == 3:
        break
    time.sleep(0.1)
assert [n["Service"]["ID"] for n in nodes] == ["pyweb-1"], nodes
assert sorted(x["CheckID"] for x in nodes[0]["Checks"]) == ["pydisk", "serfHealth", "service:pyweb-1"], nodes
assert c.agent.check.deregister("pydisk") is True
assert c.agent.service.deregister("pyweb-1") is True
assert c.agent.services() == {} and c.agent.checks() == {}
for _ in range(100):
    if c.health.service("pyweb")[1] == []:
        break
    time.sleep(0.1)
assert c.health.service("pyweb")[1] == []
print("py-consul: all checks passed")

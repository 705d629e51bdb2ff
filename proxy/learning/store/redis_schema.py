"""The shared store's Redis keyspace: one function per key kind, the Lua scripts, the codec.

Owns key names, how a sample and a pair are packed into bytes, and the scripts that change
one model's keys atomically. Does no I/O (redis_store.py does) and imports no Redis client.

Every key of a model carries the hash tag `{model}`, so on Redis Cluster a model's windows,
versions, late marks, decisions and probe leases share one slot and one script may touch
them together; the change index, the epoch and the global decision log share the tag
`{_global}`; the fleet's probe budget, per model and overall, the tag `{_budget}`. No script
touches two slots. docs/redis.md lists every key with its type and TTL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.domain import Outcome, Pair, Sample, Source

log = logging.getLogger("ttft_router.store")

GLOBAL_TAG = "_global"
BUDGET_TAG = "_budget"

# One command as redis-py's `execute_command` takes it: plain data, so it can be re-sent.
Command = tuple[Any, ...]

# A pair's version grows by a random step of 1..VERSION_STEP_MAX per append, not by one: after
# a failover that lost the last acknowledged writes, new writes then almost never bring a pair
# back to a version a replica already read with other samples (docs/redis.md, "Failover").
# Small enough that a version stays exact in Lua's doubles for thousands of years of appends.
VERSION_STEP_MAX = 1 << 20

# A sample whose timestamp is this much older than its window's newest is "late": it lands
# where a reader reading only the tail of the window would miss it (see READ_WINDOW).
LATE_S = 10.0


def window_key(prefix: str, pair: Pair) -> str:
    """Sorted set: score = sample timestamp, member = packed sample."""
    return f"{prefix}:{{{pair.model}}}:w:{pair.provider}"


def versions_key(prefix: str, model: str) -> str:
    """Hash: provider -> version of that pair's window (bumped by every append)."""
    return f"{prefix}:{{{model}}}:versions"


def late_key(prefix: str, model: str) -> str:
    """Hash: provider -> version of the last append that held a late sample."""
    return f"{prefix}:{{{model}}}:late"


def lease_key(prefix: str, pair: Pair, slot: str) -> str:
    """String with a TTL (SET NX PX): the replica holding this pair's probe slot."""
    return f"{prefix}:{{{pair.model}}}:lease:{pair.provider}:{slot}"


def model_decisions_key(prefix: str, model: str) -> str:
    """List, newest first: one model's recent decisions (JSON)."""
    return f"{prefix}:{{{model}}}:decisions"


def decisions_key(prefix: str) -> str:
    """List, newest first: every model's recent decisions (JSON)."""
    return f"{prefix}:{{{GLOBAL_TAG}}}:decisions"


def changes_key(prefix: str) -> str:
    """Sorted set: member = packed pair, score = Redis server time (ms) of its last append."""
    return f"{prefix}:{{{GLOBAL_TAG}}}:changes"


def shared_key(prefix: str, name: str) -> str:
    """String, with or without a TTL: a value replicas share (Store.put_once)."""
    return f"{prefix}:{{{GLOBAL_TAG}}}:shared:{name}"


def epoch_key(prefix: str) -> str:
    """String: a random token set by the first writer into an empty keyspace."""
    return f"{prefix}:{{{GLOBAL_TAG}}}:epoch"


def budget_keys(prefix: str) -> tuple[str, str, str]:
    """The fleet's probe budget, one slot: a sorted set (spend id -> server time in ms it was
    counted), a hash (spend id -> "nano-USD|model") and a hash of running totals ("n",
    "usd", "n:MODEL", "usd:MODEL"; USD in nano-dollars)."""
    base = f"{prefix}:{{{BUDGET_TAG}}}:budget"
    return f"{base}:spends", f"{base}:spent", f"{base}:totals"


def client_keys(prefix: str, client: str, day: str, month: str) -> tuple[str, ...]:
    """One client's keys, one slot (the hash tag `{c:NAME}`): its window (sorted set:
    request id -> ms admitted), the tokens counted per request (hash), the window's totals
    (hash: n, tok), its concurrency slots (sorted set: request id -> ms the slot frees
    itself), the use of the UTC day and month (hashes: req, tok, usd in nano-USD, refused),
    when it was last seen (string, ms) and the requests charged in the last minute (sorted
    set: request id -> ms)."""
    base = f"{prefix}:{{c:{client}}}"
    return (f"{base}:log", f"{base}:tok", f"{base}:tot", f"{base}:live", f"{base}:d:{day}",
            f"{base}:m:{month}", f"{base}:seen", f"{base}:charged")  # fmt: skip


# Sample <-> bytes: a JSON array readable with redis-cli, timestamp first (the append script
# reads it as the score). Model and provider are in the key; times are rounded to the
# microsecond, which halves a member's size. Never contains a newline (batches are joined
# with them). Fields are only ever appended: a member written before a field existed has
# fewer and still decodes (the missing ones are None), and a sample without the newer
# fields packs as the older, shorter array: nine elements; then output_tokens and decode_s
# (decode throughput, v2); then the client's name (v3: only when the sample has one, with
# the v2 pair as nulls if the sample has none).
def pack_sample(s: Sample) -> bytes:
    fields: list[object] = [
        round(s.timestamp, 6), s.outcome, _us(s.ttft_s), _us(s.ttfb_s), _us(s.total_s),
        _us(s.censored_at_s), s.source, s.prompt_tokens, s.replica,
    ]  # fmt: skip
    if s.output_tokens is not None or s.decode_s is not None or s.client:  # v2
        fields += [s.output_tokens, _us(s.decode_s)]
    if s.client:  # v3
        fields.append(s.client)
    return orjson.dumps(fields)


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


_OUTCOMES = {o.value: o for o in Outcome}
_SOURCES = {s.value: s for s in Source}


def unpack_samples(pair: Pair, members: Iterable[bytes]) -> list[Sample]:
    """Decode a window's members, in order; a member that does not decode is skipped, logged."""
    model, provider = pair
    out = []
    for member in members:
        try:
            fields = orjson.loads(member)
            ts, outcome, ttft, ttfb, total, censored, source, tokens, replica = fields[:9]
            output_tokens, decode_s = [*fields[9:11], None, None][:2]  # absent before v2
            client = str(fields[11]) if len(fields) > 11 else ""  # absent before v3
            out.append(
                Sample(model, provider, _OUTCOMES[outcome], ttft, ts, ttfb, total, censored,
                       _SOURCES[source], tokens, replica, output_tokens, decode_s, client)
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipped an undecodable sample of %s: %r (%s)", pair, member[:80], exc)
    return out


def pack_pair(pair: Pair) -> bytes:
    return orjson.dumps([pair.model, pair.provider])


def unpack_pair(member: bytes) -> Pair | None:
    try:
        model, provider = orjson.loads(member)
    except (ValueError, TypeError):
        log.warning("skipped an undecodable change-index entry: %r", member[:80])
        return None
    return Pair(str(model), str(provider))


@dataclass(frozen=True)
class Script:
    name: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


APPEND_SAMPLES = Script(
    "append_samples",
    """
-- Add samples to one pair's window, trim it by age and count, bump the pair's version.
-- KEYS[1] window   KEYS[2] the model's versions   KEYS[3] the model's late marks
-- ARGV[1] provider   ARGV[2] max_samples   ARGV[3] age cutoff (older samples are dropped)
-- ARGV[4] ttl_s      ARGV[5] late_s       ARGV[6] oldest timestamp in this batch
-- ARGV[7] version step (1..VERSION_STEP_MAX, random)
-- ARGV[8] packed samples, one per line; each starts with its timestamp: "[ts,..."
-- Returns the pair's new version. The version is bumped first: a script is not rolled back
-- on error, and when Redis refuses writes (OOM) it refuses this first one, so nothing is
-- half-done; a retried batch re-adds the same members (a no-op) and bumps the version.
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
local version = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[7])
if not newest or tonumber(ARGV[6]) < tonumber(newest) - tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[3], ARGV[1], version)
end
local args = {}
for member in string.gmatch(ARGV[8], '[^\\n]+') do
  args[#args + 1] = string.match(member, '^%[([^,]+),')
  args[#args + 1] = member
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return version
""",
)

TOUCH_INDEX = Script(
    "touch_index",
    """
-- Mark pairs as changed now (Redis server time), drop entries older than the TTL, and
-- give an empty keyspace its epoch token.
-- KEYS[1] change index   KEYS[2] epoch
-- ARGV[1] epoch token to set if there is none   ARGV[2] ttl_s   ARGV[3..] packed pairs
-- Returns the score given (ms).
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now_ms, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]) * 1000)
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return now_ms
""",
)

READ_WINDOW = Script(
    "read_window",
    """
-- One pair's window if its version differs from the caller's: all of it, or its tail.
-- KEYS[1] window   KEYS[2] the model's versions   KEYS[3] the model's late marks
-- ARGV[1] provider   ARGV[2] version the caller holds (-1: none, send everything)
-- ARGV[3] tail bound: the caller keeps its samples scored below it
-- Returns {version, 0} when unchanged; {version, 1, members} with the whole window when
-- the caller holds nothing, the version went back (FLUSHALL) or a late sample arrived
-- since the caller's version; else {version, 2, members scored >= bound}. Oldest first.
local version = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local known = tonumber(ARGV[2])
if version == known then return {version, 0} end
local late = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if known <= 0 or version < known or late > known then
  return {version, 1, redis.call('ZRANGE', KEYS[1], 0, -1)}
end
return {version, 2, redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')}
""",
)

SPEND_BUDGET = Script(
    "spend_budget",
    """
-- The fleet's probe budget in a sliding window: count, settle or refund one probe's spend,
-- checking the overall and the model's caps atomically. Every replica calls this one script.
-- KEYS[1] spends (id -> ms counted)   KEYS[2] spent (id -> "nano|model")   KEYS[3] totals
-- ARGV[1] "spend" or "refund"   ARGV[2] spend id   ARGV[3] model   ARGV[4] cost (nano-USD)
-- ARGV[5] window (ms)   ARGV[6] max probes   ARGV[7] max cost (nano-USD)
-- ARGV[8] max probes of the model   ARGV[9] max cost of the model (nano-USD); -1: no cap
-- A spend whose id is counted already is settled: its cost becomes ARGV[4], never refused.
-- Returns {granted 0/1, refusal (0 none, 1 probes, 2 cost, 3 model probes, 4 model cost),
--          probes, cost, the model's probes, the model's cost (after the call),
--          ms until the oldest spend leaves the window (-1: nothing spent)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[5])
local function add(field, delta)
  if delta ~= 0 and redis.call('HINCRBY', KEYS[3], field, delta) == 0 then
    redis.call('HDEL', KEYS[3], field)
  end
end
local function count(model, probes, nano)
  add('n', probes); add('usd', nano); add('n:' .. model, probes); add('usd:' .. model, nano)
end
local function entry(id)
  local packed = redis.call('HGET', KEYS[2], id)
  if not packed then return nil end
  local nano, model = string.match(packed, '^(%-?%d+)|(.*)$')
  return tonumber(nano), model
end
local function forget(id)
  local nano, model = entry(id)
  if nano then count(model, -1, -nano); redis.call('HDEL', KEYS[2], id) end
end
local function total(field) return tonumber(redis.call('HGET', KEYS[3], field) or '0') end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)) do
  forget(id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local id, model, cost = ARGV[2], ARGV[3], tonumber(ARGV[4])
local granted, refusal = 1, 0
local known_cost, known_model = entry(id)
if ARGV[1] == 'refund' then
  forget(id)
  redis.call('ZREM', KEYS[1], id)
elseif known_cost then
  count(known_model, 0, cost - known_cost)
  redis.call('HSET', KEYS[2], id, ARGV[4] .. '|' .. known_model)
else
  local n_cap, usd_cap = tonumber(ARGV[8]), tonumber(ARGV[9])
  if total('n') >= tonumber(ARGV[6]) then refusal = 1
  elseif total('usd') + cost > tonumber(ARGV[7]) then refusal = 2
  elseif n_cap >= 0 and total('n:' .. model) >= n_cap then refusal = 3
  elseif usd_cap >= 0 and total('usd:' .. model) + cost > usd_cap then refusal = 4
  end
  if refusal == 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('HSET', KEYS[2], id, ARGV[4] .. '|' .. model)
    count(model, 1, cost)
  else
    granted = 0
  end
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window) end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local frees = oldest and (tonumber(oldest) + window - now) or -1
return {granted, refusal, total('n'), total('usd'), total('n:' .. model),
        total('usd:' .. model), frees}
""",
)

_CLIENT_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function hnum(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
"""

ADMIT_CLIENT = Script(
    "admit_client",
    _CLIENT_PRELUDE
    + """
-- One request's admission against its client's limits, atomically for every replica.
-- KEYS[1] window (zset: id -> ms admitted)   KEYS[2] tokens (hash: id -> tokens counted)
-- KEYS[3] totals (hash: n, tok)   KEYS[4] slots (zset: id -> ms the slot frees itself)
-- KEYS[5] the day's use   KEYS[6] the month's use (hashes: req, tok, usd, refused)
-- KEYS[7] last seen (ms)
-- ARGV[1] request id   ARGV[2] tokens (estimate)   ARGV[3] window (ms)   ARGV[4] max requests
-- ARGV[5] max tokens   ARGV[6] max concurrent   ARGV[7] slot hold (ms)
-- ARGV[8] max USD of the day   ARGV[9] of the month (nano-USD); caps of -1: none
-- ARGV[10] day ttl (s)   ARGV[11] month ttl (s)
-- A refused request counts nothing but the refusal (in the day's and month's use).
-- Returns {refusal (0 none, 1 day, 2 month, 3 concurrent, 4 requests, 5 too large,
--          6 tokens), requests, tokens, concurrent, day nano, month nano,
--          ms until the request would fit (-1: unknown), ms until the window is empty}.
local window = tonumber(ARGV[3])
while true do  -- the requests that left the window, 500 at a time (unpack's stack)
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window, 'LIMIT', 0, 500)
  if #old == 0 then break end
  local gone = 0
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(old))) do
    gone = gone + tonumber(v or '0')
  end
  redis.call('HINCRBY', KEYS[3], 'n', -#old)
  redis.call('HINCRBY', KEYS[3], 'tok', -gone)
  redis.call('HDEL', KEYS[2], unpack(old))
  redis.call('ZREM', KEYS[1], unpack(old))
  if #old < 500 then break end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local n, tok = hnum(KEYS[3], 'n'), hnum(KEYS[3], 'tok')
local live = redis.call('ZCARD', KEYS[4])
local day, month = hnum(KEYS[5], 'usd'), hnum(KEYS[6], 'usd')
local est = tonumber(ARGV[2])
local max_n, max_tok, max_live = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_day, max_month = tonumber(ARGV[8]), tonumber(ARGV[9])
local refusal, retry = 0, -1
if max_day >= 0 and day >= max_day then refusal = 1
elseif max_month >= 0 and month >= max_month then refusal = 2
elseif max_live >= 0 and live >= max_live then refusal = 3
elseif max_n >= 0 and n >= max_n then
  refusal = 4
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  if oldest then retry = tonumber(oldest) + window - now end
elseif max_tok >= 0 and est > max_tok then refusal = 5
elseif max_tok >= 0 and tok + est > max_tok then
  refusal = 6
  local entries = redis.call('ZRANGE', KEYS[1], 0, 999, 'WITHSCORES')
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + hnum(KEYS[2], entries[i])
    if tok - freed + est <= max_tok then
      retry = tonumber(entries[i + 1]) + window - now
      break
    end
  end
end
if refusal == 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], est)
  n = redis.call('HINCRBY', KEYS[3], 'n', 1)
  tok = redis.call('HINCRBY', KEYS[3], 'tok', est)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
  live = live + 1
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window) end
else
  for i = 5, 6 do
    redis.call('HINCRBY', KEYS[i], 'refused', 1)
    redis.call('EXPIRE', KEYS[i], ARGV[i + 5])
  end
end
redis.call('SET', KEYS[7], now, 'EX', ARGV[11])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
local reset = newest and (tonumber(newest) + window - now) or 0
return {refusal, n, tok, live, day, month, retry, reset}
""",
)

CHARGE_CLIENT = Script(
    "charge_client",
    _CLIENT_PRELUDE
    + """
-- A finished request's use: its tokens corrected in the window (while it is there), its
-- concurrency slot freed, its tokens and cost added to the day's and month's use. Counted
-- once per request id: a batch re-sent after a lost reply changes nothing.
-- KEYS[1..7] as ADMIT_CLIENT's   KEYS[8] charged (zset: id -> ms charged)
-- ARGV[1] request id   ARGV[2] tokens   ARGV[3] cost (nano-USD)   ARGV[4] day ttl (s)
-- ARGV[5] month ttl (s)   ARGV[6] how long a charge's id is remembered (ms)
-- Returns 1 when counted, 0 when the id was counted before.
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - tonumber(ARGV[6]))
if redis.call('ZADD', KEYS[8], 'NX', now, ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[8], ARGV[6])
redis.call('ZREM', KEYS[4], ARGV[1])
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'tok', tonumber(ARGV[2]) - tonumber(known))
end
for i = 5, 6 do
  redis.call('HINCRBY', KEYS[i], 'req', 1)
  redis.call('HINCRBY', KEYS[i], 'tok', ARGV[2])
  redis.call('HINCRBY', KEYS[i], 'usd', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[i - 1])
end
redis.call('SET', KEYS[7], now, 'EX', ARGV[5])
return 1
""",
)

CLIENT_USE = Script(
    "client_use",
    _CLIENT_PRELUDE
    + """
-- A client's use now, changing nothing (the admin API).
-- KEYS[1..7] as ADMIT_CLIENT's   ARGV[1] window (ms)
-- Returns {requests, tokens, concurrent in the window; the day's req, tok, usd, refused;
--          the month's req, tok, usd; last seen (ms, -1: never)}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf')
local tok = 0
for _, id in ipairs(ids) do tok = tok + hnum(KEYS[2], id) end
local live = redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf')
local seen = redis.call('GET', KEYS[7])
return {#ids, tok, live, hnum(KEYS[5], 'req'), hnum(KEYS[5], 'tok'), hnum(KEYS[5], 'usd'),
        hnum(KEYS[5], 'refused'), hnum(KEYS[6], 'req'), hnum(KEYS[6], 'tok'),
        hnum(KEYS[6], 'usd'), tonumber(seen or '-1')}
""",
)

SCRIPTS = (APPEND_SAMPLES, TOUCH_INDEX, READ_WINDOW, SPEND_BUDGET, ADMIT_CLIENT, CHARGE_CLIENT,
           CLIENT_USE)  # fmt: skip

# The commands this store sends, directly (redis_commands.py, redis_store.py) and from its
# scripts, for a least-privilege ACL user (docs/redis.md, "TLS and ACL"). The tests run the
# store as a user allowed exactly these, on one server, a Cluster and a Sentinel setup.
ACL_COMMANDS = (
    "ping", "evalsha", "script|load", "get", "set", "lrange", "lpush", "ltrim", "expire",
    "zrangebyscore", "hgetall",
    "zrange", "zadd", "zrem", "zremrangebyscore", "zremrangebyrank", "hget", "hset", "hdel",
    "hincrby", "pexpire", "time", "hmget", "zcard", "zcount",
)  # fmt: skip
ACL_CLUSTER_COMMANDS = ("cluster|slots", "command", "asking")  # redis-py's Cluster client
ACL_SENTINEL_COMMANDS = ("sentinel|masters",)  # on the Sentinels: finding the primary


def acl_rules(prefix: str, cluster: bool = False) -> str:
    """The `ACL SETUSER <user> on ><password>` rules for the data nodes: this prefix's keys,
    no channels, these commands only."""
    commands = ACL_COMMANDS + (ACL_CLUSTER_COMMANDS if cluster else ())
    return f"resetkeys ~{prefix}:* resetchannels -@all " + " ".join(f"+{c}" for c in commands)

//! Several nodes sharing rooms through Redis ([`Config::redis`](crate::Config::redis)).
//!
//! Redis holds what the nodes share, and each change is one Lua script, so it is atomic and
//! every node sees the same order:
//!
//! - `{prefix}members:{room}`: peer id → `{"sfu","user"}`, the room's members;
//! - `{prefix}at:{room}`: peer id → `node/connection` where it is attached, or the same with a
//!   leading `-` while it is parked (its connection dropped, within its grace period);
//! - `{prefix}tag:{room}`: peer id → the tag of its current resume token;
//! - `{prefix}seq:{room}`: peer id → the sequence number of the last frame sent to it;
//! - `{prefix}parked:{room}`: peer id → that number when it parked;
//! - `{prefix}inbox:{room}:{peer}`: a stream of the frames sent to the peer, entry `N-1` the
//!   N-th, trimmed to about [`Redis::backlog`](crate::config::Redis::backlog) entries;
//! - `{prefix}rooms`: the rooms with members, which every node reports as
//!   `politely_cluster_rooms`;
//! - `{prefix}taken:{room}`: peer id → how many text frames its connections took from it
//!   since its `welcome`, up to its last signal (a resumed `welcome` tells the client, which
//!   sends the rest again: what it wrote to a node that died).
//!
//! Everything a peer is sent after its `welcome` (a signal, `peer-joined`, `peer-left`) is
//! numbered and appended to its inbox in the same script that decides it, then published on
//! its node's channel `{prefix}node:{node}`. A peer's frames are therefore in one order,
//! whoever sent them and from whichever node: a `peer-joined` comes before any signal from the
//! new peer, and nothing from a peer follows its `peer-left` (a signal is only taken from a
//! member, from the connection it is attached with). A node delivers each peer's frames by
//! number: a duplicate is dropped, and a gap (a subscription that dropped and came back) is
//! filled from the inbox before the frame that showed it.

use crate::config::{Config, Redis};
use crate::hub::{Hub, Membership, Outbox, Overflow, Room, polite};
use crate::metrics::Metrics;
use crate::resume::{Claims, Tag};
use futures_util::StreamExt;
use politely_proto::{CloseCode, PeerInfo, ServerMessage, User};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// What every script starts with: the room's keys, and `deliver`, which numbers a frame for a
/// peer, appends it to the peer's inbox and publishes it to the peer's node (a parked peer's
/// too: its queue there holds what comes meanwhile, as on a single node). ARGV[1] is the
/// prefix, ARGV[2] the room, ARGV[3] the backlog, and the last the name of Redis's data the
/// node registered its peers in: if Redis's is another (it lost its data since), the script
/// answers the error `EPOCH` and changes nothing, and the node registers its peers again.
/// `young()` is whether Redis lost its data less than [`NODE_TIMEOUT`] ago: other nodes may
/// not have registered their peers yet, so a peer missing may only be missing for now.
const PRELUDE: &str = r"
local prefix, room, backlog = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', prefix .. 'epoch') ~= ARGV[#ARGV] then
  return redis.error_reply('EPOCH Redis lost its data since this node registered')
end
local function young()
  local now = redis.call('TIME')
  local lost = tonumber(redis.call('GET', prefix .. 'epoch-at') or '0')
  return now[1] * 1000 + math.floor(now[2] / 1000) - lost < NODE_TIMEOUT_MS
end
local members = prefix .. 'members:' .. room
local at = prefix .. 'at:' .. room
local tags = prefix .. 'tag:' .. room
local seqs = prefix .. 'seq:' .. room
local function inbox(peer) return prefix .. 'inbox:' .. room .. ':' .. peer end
local function node_of(where) return string.match(where, '^-?(.*)/[^/]*$') end
local function entry(id) return room .. '\n' .. id end
local function deliver(peer, frame)
  local seq = redis.call('HINCRBY', seqs, peer, 1)
  redis.call('XADD', inbox(peer), 'MAXLEN', '~', backlog, seq .. '-1', 'f', frame)
  local where = redis.call('HGET', at, peer)
  if where then
    redis.call('PUBLISH', prefix .. 'node:' .. node_of(where),
      'f\n' .. room .. '\n' .. peer .. '\n' .. seq .. '\n' .. frame)
  end
end
";

/// ARGV[4] the new id, [5] where it is attached, [6] its member record, [7] `1` for the SFU
/// role, [8] the room's size limit, [9] and [10] its `peer-joined` for a member polite and
/// impolite toward it, [11] its resume tag. Returns `{'full', {}}`, `{'sfu', {}}`,
/// `{'young', {}}` (try again shortly: the room may not be whole yet), or `{'ok', members}`
/// (the members before it, as HGETALL gives them).
const JOIN: &str = r"
local id, sfu = ARGV[4], ARGV[7] == '1'
if young() then return {'young', {}} end
local all = redis.call('HGETALL', members)
if #all / 2 >= tonumber(ARGV[8]) then return {'full', {}} end
if sfu then
  for i = 2, #all, 2 do
    if cjson.decode(all[i]).sfu then return {'sfu', {}} end
  end
end
for i = 1, #all, 2 do
  local peer, theirs = all[i], cjson.decode(all[i + 1]).sfu
  local is_polite
  if sfu and not theirs then is_polite = true
  elseif theirs and not sfu then is_polite = false
  else is_polite = peer < id end
  -- (Not to a place kept after a restart: its welcome will list the room as it is.)
  if redis.call('HEXISTS', tags, peer) == 1 then
    deliver(peer, is_polite and ARGV[9] or ARGV[10])
  end
end
redis.call('HSET', members, id, ARGV[6])
redis.call('HSET', at, id, ARGV[5])
redis.call('HSET', tags, id, ARGV[11])
redis.call('HSET', prefix .. 'taken:' .. room, id, 0)
redis.call('SADD', prefix .. 'rooms', room)
redis.call('SADD', prefix .. 'peers:' .. node_of(ARGV[5]), entry(id))
return {'ok', all}
";

/// ARGV[4] the sender, [5] where it is attached, [6] the target, [7] the frame, [8] how many
/// text frames the sender's connections took from it under its id, this one included.
/// Returns 1 if relayed, 0 if the target is no member, -1 if the sender is no longer attached
/// there, -2 if the target is no member for now (try again shortly).
const SIGNAL: &str = r"
if redis.call('HGET', at, ARGV[4]) ~= ARGV[5] then return -1 end
local taken = prefix .. 'taken:' .. room
if tonumber(redis.call('HGET', taken, ARGV[4]) or '0') < tonumber(ARGV[8]) then
  redis.call('HSET', taken, ARGV[4], ARGV[8])
end
if redis.call('HEXISTS', members, ARGV[6]) == 0 then
  if young() then return -2 end
  return 0
end
deliver(ARGV[6], ARGV[7])
return 1
";

/// ARGV[4] the peer, [5] where it must be (attached, or parked with the leading `-`), [6] its
/// `peer-left`. Removes it and tells the others; returns whether it was there.
const LEAVE: &str = r"
local id = ARGV[4]
if redis.call('HGET', at, id) ~= ARGV[5] then return 0 end
redis.call('SREM', prefix .. 'peers:' .. node_of(ARGV[5]), entry(id))
redis.call('ZREM', prefix .. 'expiring', entry(id) .. '\n' .. ARGV[5])
redis.call('HDEL', members, id)
redis.call('HDEL', at, id)
redis.call('HDEL', tags, id)
redis.call('HDEL', seqs, id)
redis.call('HDEL', prefix .. 'parked:' .. room, id)
redis.call('HDEL', prefix .. 'taken:' .. room, id)
redis.call('DEL', inbox(id))
if redis.call('HLEN', members) == 0 then redis.call('SREM', prefix .. 'rooms', room) end
for _, peer in ipairs(redis.call('HKEYS', members)) do
  if redis.call('HEXISTS', tags, peer) == 1 then deliver(peer, ARGV[6]) end
end
return 1
";

/// ARGV[4] the peer, [5] where it is attached, [6] the grace period in ms. Parks it, noting
/// the number of the last frame sent to it, and lists it in `expiring` until the grace period
/// ends (any node then removes it); returns whether it was there.
const PARK: &str = r"
if redis.call('HGET', at, ARGV[4]) ~= ARGV[5] then return 0 end
redis.call('HSET', at, ARGV[4], '-' .. ARGV[5])
redis.call('HSET', prefix .. 'parked:' .. room, ARGV[4], redis.call('HGET', seqs, ARGV[4]) or '0')
local now = redis.call('TIME')
local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[6])
redis.call('ZADD', prefix .. 'expiring', deadline, entry(ARGV[4]) .. '\n-' .. ARGV[5])
return 1
";

/// KEYS: none. ARGV[1] the prefix, [2] a node that stopped beating, [3] the grace period in
/// ms. Parks every peer still attached to that node, as if its connection had dropped (they
/// leave after the grace period unless they resume elsewhere), and forgets the node. Returns
/// how many it parked; none if the node beats again.
const REAP: &str = r"
local prefix, dead, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', prefix .. 'alive:' .. dead) == 1 then return 0 end
local now = redis.call('TIME')
local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + grace
local parked = 0
for _, item in ipairs(redis.call('SMEMBERS', prefix .. 'peers:' .. dead)) do
  local room, id = string.match(item, '^(.*)\n([^\n]*)$')
  local at = prefix .. 'at:' .. room
  local where = redis.call('HGET', at, id)
  if where and string.sub(where, 1, 1) ~= '-' and string.match(where, '^(.*)/[^/]*$') == dead then
    redis.call('HSET', at, id, '-' .. where)
    redis.call('HSET', prefix .. 'parked:' .. room, id,
      redis.call('HGET', prefix .. 'seq:' .. room, id) or '0')
    redis.call('ZADD', prefix .. 'expiring', deadline, item .. '\n-' .. where)
    parked = parked + 1
  end
end
redis.call('DEL', prefix .. 'peers:' .. dead)
redis.call('SREM', prefix .. 'nodes', dead)
return parked
";

/// ARGV[4] the peer, [5] the tag of the token it resumes with, [6] where it attaches now, [7]
/// its new tag, [8] `1` if the token is older than Redis's data (issued before the nodes all
/// restarted with Redis's data lost), [9] its member record from the token, [10] the room's
/// size limit, [11] and [12] its `peer-joined` for a member polite and impolite toward it,
/// [13] the grace period in ms, then up to the last: for each peer the client says it is
/// connected with, its id and its `peer-joined` for a member polite and impolite toward it.
///
/// The node it was attached to (if any) hears that it was taken over. Returns
/// `{'gone', ...}`, `{'young', ...}` (gone for now), `{'stale', ...}`,
/// `{'ok', members, n, last}`: frames after the n-th never reached the peer's old connection
/// (n is the number of the last when it parked, or of the last sent if it was still
/// attached), and `last` is the last frame's number; or `{'restored', members, n, last}` for
/// an old token: as on a restarted single server, the peer gets its place back (announced to
/// the room) and the peers it names get places kept for the grace period (announced to the
/// others; each leaves if it does not resume in time), or it takes a place kept for it. Its
/// frames are numbered anew then, so what it says it received does not count.
const RESUME: &str = r"
local id, old_token = ARGV[4], ARGV[8] == '1'
local record, limit = ARGV[9], tonumber(ARGV[10])
local old = redis.call('HGET', at, id)
-- Tells the members (but `id`, and places kept, whose welcomes will list the room as it is)
-- that `peer` is there.
local function announce(peer, sfu, polite_frame, impolite_frame)
  for _, member in ipairs(redis.call('HKEYS', members)) do
    if member ~= id and member ~= peer and redis.call('HEXISTS', tags, member) == 1 then
      local theirs = cjson.decode(redis.call('HGET', members, member)).sfu
      local is_polite
      if sfu and not theirs then is_polite = true
      elseif theirs and not sfu then is_polite = false
      else is_polite = member < peer end
      deliver(member, is_polite and polite_frame or impolite_frame)
    end
  end
end
local status = 'ok'
if not old then
  if young() then return {'young', {}, 0, 0, -1} end
  if not old_token then return {'gone', {}, 0, 0, -1} end
  local sfu = cjson.decode(record).sfu
  local all = redis.call('HGETALL', members)
  if #all / 2 >= limit then return {'gone', {}, 0, 0, -1} end
  if sfu then
    for i = 2, #all, 2 do
      if cjson.decode(all[i]).sfu then return {'gone', {}, 0, 0, -1} end
    end
  end
  announce(id, sfu, ARGV[11], ARGV[12])
  redis.call('HSET', members, id, record)
  redis.call('SADD', prefix .. 'rooms', room)
  redis.call('HSET', seqs, id, 0)
  local now = redis.call('TIME')
  local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[13])
  for i = 14, #ARGV - 3, 3 do
    local other = ARGV[i]
    if redis.call('HEXISTS', members, other) == 0 and redis.call('HLEN', members) < limit then
      announce(other, false, ARGV[i + 1], ARGV[i + 2])
      redis.call('HSET', members, other, '{}')
      redis.call('HSET', at, other, '-kept/0')
      redis.call('HSET', seqs, other, 0)
      redis.call('HSET', prefix .. 'parked:' .. room, other, 0)
      redis.call('ZADD', prefix .. 'expiring', deadline, entry(other) .. '\n-kept/0')
    end
  end
  old = '-kept/0'
  status = 'restored'
elseif not redis.call('HGET', tags, id) then
  -- A place kept for it after a restart: only an old token takes it, with its role.
  if not old_token then return {'stale', {}, 0, 0, -1} end
  -- It was announced with no role and no user; the token may have them.
  local mine = cjson.decode(record)
  redis.call('HSET', members, id, record)
  if mine.sfu or (mine.user ~= nil and mine.user ~= cjson.null) then
    announce(id, mine.sfu, ARGV[11], ARGV[12])
  end
  status = 'restored'
elseif redis.call('HGET', tags, id) ~= ARGV[5] then
  return {'stale', {}, 0, 0, -1}
end
redis.call('HSET', at, id, ARGV[6])
redis.call('HSET', tags, id, ARGV[7])
local from = redis.call('HGET', seqs, id) or '0'
if string.sub(old, 1, 1) == '-' then
  old = string.sub(old, 2)
  from = redis.call('HGET', prefix .. 'parked:' .. room, id) or from
end
redis.call('HDEL', prefix .. 'parked:' .. room, id)
redis.call('ZREM', prefix .. 'expiring', entry(id) .. '\n-' .. old)
redis.call('SREM', prefix .. 'peers:' .. node_of(old), entry(id))
redis.call('SADD', prefix .. 'peers:' .. node_of(ARGV[6]), entry(id))
if old ~= ARGV[6] then
  redis.call('PUBLISH', prefix .. 'node:' .. node_of(old),
    'x\n' .. room .. '\n' .. id .. '\n0\n' .. old)
end
-- What it sent before: how much of it was taken (-1: not known, Redis lost it or the place
-- is new).
local taken = -1
if status == 'ok' then
  taken = tonumber(redis.call('HGET', prefix .. 'taken:' .. room, id) or '-1')
end
return {status, redis.call('HGETALL', members), tonumber(from),
  tonumber(redis.call('HGET', seqs, id) or '0'), taken}
";

/// After Redis lost its data: ARGV[4] a peer this node had, [5] where (a leading `-` if
/// parked), [6] its record, [7] its tag, [8] the number of its last frame, [9] its grace
/// period in ms if parked. Registers it as it was.
const REGISTER: &str = r"
local id, where = ARGV[4], ARGV[5]
redis.call('HSET', members, id, ARGV[6])
redis.call('SADD', prefix .. 'rooms', room)
redis.call('HSET', at, id, where)
redis.call('HSET', tags, id, ARGV[7])
redis.call('HSET', seqs, id, ARGV[8])
redis.call('SADD', prefix .. 'peers:' .. node_of(where), entry(id))
if string.sub(where, 1, 1) == '-' then
  redis.call('HSET', prefix .. 'parked:' .. room, id, ARGV[8])
  local now = redis.call('TIME')
  local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[9])
  redis.call('ZADD', prefix .. 'expiring', deadline, entry(id) .. '\n' .. where)
end
";

/// A new peer id's parts: milliseconds and a count, both from Redis, so that ids sort in the
/// order any node gave them out (the lower id is polite: the first to join). The milliseconds
/// never go back, even if Redis's clock does.
const NEW_ID: &str = r"
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ms < last then ms = last end
redis.call('SET', KEYS[1], ms)
return {ms, redis.call('INCR', KEYS[2])}
";

/// KEYS[1] the name of Redis's data, KEYS[2] when it was found lost, KEYS[3] when it was
/// named. ARGV[1] a name for it, taken if there is none, ARGV[2] `1` if a node found it lost
/// (the first to say so notes when). Returns the name and when it was named.
const EPOCH: &str = r"
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('SET', KEYS[3], ms) end
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ms, 'NX') end
return {redis.call('GET', KEYS[1]), tonumber(redis.call('GET', KEYS[3]) or '0')}
";

/// How often a node says it is alive (and removes peers whose grace period ended).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a node may be silent before another parks its peers.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// A member as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Member {
    #[serde(default)]
    sfu: bool,
    #[serde(default)]
    user: Option<User>,
}

/// A peer attached to this node, or parked on it.
struct Local {
    outbox: Arc<Outbox>,
    /// The number of the next frame it is to be sent.
    next: u64,
    /// `node/connection`, as Redis has it while attached here.
    at: String,
    /// Its member record and the tag of its latest resume token, as Redis has them: what
    /// this node registers again if Redis loses its data.
    record: String,
    tag: String,
    /// Its connection dropped (Redis has `at` with a leading `-`).
    parked: bool,
}

type Key = (Arc<str>, Arc<str>);

/// The peers attached to this node or parked on it, and how many each room has here: the
/// node's `politely_rooms` counts the rooms with any.
#[derive(Default)]
struct Locals {
    peers: HashMap<Key, Local>,
    rooms: HashMap<Arc<str>, usize>,
    /// The hub's, once it started.
    metrics: Option<Arc<Metrics>>,
}

impl Locals {
    fn get(&self, key: &Key) -> Option<&Local> {
        self.peers.get(key)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Local> {
        self.peers.get_mut(key)
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Local)> {
        self.peers.iter()
    }

    fn insert(&mut self, key: Key, local: Local) {
        let room = key.0.clone();
        if self.peers.insert(key, local).is_none() {
            let count = self.rooms.entry(room).or_default();
            *count += 1;
            if *count == 1 {
                self.count_rooms(1);
            }
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Local> {
        let local = self.peers.remove(key)?;
        if let Some(count) = self.rooms.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.rooms.remove(&key.0);
                self.count_rooms(-1);
            }
        }
        Some(local)
    }

    fn count_rooms(&self, change: i64) {
        if let Some(metrics) = &self.metrics {
            metrics.rooms.fetch_add(change, Relaxed);
        }
    }
}

/// Why a join was refused.
pub(crate) enum Refusal {
    RoomFull,
    SfuTaken,
    /// Redis did not answer.
    Unavailable(String),
}

/// A client resuming with a verified token.
pub(crate) struct Returning<'a> {
    pub(crate) claims: &'a Claims,
    pub(crate) tag: &'a Tag,
    /// How many frames it says it received under its id.
    pub(crate) received: Option<u64>,
    /// The peers it says it is connected with.
    pub(crate) peers: &'a [Cow<'a, str>],
}

/// The result of relaying a signal.
pub(crate) enum Relayed {
    Sent,
    UnknownPeer,
    /// The sender is no longer a member attached here (removed, or resumed elsewhere).
    Gone,
    Unavailable(String),
}

pub(crate) struct Cluster {
    node: String,
    prefix: String,
    backlog: usize,
    client: redis::Client,
    redis: ConnectionManager,
    join: redis::Script,
    signal: redis::Script,
    leave: redis::Script,
    park: redis::Script,
    resume: redis::Script,
    new_id: redis::Script,
    reap: redis::Script,
    register: redis::Script,
    /// The name of Redis's data this node registered its peers in.
    epoch: Mutex<String>,
    /// When that data was named (ms since the Unix epoch, Redis's clock): a resume token
    /// issued before comes from before every node restarted with Redis's data lost.
    born: AtomicU64,
    /// Held while this node registers its peers again.
    registering: tokio::sync::Mutex<()>,
    /// Redis answered this node's last heartbeat.
    reachable: AtomicBool,
    locals: Mutex<Locals>,
    /// The hub, for its configuration, metrics and tasks.
    hub: Mutex<Weak<Hub>>,
}

impl Cluster {
    /// Connects to Redis and agrees on the resume key with the other nodes (the configured
    /// one, or a random one the first node stored). Returns the cluster and the key.
    pub(crate) async fn connect(
        settings: &Redis,
        configured_key: Option<&[u8]>,
    ) -> std::io::Result<(Arc<Cluster>, Vec<u8>)> {
        let io = |e: redis::RedisError| std::io::Error::other(format!("redis: {e}"));
        let client = redis::Client::open(settings.url.as_str()).map_err(io)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut redis = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(io)?;
        let key = match configured_key {
            Some(key) => key.to_vec(),
            None => {
                let mut fresh = [0u8; 32];
                crate::id::fill_random(&mut fresh);
                let name = format!("{}resume-key", settings.prefix);
                let _: bool = redis::cmd("SET")
                    .arg(&name)
                    .arg(&fresh[..])
                    .arg("NX")
                    .query_async::<Option<String>>(&mut redis)
                    .await
                    .map(|r| r.is_some())
                    .map_err(io)?;
                redis::cmd("GET")
                    .arg(&name)
                    .query_async::<Vec<u8>>(&mut redis)
                    .await
                    .map_err(io)?
            }
        };
        // A restarted process is another node: what its last run left attached is reaped.
        let mut random = [0u8; 4];
        crate::id::fill_random(&mut random);
        let run = hex(&random);
        // Redis's data as the nodes know it: the first node names it, and a node that finds
        // it gone (Redis lost its data) or renamed (another node found it gone) registers
        // its peers again.
        let (epoch, born) = Cluster::epoch(&mut redis, &settings.prefix, &run, false)
            .await
            .map_err(io)?;
        let node = match &settings.node {
            Some(name) => format!("{name}-{run}"),
            None => run,
        };
        let prelude = PRELUDE.replace("NODE_TIMEOUT_MS", &NODE_TIMEOUT.as_millis().to_string());
        let script = |body: &str| redis::Script::new(&format!("{prelude}{body}"));
        let cluster = Arc::new(Cluster {
            node,
            prefix: settings.prefix.clone(),
            backlog: settings.backlog,
            client,
            redis,
            join: script(JOIN),
            signal: script(SIGNAL),
            leave: script(LEAVE),
            park: script(PARK),
            resume: script(RESUME),
            new_id: redis::Script::new(NEW_ID),
            reap: redis::Script::new(REAP),
            register: script(REGISTER),
            epoch: Mutex::new(epoch),
            born: AtomicU64::new(born),
            registering: tokio::sync::Mutex::new(()),
            reachable: AtomicBool::new(true),
            locals: Mutex::new(Locals::default()),
            hub: Mutex::new(Weak::new()),
        });
        Ok((cluster, key))
    }

    /// Starts hearing this node's channel, for `hub`; returns once subscribed.
    pub(crate) async fn start(self: &Arc<Self>, hub: &Arc<Hub>) -> std::io::Result<()> {
        *self.lock_hub() = Arc::downgrade(hub);
        {
            let mut locals = self.lock();
            hub.metrics
                .rooms
                .fetch_add(locals.rooms.len() as i64, Relaxed);
            locals.metrics = Some(hub.metrics.clone());
        }
        let pubsub = self
            .subscribe()
            .await
            .map_err(|e| std::io::Error::other(format!("redis: {e}")))?;
        self.beat().await;
        let cluster = self.clone();
        let shutdown = hub.shutdown.clone();
        hub.tasks.spawn(async move {
            tokio::select! {
                () = cluster.listen(pubsub) => {}
                () = shutdown.cancelled() => {}
            }
        });
        let cluster = self.clone();
        let shutdown = hub.shutdown.clone();
        let grace = hub.config.resume_grace;
        hub.tasks.spawn(async move {
            tokio::select! {
                () = cluster.keep_alive(grace) => {}
                () = shutdown.cancelled() => {}
            }
        });
        Ok(())
    }

    /// The rooms with members on any node, as Redis counts them; `None` if it does not
    /// answer within half a second.
    pub(crate) async fn rooms(&self) -> Option<u64> {
        let mut redis = self.redis.clone();
        let mut scard = redis::cmd("SCARD");
        scard.arg(format!("{}rooms", self.prefix));
        tokio::time::timeout(
            Duration::from_millis(500),
            scard.query_async::<u64>(&mut redis),
        )
        .await
        .ok()?
        .ok()
    }

    /// Whether Redis answered this node's last heartbeat.
    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Relaxed)
    }

    /// One heartbeat: this node is alive for [`NODE_TIMEOUT`]. If Redis lost its data since
    /// the last (restarted without persistence), this node registers its peers again.
    async fn beat(&self) {
        let mut redis = self.redis.clone();
        let beat: redis::RedisResult<(Option<String>,)> = redis::pipe()
            .cmd("SET")
            .arg(format!("{}alive:{}", self.prefix, self.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_TIMEOUT.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(format!("{}nodes", self.prefix))
            .arg(&self.node)
            .ignore()
            .cmd("GET")
            .arg(format!("{}epoch", self.prefix))
            .query_async(&mut redis)
            .await;
        match &beat {
            Ok((current,)) => {
                if current.as_ref() != Some(&self.epoch_name()) {
                    self.ensure_registered().await;
                }
            }
            Err(e) => tracing::warn!(node = %self.node, "redis: heartbeat: {e}"),
        }
        self.reachable.store(beat.is_ok(), Relaxed);
    }

    /// The name of Redis's data: the one there, or `proposed` if there is none. `lost`: this
    /// node found the data lost (the first to say so starts the window of `young()`).
    async fn epoch(
        redis: &mut ConnectionManager,
        prefix: &str,
        proposed: &str,
        lost: bool,
    ) -> redis::RedisResult<(String, u64)> {
        redis::Script::new(EPOCH)
            .key(format!("{prefix}epoch"))
            .key(format!("{prefix}epoch-at"))
            .key(format!("{prefix}epoch-born"))
            .arg(proposed)
            .arg(if lost { "1" } else { "0" })
            .invoke_async(redis)
            .await
    }

    fn epoch_name(&self) -> String {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Registers this node's peers again unless Redis's data is the one they are in (another
    /// task of this node may have just done it).
    async fn ensure_registered(&self) {
        let _one = self.registering.lock().await;
        let current: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(format!("{}epoch", self.prefix))
            .query_async(&mut self.redis.clone())
            .await;
        match current {
            Ok(Some(current)) if current == self.epoch_name() => {}
            Ok(_) => self.register_again().await,
            Err(e) => tracing::warn!("redis: register again: {e}"),
        }
    }

    /// Runs `script` with the prefix, the arguments `args` adds, and the name of Redis's data.
    /// If Redis lost its data since this node registered its peers, registers them again and
    /// runs it once more. A script that answers `young` (a member may be missing for now) is
    /// run again every 50 ms until it answers otherwise (the window lasts [`NODE_TIMEOUT`]).
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        args: impl Fn(&mut redis::ScriptInvocation<'_>),
        young: impl Fn(&T) -> bool,
    ) -> redis::RedisResult<T> {
        let mut registered = false;
        let deadline = tokio::time::Instant::now() + NODE_TIMEOUT + HEARTBEAT;
        loop {
            let mut invocation = script.prepare_invoke();
            invocation.arg(&self.prefix);
            args(&mut invocation);
            invocation.arg(self.epoch_name());
            let started = std::time::Instant::now();
            let reply = invocation.invoke_async(&mut self.redis.clone()).await;
            self.timed(started, &reply);
            match reply {
                Err(e) if !registered && e.code() == Some("EPOCH") => {
                    registered = true;
                    self.ensure_registered().await;
                }
                Ok(reply) if young(&reply) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                reply => return reply,
            }
        }
    }

    /// Redis lost its data: the resume key the nodes share, and this node's peers as they
    /// were (the others never saw them leave, so nobody is told anything). Their frames are
    /// numbered on from where they were; what was in their inboxes is gone.
    async fn register_again(&self) {
        let Some(hub) = self.hub() else { return };
        let mut redis = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{}resume-key", self.prefix))
            .arg(hub.resume_key())
            .arg("NX")
            .query_async(&mut redis)
            .await;
        let mut random = [0u8; 4];
        crate::id::fill_random(&mut random);
        match Cluster::epoch(&mut redis, &self.prefix, &hex(&random), true).await {
            Ok((epoch, born)) => {
                *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = epoch;
                self.born.store(born, Relaxed);
            }
            Err(e) => {
                tracing::warn!("redis: register again: {e}");
                return;
            }
        }
        let peers: Vec<(Key, String, String, String, bool, u64)> = self
            .lock()
            .iter()
            .map(|(key, l)| {
                let at = if l.parked {
                    format!("-{}", l.at)
                } else {
                    l.at.clone()
                };
                (
                    key.clone(),
                    at,
                    l.record.clone(),
                    l.tag.clone(),
                    l.parked,
                    l.next - 1,
                )
            })
            .collect();
        hub.metrics.cluster_registered_again.fetch_add(1, Relaxed);
        let grace = hub.config.resume_grace.as_millis() as u64;
        for ((room, id), at, record, tag, parked, seq) in &peers {
            let done: redis::RedisResult<()> = self
                .register
                .arg(&self.prefix)
                .arg(&**room)
                .arg(self.backlog)
                .arg(&**id)
                .arg(at)
                .arg(record)
                .arg(tag)
                .arg(*seq)
                .arg(if *parked { grace } else { 0 })
                .arg(self.epoch_name())
                .invoke_async(&mut redis)
                .await;
            if let Err(e) = done {
                tracing::warn!("redis: register again: {e}");
            }
        }
        tracing::warn!(node = %self.node, peers = peers.len(), "redis had lost its data; registered this node's peers again");
    }

    /// Every [`HEARTBEAT`]: a heartbeat, the peers of nodes whose heartbeat expired parked, and
    /// parked peers whose grace period ended removed. Nothing is reaped until Redis has
    /// answered this node promptly for [`NODE_TIMEOUT`]: after Redis paused, every node's
    /// heartbeat may have expired, and each gets that long to beat again.
    async fn keep_alive(self: Arc<Self>, grace: Duration) {
        let mut steady_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = tokio::time::Instant::now();
            self.beat().await;
            if !self.reachable() || started.elapsed() > HEARTBEAT {
                steady_since = None;
                continue;
            }
            let steady = *steady_since.get_or_insert(started);
            if steady.elapsed() >= NODE_TIMEOUT {
                self.reap(grace).await;
            }
            self.expire().await;
        }
    }

    /// Parks the peers of nodes whose heartbeat expired.
    async fn reap(&self, grace: Duration) {
        let mut redis = self.redis.clone();
        let nodes: Vec<String> = match redis::cmd("SMEMBERS")
            .arg(format!("{}nodes", self.prefix))
            .query_async(&mut redis)
            .await
        {
            Ok(nodes) => nodes,
            Err(_) => return,
        };
        for node in nodes.into_iter().filter(|n| *n != self.node) {
            // The script checks the heartbeat itself, atomically with the parking.
            let parked: redis::RedisResult<u64> = self
                .reap
                .arg(&self.prefix)
                .arg(&node)
                .arg(grace.as_millis() as u64)
                .invoke_async(&mut redis)
                .await;
            match parked {
                Ok(0) => {}
                Ok(n) => {
                    if let Some(hub) = self.hub() {
                        hub.metrics.cluster_reaped.fetch_add(n, Relaxed);
                    }
                    tracing::warn!(node = %self.node, dead = %node, parked = n, "reaped a silent node");
                }
                Err(e) => tracing::warn!("redis: reap: {e}"),
            }
        }
    }

    /// Removes the parked peers whose grace period ended (on any node: the first to get
    /// there does it, once).
    async fn expire(&self) {
        let mut redis = self.redis.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let key = format!("{}expiring", self.prefix);
        let due: Vec<String> = match redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut redis)
            .await
        {
            Ok(due) => due,
            Err(_) => return,
        };
        for item in due {
            let mut parts = item.splitn(3, '\n');
            let (Some(room), Some(id), Some(parked)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if self.remove(room, id, parked).await {
                if let Some(hub) = self.hub() {
                    hub.metrics.grace_expired.fetch_add(1, Relaxed);
                }
                self.forget(room, id, parked.trim_start_matches('-'));
            }
            let _: redis::RedisResult<()> = redis::cmd("ZREM")
                .arg(&key)
                .arg(&item)
                .query_async(&mut redis)
                .await;
        }
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    fn channel(&self) -> String {
        format!("{}node:{}", self.prefix, self.node)
    }

    fn lock(&self) -> MutexGuard<'_, Locals> {
        // Every update is a single insert, remove or field store.
        self.locals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_hub(&self) -> MutexGuard<'_, Weak<Hub>> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.lock_hub().upgrade()
    }

    async fn subscribe(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel()).await?;
        Ok(pubsub)
    }

    /// Delivers what this node's channel brings, resubscribing whenever the subscription
    /// drops (Redis restarted, the connection broke) and then filling each local peer's gap
    /// from its inbox.
    async fn listen(self: Arc<Self>, first: redis::aio::PubSub) {
        let mut pubsub = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(subscribed) = pubsub.take() {
                backoff = Duration::from_millis(50);
                let mut messages = subscribed.into_on_message();
                while let Some(message) = messages.next().await {
                    self.on_message(message.get_payload_bytes()).await;
                }
                tracing::warn!(node = %self.node, "redis subscription lost; resubscribing");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            match self.subscribe().await {
                Ok(subscribed) => {
                    pubsub = Some(subscribed);
                    self.catch_up().await;
                }
                Err(e) => tracing::debug!(node = %self.node, "redis: {e}"),
            }
        }
    }

    /// One message of this node's channel: `f` (a frame for a local peer) or `x` (a local
    /// peer was taken over by a connection elsewhere).
    async fn on_message(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut parts = text.splitn(5, '\n');
        let (Some(kind), Some(room), Some(peer), Some(seq), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        let key: Key = (room.into(), peer.into());
        match kind {
            "f" => {
                let Ok(seq) = seq.parse::<u64>() else { return };
                let next = match self.lock().get(&key) {
                    Some(local) => local.next,
                    None => return,
                };
                if seq > next {
                    // Frames went by unheard: fetch them first.
                    let missing = self.inbox(room, peer, next, Some(seq - 1)).await;
                    if let Some(hub) = self.hub() {
                        let n = missing.len() as u64;
                        hub.metrics.cluster_gap_frames.fetch_add(n, Relaxed);
                    }
                    self.deliver(&key, missing);
                }
                if let Some(hub) = self.hub() {
                    hub.metrics.cluster_delivered.fetch_add(1, Relaxed);
                }
                self.deliver(&key, vec![(seq, rest.to_owned())]);
            }
            "x" => {
                let mut locals = self.lock();
                if locals.get(&key).is_some_and(|local| local.at == rest) {
                    let local = locals.remove(&key).expect("the entry found above");
                    drop(locals);
                    local.outbox.close(CloseCode::Replaced);
                    self.gone();
                }
            }
            _ => {}
        }
    }

    /// Queues numbered frames for a local peer, in order, skipping any it had.
    fn deliver(&self, key: &Key, frames: Vec<(u64, String)>) {
        let mut locals = self.lock();
        let Some(local) = locals.get_mut(key) else {
            return;
        };
        let mut overflowed = false;
        for (seq, frame) in frames {
            if seq < local.next {
                if let Some(hub) = self.hub() {
                    hub.metrics.cluster_duplicates.fetch_add(1, Relaxed);
                }
                continue;
            }
            local.next = seq + 1;
            if let Err(Overflow) = local.outbox.push([frame.as_bytes()]) {
                overflowed = true;
                break;
            }
        }
        if overflowed {
            let local = locals.remove(key).expect("the entry found above");
            drop(locals);
            local.outbox.close(CloseCode::SlowConsumer);
            self.gone();
            if let Some(hub) = self.hub() {
                hub.metrics.queue_dropped_frames.fetch_add(1, Relaxed);
                let cluster = hub.cluster.clone().expect("a cluster node's hub");
                let (room, id) = key.clone();
                hub.tasks.spawn(async move {
                    let _ = cluster.remove(&room, &id, &local.at).await;
                });
            }
        }
    }

    /// After a resubscription: every local peer's frames published meanwhile, from its inbox.
    async fn catch_up(&self) {
        let wanted: Vec<(Key, u64)> = self
            .lock()
            .iter()
            .map(|(key, local)| (key.clone(), local.next))
            .collect();
        for (key, next) in wanted {
            let frames = self.inbox(&key.0, &key.1, next, None).await;
            if let Some(hub) = self.hub() {
                let n = frames.len() as u64;
                hub.metrics.cluster_gap_frames.fetch_add(n, Relaxed);
            }
            self.deliver(&key, frames);
        }
    }

    /// The frames numbered `from` to `to` (or the last) in a peer's inbox.
    async fn inbox(
        &self,
        room: &str,
        peer: &str,
        from: u64,
        to: Option<u64>,
    ) -> Vec<(u64, String)> {
        let stream = format!("{}inbox:{room}:{peer}", self.prefix);
        let end = to.map_or_else(|| "+".to_owned(), |to| format!("{to}-1"));
        let started = std::time::Instant::now();
        let reply: redis::RedisResult<redis::streams::StreamRangeReply> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(format!("{from}-1"))
            .arg(end)
            .query_async(&mut self.redis.clone())
            .await;
        self.timed(started, &reply);
        let Ok(reply) = reply else {
            return Vec::new();
        };
        reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let seq = entry.id.split('-').next()?.parse().ok()?;
                let frame: String = entry.get("f")?;
                Some((seq, frame))
            })
            .collect()
    }

    /// A local peer is no longer here.
    fn gone(&self) {
        if let Some(hub) = self.hub() {
            hub.metrics.peers.fetch_sub(1, Relaxed);
        }
    }

    /// A new peer id (a ULID, as one node gives), from Redis's clock and counter.
    async fn next_id(&self) -> redis::RedisResult<String> {
        let (ms, count): (u64, u64) = self
            .new_id
            .key(format!("{}id-ms", self.prefix))
            .key(format!("{}id-count", self.prefix))
            .invoke_async(&mut self.redis.clone())
            .await?;
        let mut random = [0u8; 8];
        crate::id::fill_random(&mut random[3..]);
        let value = (u128::from(ms & ((1 << 48) - 1)) << 80)
            | (u128::from(count & ((1 << 40) - 1)) << 40)
            | u128::from(u64::from_be_bytes(random));
        Ok(crate::id::encode(value))
    }

    /// Counts a call to Redis that took from `started` until now, and whether it failed.
    fn timed<T>(&self, started: std::time::Instant, result: &redis::RedisResult<T>) {
        if let Some(hub) = self.hub() {
            let metrics = &hub.metrics;
            metrics.redis_calls.fetch_add(1, Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            metrics.redis_micros.fetch_add(micros, Relaxed);
            if result.is_err() {
                metrics.redis_errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn at(&self, connection: u64) -> String {
        format!("{}/{connection}", self.node)
    }

    /// Joins `room` as a new peer: its place in Redis, `peer-joined` to every member on every
    /// node, and its `welcome` first in its queue.
    pub(crate) async fn join(
        &self,
        hub: &Hub,
        room_name: &str,
        connection: u64,
        waker: Arc<Notify>,
        user: Option<User>,
        sfu: bool,
    ) -> Result<Membership, Refusal> {
        let id: Arc<str> = self
            .next_id()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .into();
        let room: Arc<str> = room_name.into();
        let key: Key = (room.clone(), id.clone());
        let at = self.at(connection);
        let outbox = Arc::new(Outbox::new(
            &hub.config,
            hub.metrics.clone(),
            connection,
            waker.clone(),
        ));
        let (token, tag) = hub.issue(room_name, &id, sfu, user.clone());
        let record = serde_json::to_string(&Member {
            sfu,
            user: user.clone(),
        })
        .expect("a member serializes");
        // Known here before Redis can number a frame for it.
        self.lock().insert(
            key.clone(),
            Local {
                outbox: outbox.clone(),
                next: 1,
                at: at.clone(),
                record: record.clone(),
                tag: hex(&tag),
                parked: false,
            },
        );
        let joined = |polite: bool| {
            ServerMessage::PeerJoined {
                id: Cow::Borrowed(&id),
                polite,
                sfu,
                user: user.clone(),
            }
            .to_json()
        };
        let (polite, impolite, tag_hex) = (joined(true), joined(false), hex(&tag));
        let reply: redis::RedisResult<(String, Vec<String>)> = self
            .run(
                &self.join,
                |call| {
                    call.arg(room_name)
                        .arg(self.backlog)
                        .arg(&*id)
                        .arg(&at)
                        .arg(&record)
                        .arg(if sfu { "1" } else { "0" })
                        .arg(hub.config.max_room_size)
                        .arg(&polite)
                        .arg(&impolite)
                        .arg(&tag_hex);
                },
                |(status, _)| status == "young",
            )
            .await;
        let refused = match &reply {
            Ok((status, _)) if status == "ok" => None,
            Ok((status, _)) if status == "sfu" => Some(Refusal::SfuTaken),
            Ok((status, _)) if status == "young" => Some(Refusal::Unavailable(
                "Redis lost its data and the nodes are registering their peers again".into(),
            )),
            Ok(_) => Some(Refusal::RoomFull),
            Err(e) => Some(Refusal::Unavailable(e.to_string())),
        };
        if let Some(refused) = refused {
            self.lock().remove(&key);
            return Err(refused);
        }
        let (_, members) = reply.expect("checked above");
        let welcome = welcome(hub, &id, sfu, room_name, &members, &token, (false, None));
        outbox.welcome_first(&welcome, connection, waker);
        hub.metrics.peers.fetch_add(1, Relaxed);
        tracing::debug!(room = %room_name, %id, node = %self.node, "joined");
        Ok(Membership {
            room: Room::detached(room),
            id,
            outbox,
            connection,
            taken: 0,
        })
    }

    /// Resumes the id of `token` (checked by the caller) on this node: on the queue this node
    /// kept for it, or a new one if it was attached elsewhere. `None` if the peer is no longer
    /// in the room or the token is not its latest; an error if Redis does not answer (or
    /// lost its data and may not have the peer yet), for the client to try again.
    pub(crate) async fn resume(
        &self,
        hub: &Hub,
        returning: Returning<'_>,
        connection: u64,
        waker: Arc<Notify>,
    ) -> Result<Option<Membership>, String> {
        let Returning {
            claims,
            tag,
            received,
            peers: claimed,
        } = returning;
        let (room_name, sfu) = (claims.room.as_str(), claims.sfu);
        let id: Arc<str> = claims.id.as_str().into();
        let room: Arc<str> = room_name.into();
        let key: Key = (room.clone(), id.clone());
        let at = self.at(connection);
        let (token, new_tag) = hub.issue(room_name, &id, sfu, claims.user.clone());
        let (old_tag, new_tag_hex) = (hex(tag), hex(&new_tag));
        // A token from before Redis's data (every node restarted and Redis lost its data):
        // as on a restarted single server, not older than the configured age.
        let max_age = u64::try_from(hub.config.resume_max_age.as_millis()).unwrap_or(u64::MAX);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let old_token =
            claims.iat < self.born.load(Relaxed) && now.saturating_sub(claims.iat) <= max_age;
        let record = serde_json::to_string(&Member {
            sfu,
            user: claims.user.clone(),
        })
        .expect("a member serializes");
        let joined = |peer: &str, sfu: bool, user: Option<User>, polite: bool| {
            ServerMessage::PeerJoined {
                id: Cow::Borrowed(peer),
                polite,
                sfu,
                user,
            }
            .to_json()
        };
        let mine = (
            joined(&id, sfu, claims.user.clone(), true),
            joined(&id, sfu, claims.user.clone(), false),
        );
        let kept: Vec<(&str, String, String)> = claimed
            .iter()
            .filter(|peer| old_token && crate::id::is_valid(peer) && ***peer != *id)
            .map(|peer| {
                let (polite, impolite) = (
                    joined(peer, false, None, true),
                    joined(peer, false, None, false),
                );
                (&**peer, polite, impolite)
            })
            .collect();
        let grace = hub.config.resume_grace.as_millis() as u64;
        let reply: redis::RedisResult<(String, Vec<String>, u64, u64, i64)> = self
            .run(
                &self.resume,
                |call| {
                    call.arg(room_name)
                        .arg(self.backlog)
                        .arg(&*id)
                        .arg(&old_tag)
                        .arg(&at)
                        .arg(&new_tag_hex)
                        .arg(if old_token { "1" } else { "0" })
                        .arg(&record)
                        .arg(hub.config.max_room_size)
                        .arg(&mine.0)
                        .arg(&mine.1)
                        .arg(grace);
                    for (peer, polite, impolite) in &kept {
                        call.arg(*peer).arg(polite).arg(impolite);
                    }
                },
                |(status, ..): &(String, Vec<String>, u64, u64, i64)| status == "young",
            )
            .await;
        let (members, from, last, restored, taken) = match reply {
            Ok((status, members, from, last, taken)) if status == "ok" => {
                (members, from, last, false, u64::try_from(taken).ok())
            }
            Ok((status, members, from, last, _)) if status == "restored" => {
                (members, from, last, true, None)
            }
            Ok((status, ..)) if status == "young" => {
                return Err("Redis lost its data and the nodes are registering their peers".into());
            }
            Ok(_) => return Ok(None),
            Err(e) => {
                tracing::warn!("redis: resume: {e}");
                return Err(e.to_string());
            }
        };
        // What the client says it has is what counts: the rest comes from its inbox (a queue
        // here may hold frames already written to the old connection, or miss some). A
        // restored place numbers its frames anew: what the client counted was before.
        let received = received.filter(|_| !restored);
        let from = received.map_or(from, |received| received.min(last));
        let (outbox, moved) = {
            let mut locals = self.lock();
            match locals.get_mut(&key) {
                // Its queue here kept what came meanwhile.
                Some(local) if received.is_none() => {
                    local.at = at;
                    local.tag = hex(&new_tag);
                    local.parked = false;
                    (local.outbox.clone(), false)
                }
                Some(local) => {
                    local.at = at;
                    local.tag = hex(&new_tag);
                    local.parked = false;
                    local.next = from + 1;
                    local.outbox.clear();
                    (local.outbox.clone(), true)
                }
                None => {
                    // It was on another node: the frames since it parked come from its inbox
                    // (what that node had queued but not written when the connection dropped
                    // is lost), and from here on its frames come to this node.
                    let outbox = Arc::new(Outbox::new(
                        &hub.config,
                        hub.metrics.clone(),
                        connection,
                        waker.clone(),
                    ));
                    locals.insert(
                        key.clone(),
                        Local {
                            outbox: outbox.clone(),
                            next: from + 1,
                            at,
                            record: serde_json::to_string(&Member {
                                sfu,
                                user: claims.user.clone(),
                            })
                            .expect("a member serializes"),
                            tag: hex(&new_tag),
                            parked: false,
                        },
                    );
                    hub.metrics.peers.fetch_add(1, Relaxed);
                    (outbox, true)
                }
            }
        };
        let welcome = welcome(hub, &id, sfu, room_name, &members, &token, (true, taken));
        outbox.welcome_first(&welcome, connection, waker);
        if moved {
            let missed = self.inbox(room_name, &id, from + 1, None).await;
            self.deliver(&key, missed);
        }
        hub.metrics.resumes.fetch_add(1, Relaxed);
        tracing::debug!(room = %room_name, %id, node = %self.node, "resumed");
        Ok(Some(Membership {
            room: Room::detached(room),
            id,
            outbox,
            connection,
            taken: taken.unwrap_or(0),
        }))
    }

    /// Relays `frame` from `from` to `to`, a member of the same room on any node. `from`'s
    /// connection has taken `taken` text frames from it under its id (this one included).
    pub(crate) async fn relay(
        &self,
        from: &Membership,
        to: &str,
        frame: &[u8],
        taken: u64,
    ) -> Relayed {
        if to == &*from.id {
            return Relayed::UnknownPeer;
        }
        let at = self.at(from.connection);
        let reply: redis::RedisResult<i64> = self
            .run(
                &self.signal,
                |call| {
                    call.arg(from.room.name())
                        .arg(self.backlog)
                        .arg(&*from.id)
                        .arg(&at)
                        .arg(to)
                        .arg(frame)
                        .arg(taken);
                },
                |status| *status == -2,
            )
            .await;
        match reply {
            Ok(1) => Relayed::Sent,
            Ok(0 | -2) => Relayed::UnknownPeer,
            Ok(_) => Relayed::Gone,
            Err(e) => Relayed::Unavailable(e.to_string()),
        }
    }

    /// The peer left for good: the others hear `peer-left` now.
    pub(crate) async fn leave(&self, member: &Membership) {
        let at = self.at(member.connection);
        if self.remove(member.room.name(), &member.id, &at).await {
            self.forget(member.room.name(), &member.id, &at);
        }
    }

    /// The connection dropped: the peer keeps its place for the grace period.
    pub(crate) async fn park(&self, hub: &Hub, member: &Membership) {
        let at = self.at(member.connection);
        let grace = hub.config.resume_grace.as_millis() as u64;
        let reply: redis::RedisResult<i64> = self
            .run(
                &self.park,
                |call| {
                    call.arg(member.room.name())
                        .arg(self.backlog)
                        .arg(&*member.id)
                        .arg(&at)
                        .arg(grace);
                },
                |_| false,
            )
            .await;
        match reply {
            Ok(1) => {
                let key: Key = (member.room.name().into(), member.id.clone());
                if let Some(local) = self.lock().get_mut(&key).filter(|l| l.at == at) {
                    local.parked = true;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("redis: park: {e}"),
        }
    }

    /// Removes `id` from `room` if it is still where `at` says, telling the others.
    async fn remove(&self, room: &str, id: &str, at: &str) -> bool {
        let left = ServerMessage::PeerLeft {
            id: Cow::Borrowed(id),
        }
        .to_json();
        let reply: redis::RedisResult<i64> = self
            .run(
                &self.leave,
                |call| {
                    call.arg(room).arg(self.backlog).arg(id).arg(at).arg(&left);
                },
                |_| false,
            )
            .await;
        match reply {
            Ok(removed) => removed == 1,
            Err(e) => {
                tracing::warn!(%room, %id, "redis: leave: {e}");
                false
            }
        }
    }

    /// Drops the local queue of a peer removed from Redis, unless another connection of this
    /// node has it by now.
    fn forget(&self, room: &str, id: &str, at: &str) {
        let key: Key = (room.into(), id.into());
        let mut locals = self.lock();
        if locals.get(&key).is_some_and(|local| local.at == at) {
            locals.remove(&key);
            drop(locals);
            self.gone();
        }
    }
}

/// A `welcome` for `id` listing `members` (HGETALL order: id, record, ...), in id order.
fn welcome(
    hub: &Hub,
    id: &str,
    sfu: bool,
    room: &str,
    members: &[String],
    token: &str,
    (resumed, taken): (bool, Option<u64>),
) -> String {
    let mut peers: Vec<PeerInfo<'_>> = members
        .chunks_exact(2)
        .filter(|pair| pair[0] != id)
        .map(|pair| {
            let member: Member = serde_json::from_str(&pair[1]).unwrap_or(Member {
                sfu: false,
                user: None,
            });
            PeerInfo {
                id: Cow::Borrowed(pair[0].as_str()),
                polite: polite(id, sfu, &pair[0], member.sfu),
                sfu: member.sfu,
                user: member.user,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    let (ice_servers, ice_ttl) = crate::hub::ice_servers(&hub.config, id);
    ServerMessage::Welcome {
        id: Cow::Borrowed(id),
        room: Cow::Borrowed(room),
        peers,
        resume: token.into(),
        resumed,
        taken,
        version: politely_proto::VERSION,
        ice_servers,
        ice_ttl,
    }
    .to_json()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a cluster's settings can work: a node name may not hold the separator.
pub(crate) fn check(config: &Config) -> Result<(), String> {
    if let Some(redis) = &config.redis
        && redis
            .node
            .as_deref()
            .is_some_and(|n| n.contains(['/', '\n']) || n.is_empty())
    {
        return Err("a node name is not empty and has no '/' or newline".into());
    }
    Ok(())
}

//! The shared outbox on Redis Streams, for a cluster of pods.
//!
//! Events are spread over [`PARTITIONS`] streams by their ordering key
//! (the message id), so the events of one message share a stream. Each
//! stream has one consumer group and, at any time, one owner: a pod holds
//! a partition by a lease key renewed with its heartbeat, and only the
//! owner reads it (`XREADGROUP`), so the events of a message go out from
//! one pod, in order. Pods take at most their share of the partitions
//! (the partitions over the live pods, rounded up). When a pod dies its
//! leases lapse; another pod takes the partitions and, first, claims every
//! entry the dead one had read but not acknowledged (`XAUTOCLAIM` from
//! idle 0: the lease makes it the only reader), so nothing is lost. A pod
//! restarted under the same name finds its leases still its own, and
//! searches them the same way at its first renewal.
//! Acknowledged entries are removed (`XACK` + `XDEL`).
//!
//! Every key carries the hash tag `{<prefix>:outbox}`: one slot, so an
//! append (the partition stream and the app's pull log) is one `MULTI` on
//! Redis Cluster too.
//!
//! Appends are written by one writer task, in batches: what callers append
//! while a write is under way goes out in the next, as one `MULTI` of
//! their `XADD`s and one `PEXPIRE` per pull log, so a busy gateway spends
//! about two commands an event instead of five (BENCHMARKS.md, session
//! 16). An append returns once its batch is written; one that returned
//! before another began is written before it.

use crate::{BoundedConnection, RedisConfig};
use redis::aio::ConnectionManager;
use smsgw_core::outbox::{Claimed, Logged, Outbox, OutboxError, OutboxEvent};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Partitions (streams) of the outbox.
pub const PARTITIONS: usize = 16;

/// Appends waiting for the writer at most; an append waits for room
/// beyond that.
const APPEND_QUEUE: usize = 1_024;

/// Events one write takes at most.
const BATCH_EVENTS: usize = 512;

/// How long a partition stays with a pod that stopped renewing it.
const LEASE: Duration = Duration::from_secs(15);

/// Consumer group of every partition.
const GROUP: &str = "deliver";

fn backend(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Backend(e.to_string())
}

/// Renews this pod's leases and takes free partitions up to its share.
/// KEYS[1] = live pods (sorted set, score = expiry ms), KEYS[2..] = the
/// partitions' lease keys. ARGV = consumer, now ms, lease ms. Returns the
/// partitions held, then -1, then those newly taken.
const OWN: &str = r"
local me, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local alive = redis.call('ZCARD', KEYS[1])
local parts = #KEYS - 1
local share = math.ceil(parts / math.max(alive, 1))
local held, fresh = {}, {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == me then
    redis.call('PEXPIRE', KEYS[i], lease)
    held[#held + 1] = i - 2
  end
end
for i = 2, #KEYS do
  if #held >= share then break end
  if redis.call('SET', KEYS[i], me, 'NX', 'PX', lease) then
    held[#held + 1] = i - 2
    fresh[#fresh + 1] = i - 2
  end
end
local out = {}
for _, p in ipairs(held) do out[#out + 1] = p end
out[#out + 1] = -1
for _, p in ipairs(fresh) do out[#out + 1] = p end
return out
";

/// Gives up this pod's leases (a clean stop). KEYS = lease keys, ARGV[1] =
/// consumer.
const RELEASE: &str = r"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
";

/// Partitions held, and when the leases were last renewed.
#[derive(Default)]
struct Held {
    parts: Vec<usize>,
    /// Taken but not yet searched for a dead owner's entries.
    fresh: Vec<usize>,
    renewed: Option<Instant>,
    /// This process has searched what it held at its first renewal. A pod
    /// restarted under the same name (a container restart keeps the pod's
    /// name) still holds its leases, so they are not new to the lease
    /// script, but what its previous process read and did not acknowledge
    /// is only in the stream's pending list: searched like a dead owner's.
    started: bool,
}

/// An event ready to write: its partition, JSON, app and body.
struct Ready {
    partition: usize,
    raw: Vec<u8>,
    app_id: String,
    body: String,
}

/// One append waiting for the writer, and where it is answered.
struct Append {
    events: Vec<Ready>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// What the writer task needs of the outbox.
struct Writer {
    conn: BoundedConnection,
    tag: String,
    retention: Duration,
}

impl Writer {
    /// Writes batches of what callers appended until every sender is
    /// gone (the outbox dropped).
    async fn run(self, mut queue: tokio::sync::mpsc::Receiver<Append>) {
        while let Some(first) = queue.recv().await {
            let mut n = first.events.len();
            let mut batch = vec![first];
            while n < BATCH_EVENTS {
                let Ok(more) = queue.try_recv() else { break };
                n += more.events.len();
                batch.push(more);
            }
            let result = self.write(&batch).await;
            for a in batch {
                let _ = a.done.send(result.clone()); // a caller that gave up
            }
        }
    }

    /// One `MULTI`: every event to its partition and its app's pull log,
    /// then each pull log's expiry once.
    async fn write(&self, batch: &[Append]) -> Result<(), String> {
        let retention = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let min_id = smsgw_core::messages::unix_now_ms().saturating_sub(retention);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut logs: Vec<&str> = Vec::new();
        for e in batch.iter().flat_map(|a| &a.events) {
            pipe.cmd("XADD")
                .arg(stream_key(&self.tag, e.partition))
                .arg("*")
                .arg("e")
                .arg(e.raw.as_slice())
                .ignore();
            pipe.cmd("XADD")
                .arg(log_key(&self.tag, &e.app_id))
                .arg("MINID")
                .arg("~")
                .arg(min_id)
                .arg("*")
                .arg("b")
                .arg(e.body.as_bytes())
                .ignore();
            if !logs.contains(&e.app_id.as_str()) {
                logs.push(&e.app_id);
            }
        }
        for app in logs {
            pipe.cmd("PEXPIRE")
                .arg(log_key(&self.tag, app))
                .arg(retention)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| e.to_string())
    }
}

/// Partition `p`'s stream.
fn stream_key(tag: &str, p: usize) -> String {
    format!("{tag}:s:{p}")
}

/// The pull log of `app`.
fn log_key(tag: &str, app: &str) -> String {
    format!("{tag}:app:{app}")
}

/// The outbox on Redis Streams, shared by the pods.
pub struct RedisOutbox {
    conn: BoundedConnection,
    /// To the writer task.
    appends: tokio::sync::mpsc::Sender<Append>,
    /// For blocking reads, apart from the appends and acknowledgements.
    reader: ConnectionManager,
    tag: String,
    lease: Duration,
    own: redis::Script,
    release: redis::Script,
    held: Mutex<Held>,
}

/// A stream entry: id and the event's JSON.
type Entry = (String, HashMap<String, Vec<u8>>);

impl RedisOutbox {
    /// Connects and makes sure every partition has its consumer group.
    /// Pull logs keep events for `retention`.
    pub async fn connect(config: &RedisConfig, retention: Duration) -> Result<Self, OutboxError> {
        let conn = config.connect_bounded().await.map_err(backend)?;
        let mut rc = config.clone();
        rc.response_timeout = config.response_timeout + Duration::from_secs(2);
        let reader = rc.connect().await.map_err(backend)?;
        let tag = format!("{{{}:outbox}}", config.prefix);
        let (appends, queue) = tokio::sync::mpsc::channel(APPEND_QUEUE);
        let writer = Writer {
            conn: conn.clone(),
            tag: tag.clone(),
            retention,
        };
        let me = Self {
            conn,
            appends,
            reader,
            tag,
            lease: LEASE,
            own: redis::Script::new(OWN),
            release: redis::Script::new(RELEASE),
            held: Mutex::new(Held::default()),
        };
        let mut c = me.conn.clone();
        for p in 0..PARTITIONS {
            let r: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(me.stream(p))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            if let Err(e) = r
                && e.code() != Some("BUSYGROUP")
            {
                return Err(backend(e));
            }
        }
        tokio::spawn(writer.run(queue));
        Ok(me)
    }

    /// How long a partition stays with a pod that stopped renewing it
    /// (default 15 s).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    fn stream(&self, p: usize) -> String {
        stream_key(&self.tag, p)
    }

    fn lease_key(&self, p: usize) -> String {
        format!("{}:owner:{p}", self.tag)
    }

    fn log_key(&self, app: &str) -> String {
        log_key(&self.tag, app)
    }

    fn partition(key: &str) -> usize {
        crc32fast::hash(key.as_bytes()) as usize % PARTITIONS
    }

    /// Renews the leases and takes partitions up to this pod's share.
    async fn maintain(&self, consumer: &str) -> Result<(), OutboxError> {
        let mut inv = self.own.prepare_invoke();
        inv.key(format!("{}:pods", self.tag));
        for p in 0..PARTITIONS {
            inv.key(self.lease_key(p));
        }
        inv.arg(consumer)
            .arg(smsgw_core::messages::unix_now_ms())
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX));
        let out: Vec<i64> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let split = out.iter().position(|v| *v < 0).unwrap_or(out.len());
        let parts: Vec<usize> = out[..split].iter().map(|v| *v as usize).collect();
        let fresh = out.get(split + 1..).unwrap_or(&[]);
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if h.parts != parts {
            tracing::info!(consumer, partitions = ?parts, "outbox partitions held");
        }
        if h.started {
            h.fresh.extend(fresh.iter().map(|v| *v as usize));
        } else {
            // Every partition held, the newly taken ones among them.
            h.started = true;
            h.fresh.clone_from(&parts);
        }
        h.parts = parts;
        h.renewed = Some(Instant::now());
        Ok(())
    }

    /// Releases this pod's partitions so others take them at once (a
    /// clean stop; what it held and did not acknowledge is claimed by the
    /// next owner).
    async fn release_all(&self, consumer: &str) -> Result<(), OutboxError> {
        let mut inv = self.release.prepare_invoke();
        for p in 0..PARTITIONS {
            inv.key(self.lease_key(p));
        }
        inv.arg(consumer);
        let _: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let _: i64 = redis::cmd("ZREM")
            .arg(format!("{}:pods", self.tag))
            .arg(consumer)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn decode(p: usize, entries: Vec<Entry>, out: &mut Vec<Claimed>) -> Result<(), OutboxError> {
        for (id, fields) in entries {
            let Some(raw) = fields.get("e") else { continue };
            let event: OutboxEvent = serde_json::from_slice(raw).map_err(backend)?;
            out.push(Claimed {
                position: format!("{p}/{id}"),
                event,
            });
        }
        Ok(())
    }

    /// Takes over what a former owner of `p` read and did not acknowledge.
    async fn take_over(
        &self,
        consumer: &str,
        p: usize,
        out: &mut Vec<Claimed>,
    ) -> Result<(), OutboxError> {
        let mut cursor = "0-0".to_owned();
        loop {
            let v: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(self.stream(p))
                .arg(GROUP)
                .arg(consumer)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            let redis::Value::Array(parts) = v else {
                return Err(backend("XAUTOCLAIM answered no array"));
            };
            let mut it = parts.into_iter();
            let next: String = it
                .next()
                .map(|v| redis::from_redis_value(&v))
                .transpose()
                .map_err(backend)?
                .unwrap_or_else(|| "0-0".into());
            let entries: Vec<Option<Entry>> = it
                .next()
                .map(|v| redis::from_redis_value(&v))
                .transpose()
                .map_err(backend)?
                .unwrap_or_default();
            let before = out.len();
            Self::decode(p, entries.into_iter().flatten().collect(), out)?;
            if out.len() > before {
                tracing::info!(
                    consumer,
                    partition = p,
                    events = out.len() - before,
                    "outbox events of a former owner taken over"
                );
            }
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }
}

#[async_trait::async_trait]
impl Outbox for RedisOutbox {
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ready = Vec::with_capacity(events.len());
        for e in events {
            ready.push(Ready {
                partition: Self::partition(&e.key),
                raw: serde_json::to_vec(e).map_err(backend)?,
                app_id: e.app_id.clone(),
                body: e.body.clone(),
            });
        }
        let (done, written) = tokio::sync::oneshot::channel();
        let stopped = || backend("the outbox writer stopped");
        self.appends
            .send(Append {
                events: ready,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?.map_err(backend)
    }

    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, OutboxError> {
        let due = {
            let h = self.held.lock().unwrap_or_else(|p| p.into_inner());
            h.renewed
                .is_none_or(|at| at.elapsed() > (self.lease / 10).min(Duration::from_secs(1)))
        };
        if due {
            self.maintain(consumer).await?;
        }
        let (parts, fresh) = {
            let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
            (h.parts.clone(), std::mem::take(&mut h.fresh))
        };
        let mut out = Vec::new();
        for p in fresh {
            self.take_over(consumer, p, &mut out).await?;
        }
        if !out.is_empty() {
            return Ok(out);
        }
        if parts.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(out);
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(u64::try_from(wait.min(Duration::from_secs(1)).as_millis()).unwrap_or(1000))
            .arg("STREAMS");
        for p in &parts {
            cmd.arg(self.stream(*p));
        }
        for _ in &parts {
            cmd.arg(">");
        }
        let got: Option<Vec<(String, Vec<Entry>)>> = cmd
            .query_async(&mut self.reader.clone())
            .await
            .map_err(backend)?;
        for (stream, entries) in got.unwrap_or_default() {
            let p = stream
                .rsplit(':')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| backend(format!("unexpected stream {stream}")))?;
            Self::decode(p, entries, &mut out)?;
        }
        Ok(out)
    }

    async fn ack(&self, positions: &[String]) -> Result<(), OutboxError> {
        let mut by_part: HashMap<usize, Vec<&str>> = HashMap::new();
        for pos in positions {
            let (p, id) = pos
                .split_once('/')
                .and_then(|(p, id)| Some((p.parse::<usize>().ok()?, id)))
                .filter(|(p, _)| *p < PARTITIONS)
                .ok_or_else(|| OutboxError::BadPosition(pos.clone()))?;
            by_part.entry(p).or_default().push(id);
        }
        if by_part.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (p, ids) in &by_part {
            pipe.cmd("XACK")
                .arg(self.stream(*p))
                .arg(GROUP)
                .arg(ids)
                .ignore();
            pipe.cmd("XDEL").arg(self.stream(*p)).arg(ids).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn heartbeat(&self, consumer: &str) -> Result<(), OutboxError> {
        self.maintain(consumer).await
    }

    async fn release(&self, consumer: &str) -> Result<(), OutboxError> {
        self.release_all(consumer).await
    }

    async fn read(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Logged>, OutboxError> {
        let start = match after {
            Some(a) => {
                if !valid_stream_id(a) {
                    return Err(OutboxError::BadPosition(a.to_owned()));
                }
                format!("({a}")
            }
            None => "-".to_owned(),
        };
        let got: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(self.log_key(app_id))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(got
            .into_iter()
            .filter_map(|(id, f)| {
                Some(Logged {
                    cursor: id,
                    body: String::from_utf8(f.get("b")?.clone()).ok()?,
                })
            })
            .collect())
    }
}

/// `<ms>-<seq>`, both decimal.
fn valid_stream_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

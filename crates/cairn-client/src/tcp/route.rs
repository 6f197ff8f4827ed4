//! Routing a producer's appends to partition leaders, and coalescing the
//! appends of one partition while its requests are on the wire (see the
//! parent module's docs for the behaviour; this is the machinery).
//!
//! The [`Router`] keeps, per stream, a [`StreamRoute`]: the partition
//! count and one [`Lane`] per partition, which holds the link to that
//! partition's leader (or none: the default link) and the appends waiting
//! for a free slot. Routes are asked for once per stream (the first append
//! waits for it) and refreshed in the background when older than
//! [`ROUTE_TTL`] or after a failed send. No std lock is held across an
//! `await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cairn_types::protocol::{AppendedPartition, Leaders, METADATA_WITH_LEADERS, Op, ResponseBody};
use cairn_types::{BatchBuilder, ErrorCode, RecordBatch, partition_for_source};
use tokio::sync::oneshot;

use super::link::Link;
use super::{TcpError, TcpOptions, append_on, to_response};
use crate::types::AppendResponse;

/// How long a stream's leaders are trusted before they are asked again
/// (in the background; sends go on meanwhile).
pub(super) const ROUTE_TTL: Duration = Duration::from_secs(1);
/// How long one node may take to say who leads (connecting included); a
/// node that does not answer in time is left out of this round.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The most entries one merged request carries (the server takes 100,000
/// per request; smaller requests keep a merged request's latency close to
/// a lone one's).
const MERGE_MAX_ENTRIES: u32 = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A node's connection, opened to one of the addresses the producer was
/// given, and the node id it answered with.
#[derive(Debug, Clone)]
struct NodeLink {
    node: u64,
    link: Link,
}

#[derive(Debug)]
pub(super) struct Router {
    default: Link,
    addrs: Vec<String>,
    options: Arc<TcpOptions>,
    next_id: Arc<AtomicU64>,
    /// Per address, its node's link once one answered.
    nodes: Mutex<Vec<Option<NodeLink>>>,
    streams: Mutex<HashMap<String, Arc<StreamRoute>>>,
    /// Streams whose leaders no node told, and when that was: not asked
    /// again before [`ROUTE_TTL`] has passed.
    unroutable: Mutex<HashMap<String, Instant>>,
    /// Held while a stream's first route is asked for, so a burst of first
    /// appends asks once.
    first_fetch: tokio::sync::Mutex<()>,
}

/// One stream's partitions and their lanes.
#[derive(Debug)]
struct StreamRoute {
    name: String,
    partitions: u32,
    lanes: Vec<Lane>,
    /// When the leaders were last asked for (stale after a failed send).
    fetched: Mutex<Instant>,
    refreshing: AtomicBool,
}

impl StreamRoute {
    fn mark_stale(&self) {
        let mut fetched = lock(&self.fetched);
        if let Some(old) = Instant::now().checked_sub(ROUTE_TTL) {
            *fetched = old.min(*fetched);
        }
    }
}

/// One partition's way to its leader and its waiting appends.
#[derive(Debug, Default)]
struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Debug, Default)]
struct LaneState {
    /// The leader's link; `None`: the default link (leader unknown).
    target: Option<Link>,
    /// Its node id (0 with no link).
    target_node: u64,
    /// Bumped when the target changes: requests still in flight to the old
    /// leader (which may hang until their timeout) then no longer hold the
    /// lane's slots.
    generation: u64,
    /// Requests on the wire in this generation.
    in_flight: usize,
    queued: Vec<Queued>,
}

/// A lane's slot, held by one request on the wire.
#[derive(Debug, Clone, Copy)]
struct Slot {
    p: u32,
    generation: u64,
}

#[derive(Debug)]
struct Queued {
    batch: RecordBatch,
    reply: oneshot::Sender<Result<AppendedPartition, TcpError>>,
}

/// What a stream's route lookup found.
enum Lookup {
    Route(Arc<StreamRoute>),
    /// The leaders could not be asked for (an old server, a missing
    /// stream, no node answering): send whole batches on the default link,
    /// whose answer says what is wrong.
    Unroutable,
}

impl Router {
    pub(super) fn new(
        default: Link,
        addrs: Vec<String>,
        options: Arc<TcpOptions>,
        next_id: Arc<AtomicU64>,
    ) -> Arc<Router> {
        Arc::new(Router {
            default,
            nodes: Mutex::new(vec![None; addrs.len()]),
            addrs,
            options,
            next_id,
            streams: Mutex::default(),
            unroutable: Mutex::default(),
            first_fetch: tokio::sync::Mutex::new(()),
        })
    }

    /// Appends `batch` to `stream`, each partition's share through its
    /// lane (see the module docs).
    pub(super) async fn append(
        self: &Arc<Self>,
        stream: &str,
        batch: &RecordBatch,
    ) -> Result<AppendResponse, TcpError> {
        let route = match self.route(stream).await {
            Lookup::Route(route) => route,
            Lookup::Unroutable => {
                return Ok(to_response(append_on(&self.default, stream, batch).await?));
            }
        };
        let Some(parts) = split_by_partition(batch, route.partitions) else {
            // Entries that do not decode: the server says which.
            return Ok(to_response(append_on(&self.default, stream, batch).await?));
        };
        let sends = parts
            .into_iter()
            .map(|(p, part)| self.submit(&route, p, part));
        let mut appended = Vec::new();
        for result in futures::future::join_all(sends).await {
            appended.push(result?);
        }
        Ok(to_response(appended))
    }

    /// The stream's route, asking for it first if there is none yet, and
    /// starting a background refresh when it is old.
    async fn route(self: &Arc<Self>, stream: &str) -> Lookup {
        if let Some(route) = lock(&self.streams).get(stream).cloned() {
            self.refresh_if_old(&route);
            return Lookup::Route(route);
        }
        let _asking = self.first_fetch.lock().await;
        if let Some(route) = lock(&self.streams).get(stream).cloned() {
            return Lookup::Route(route);
        }
        if lock(&self.unroutable)
            .get(stream)
            .is_some_and(|at| at.elapsed() < ROUTE_TTL)
        {
            return Lookup::Unroutable;
        }
        match self.ask_leaders(stream).await {
            Some((partitions, leaders)) => {
                let route = Arc::new(StreamRoute {
                    name: stream.to_string(),
                    partitions,
                    lanes: (0..partitions).map(|_| Lane::default()).collect(),
                    fetched: Mutex::new(Instant::now()),
                    refreshing: AtomicBool::new(false),
                });
                self.apply(&route, &leaders);
                lock(&self.unroutable).remove(stream);
                lock(&self.streams).insert(stream.to_string(), route.clone());
                Lookup::Route(route)
            }
            None => {
                lock(&self.unroutable).insert(stream.to_string(), Instant::now());
                Lookup::Unroutable
            }
        }
    }

    fn refresh_if_old(self: &Arc<Self>, route: &Arc<StreamRoute>) {
        if lock(&route.fetched).elapsed() < ROUTE_TTL
            || route.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (router, route) = (self.clone(), route.clone());
        tokio::spawn(async move {
            match router.ask_leaders(&route.name).await {
                Some((partitions, leaders)) if partitions == route.partitions => {
                    router.apply(&route, &leaders);
                }
                // The stream was deleted and made again with another
                // partition count: the next append starts a new route.
                Some(_) => {
                    let mut streams = lock(&router.streams);
                    if streams
                        .get(&route.name)
                        .is_some_and(|r| Arc::ptr_eq(r, &route))
                    {
                        streams.remove(&route.name);
                    }
                }
                None => {}
            }
            // Asked again after the TTL even when nobody answered.
            *lock(&route.fetched) = Instant::now();
            route.refreshing.store(false, Ordering::Release);
        });
    }

    /// Points every lane of `route` at its leader's link. A lane whose
    /// leader changed starts a new generation: what queued behind requests
    /// to the old leader is sent to the new one at once.
    fn apply(self: &Arc<Self>, route: &Arc<StreamRoute>, leaders: &[u64]) {
        let targets: Vec<(u64, Option<Link>)> = {
            let nodes = lock(&self.nodes);
            leaders
                .iter()
                .map(|leader| {
                    let link = nodes
                        .iter()
                        .flatten()
                        .find(|n| n.node == *leader && *leader != 0)
                        .map(|n| n.link.clone());
                    (if link.is_some() { *leader } else { 0 }, link)
                })
                .collect()
        };
        for (p, (node, link)) in targets.into_iter().enumerate() {
            let mut st = lock(&route.lanes[p].state);
            if st.target_node == node {
                continue;
            }
            st.target = link;
            st.target_node = node;
            st.generation += 1;
            st.in_flight = 0;
            if st.queued.is_empty() {
                continue;
            }
            st.in_flight = 1;
            let slot = Slot {
                p: p as u32,
                generation: st.generation,
            };
            if let Some(next) = take_queued(&mut st, slot, self.merge_limit()) {
                drop(st);
                self.drain(route, slot, next);
            }
        }
    }

    /// Asks every node the producer knows who leads `stream`'s partitions;
    /// `None` when no node answered. For each partition the node that says
    /// it leads it wins; else the answer most nodes gave.
    async fn ask_leaders(&self, stream: &str) -> Option<(u32, Vec<u64>)> {
        let asks = (0..self.addrs.len())
            .map(|i| tokio::time::timeout(ASK_TIMEOUT, self.ask_node(i, stream)));
        let answers: Vec<(u32, Leaders)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        let partitions = answers.first()?.0;
        let answers: Vec<&Leaders> = answers
            .iter()
            .filter(|(n, _)| *n == partitions)
            .map(|(_, l)| l)
            .collect();
        let leaders = (0..partitions as usize)
            .map(|p| {
                if let Some(me) = answers.iter().find(|a| a.by_partition[p] == a.node) {
                    return me.node;
                }
                let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
                for a in &answers {
                    if a.by_partition[p] != 0 {
                        *votes.entry(a.by_partition[p]).or_default() += 1;
                    }
                }
                votes
                    .into_iter()
                    .max_by_key(|(_, n)| *n)
                    .map_or(0, |(node, _)| node)
            })
            .collect();
        Some((partitions, leaders))
    }

    /// One node's METADATA with leaders, connecting to address `i` first if
    /// the producer has no link to it yet.
    async fn ask_node(&self, i: usize, stream: &str) -> Option<(u32, Leaders)> {
        let known = lock(&self.nodes)[i].clone();
        let link = match known {
            Some(n) => n.link,
            None => Link::connect_any(
                vec![self.addrs[i].clone()],
                self.options.clone(),
                self.next_id.clone(),
            )
            .await
            .ok()?,
        };
        let answer = link
            .call(Op::Metadata, stream, &METADATA_WITH_LEADERS)
            .await;
        let Ok(ResponseBody::Metadata {
            partitions,
            leaders: Some(leaders),
        }) = answer
        else {
            return None;
        };
        if leaders.by_partition.len() != partitions as usize {
            return None;
        }
        lock(&self.nodes)[i] = Some(NodeLink {
            node: leaders.node,
            link,
        });
        Some((partitions, leaders))
    }

    /// Sends `batch` on partition `p`'s lane, or queues it behind the
    /// lane's requests in flight to go out with the next one.
    async fn submit(
        self: &Arc<Self>,
        route: &Arc<StreamRoute>,
        p: u32,
        batch: RecordBatch,
    ) -> Result<AppendedPartition, TcpError> {
        let lane = &route.lanes[p as usize];
        let taken = {
            let mut st = lock(&lane.state);
            if st.in_flight >= self.options.max_in_flight_per_partition.max(1) {
                let (reply, answer) = oneshot::channel();
                st.queued.push(Queued { batch, reply });
                Err(answer)
            } else {
                st.in_flight += 1;
                let slot = Slot {
                    p,
                    generation: st.generation,
                };
                Ok((slot, st.target.clone(), batch))
            }
        };
        let (slot, target, batch) = match taken {
            Ok(taken) => taken,
            Err(answer) => {
                return answer
                    .await
                    .unwrap_or_else(|_| Err(TcpError::Closed("the producer stopped".into())));
            }
        };
        let result = self.send_one(route, target, p, &batch).await;
        let next = take_queued(&mut lock(&lane.state), slot, self.merge_limit());
        if let Some(next) = next {
            self.drain(route, slot, next);
        }
        result
    }

    /// Sends what queued on a lane as one request, and again for what
    /// queued meanwhile, from a task of its own (so the caller whose
    /// request freed the slot gets its answer now), until nothing is left
    /// or the lane's generation moved on.
    fn drain(self: &Arc<Self>, route: &Arc<StreamRoute>, slot: Slot, first: Taken) {
        let (router, route) = (self.clone(), route.clone());
        tokio::spawn(async move {
            let (mut target, mut writes) = first;
            loop {
                router.send_merged(&route, target, slot.p, writes).await;
                let lane = &route.lanes[slot.p as usize];
                match take_queued(&mut lock(&lane.state), slot, router.merge_limit()) {
                    Some(next) => (target, writes) = next,
                    None => return,
                }
            }
        });
    }

    fn merge_limit(&self) -> usize {
        self.options
            .max_frame_bytes
            .saturating_sub(cairn_types::protocol::REQUEST_OVERHEAD)
    }

    /// Sends several appends of one partition as one request and answers
    /// each with its share (see the parent module's docs on coalescing).
    async fn send_merged(
        &self,
        route: &StreamRoute,
        target: Option<Link>,
        p: u32,
        writes: Vec<Queued>,
    ) {
        if writes.len() == 1 {
            let w = writes.into_iter().next().expect("one write");
            let result = self.send_one(route, target, p, &w.batch).await;
            let _ = w.reply.send(result);
            return;
        }
        let mut builder = BatchBuilder::with_capacity(writes.iter().map(|w| w.batch.len()).sum());
        // Merging fails only for batches that do not decode, which split
        // ones always do; sent one by one, each gets its own answer.
        let result = match writes
            .iter()
            .try_for_each(|w| builder.extend_from(&w.batch))
        {
            Ok(()) => Some(
                self.send_one(route, target.clone(), p, &builder.finish())
                    .await,
            ),
            Err(_) => None,
        };
        match result {
            Some(Ok(part)) => {
                let mut offset = part.base_offset;
                for w in writes {
                    let count = w.batch.count();
                    let _ = w.reply.send(Ok(AppendedPartition {
                        partition: p,
                        base_offset: offset,
                        count,
                    }));
                    offset += u64::from(count);
                }
            }
            // Refused for what it holds: nothing was stored, so each part
            // goes again on its own and only a bad one fails.
            None
            | Some(Err(TcpError::Api {
                code: ErrorCode::InvalidEntry | ErrorCode::BadRequest | ErrorCode::PayloadTooLarge,
                ..
            })) => {
                let sends = writes.into_iter().map(|w| {
                    let target = target.clone();
                    async move {
                        let result = self.send_one(route, target, p, &w.batch).await;
                        let _ = w.reply.send(result);
                    }
                });
                futures::future::join_all(sends).await;
            }
            Some(Err(e)) => {
                for w in writes {
                    let _ = w.reply.send(Err(same_error(&e)));
                }
            }
        }
    }

    /// One request with `batch` (all of partition `p`) to the leader's
    /// link, or the default link when the leader's cannot be opened
    /// (nothing was sent then) or is unknown.
    async fn send_one(
        &self,
        route: &StreamRoute,
        target: Option<Link>,
        p: u32,
        batch: &RecordBatch,
    ) -> Result<AppendedPartition, TcpError> {
        let result = match target {
            Some(link) => match link.connection().await {
                Ok(conn) => {
                    link.call_on(&conn, Op::Append, &route.name, batch.as_bytes())
                        .await
                }
                Err(_) => {
                    route.mark_stale();
                    self.default
                        .call(Op::Append, &route.name, batch.as_bytes())
                        .await
                }
            },
            None => {
                self.default
                    .call(Op::Append, &route.name, batch.as_bytes())
                    .await
            }
        };
        let parts = match result {
            Ok(ResponseBody::Appended(parts)) => parts,
            Ok(other) => return Err(TcpError::Unexpected(format!("{other:?} for an APPEND"))),
            Err(e) => {
                route.mark_stale();
                return Err(e);
            }
        };
        match parts[..] {
            [part] if part.partition == p && part.count == batch.count() => Ok(part),
            _ => Err(TcpError::Unexpected(format!(
                "the entries were stored, but the answer {parts:?} does not fit one request \
                 of {} entries for partition {p} (did the stream's partition count change?)",
                batch.count()
            ))),
        }
    }
}

/// What is sent next on a lane: its target and the writes merged.
type Taken = (Option<Link>, Vec<Queued>);

/// When a request holding `slot` returned: what queued on the lane (up to
/// `max_bytes` and [`MERGE_MAX_ENTRIES`]) with the lane's target, keeping
/// the slot for it; or `None`, freeing the slot, when nothing queued. A
/// slot of an older generation was already given up: it takes nothing.
fn take_queued(st: &mut LaneState, slot: Slot, max_bytes: usize) -> Option<Taken> {
    if st.generation != slot.generation {
        return None;
    }
    if st.queued.is_empty() {
        st.in_flight -= 1;
        return None;
    }
    let (mut bytes, mut entries, mut n) = (0usize, 0u32, 0usize);
    for w in &st.queued {
        if n > 0
            && (bytes + w.batch.len() > max_bytes || entries + w.batch.count() > MERGE_MAX_ENTRIES)
        {
            break;
        }
        bytes += w.batch.len();
        entries += w.batch.count();
        n += 1;
    }
    let writes = st.queued.drain(..n).collect();
    Some((st.target.clone(), writes))
}

/// The same failure for another caller of a merged request.
fn same_error(e: &TcpError) -> TcpError {
    match e {
        TcpError::Api { code, message } => TcpError::Api {
            code: *code,
            message: message.clone(),
        },
        TcpError::Timeout(d) => TcpError::Timeout(*d),
        TcpError::TooLarge { size, max } => TcpError::TooLarge {
            size: *size,
            max: *max,
        },
        TcpError::Invalid(m) => TcpError::Invalid(m.clone()),
        TcpError::Unexpected(m) => TcpError::Unexpected(m.clone()),
        TcpError::Closed(m) => TcpError::Closed(m.clone()),
        TcpError::Connect { .. } => TcpError::Closed(e.to_string()),
    }
}

/// `batch`'s entries by partition (request order kept within each), the
/// batch itself when they all belong to one; `None` when an entry does not
/// decode or there are none.
fn split_by_partition(batch: &RecordBatch, partitions: u32) -> Option<Vec<(u32, RecordBatch)>> {
    if let Some(only) = batch.single_partition(partitions) {
        return Some(vec![(only, batch.clone())]);
    }
    let mut builders: BTreeMap<u32, BatchBuilder> = BTreeMap::new();
    for item in batch.entries() {
        let (_, e) = item.ok()?;
        let p = partition_for_source(e.source, partitions);
        builders.entry(p).or_default().push_ref(&e).ok()?;
    }
    (!builders.is_empty()).then(|| builders.into_iter().map(|(p, b)| (p, b.finish())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::NewEntry;

    fn batch(sources: &[&str]) -> RecordBatch {
        let entries: Vec<NewEntry> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| NewEntry {
                timestamp: Some(1_000 + i as i64),
                level: None,
                source: s.to_string(),
                message: format!("m{i}"),
                attributes: Default::default(),
            })
            .collect();
        super::super::encode_entries(&entries).unwrap()
    }

    #[test]
    fn a_batch_is_split_by_the_servers_partition_function_keeping_order() {
        let sources: Vec<String> = (0..40).map(|i| format!("src-{i}")).collect();
        let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        let parts = split_by_partition(&batch(&refs), 4).unwrap();
        assert!(
            parts.len() > 1,
            "40 sources land in more than one of 4 partitions"
        );
        let mut seen = 0;
        for (p, part) in &parts {
            let mut last = -1i64;
            for item in part.entries() {
                let (_, e) = item.unwrap();
                assert_eq!(partition_for_source(e.source, 4), *p);
                let i: i64 = e.message[1..].parse().unwrap();
                assert!(i > last, "request order kept within a partition");
                last = i;
                seen += 1;
            }
        }
        assert_eq!(seen, 40);
    }

    #[test]
    fn a_one_partition_batch_is_sent_as_it_is() {
        let b = batch(&["same", "same", "same"]);
        let parts = split_by_partition(&b, 8).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1.as_bytes(), b.as_bytes());
    }
}

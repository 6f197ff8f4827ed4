//! Realistic log entries for the demo: a small shop's services, each run as
//! a few instances, logging requests, orders, payments, searches, sign-ins
//! and stock changes, mostly at INFO with a realistic trickle of DEBUG,
//! WARN, ERROR and the odd FATAL.
//!
//! The source is `service-instance` (e.g. `checkout-2`) rather than the bare
//! service, and the source picks the partition (a hash of it). Instance
//! numbers are therefore chosen by their hash, not counted 1, 2, 3: a fixed
//! set of names hashed about 6× more entries onto the busiest partition than
//! onto the idlest. [`source_table`] gives every partition of the demo
//! stream the same number of sources, each service the same number of
//! instances, and entries pick a source uniformly, so every partition gets
//! an even share of the load (unit-tested).

use std::collections::BTreeMap;
use std::fmt::Write;

use cairn_types::{Level, NewEntry, partition_for_source};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICES: [&str; 6] = ["web", "checkout", "payments", "search", "auth", "inventory"];
/// Sources per partition of the demo stream.
const SOURCES_PER_PARTITION: usize = 3;
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
const PATHS: [&str; 6] = [
    "/",
    "/products",
    "/products/{id}",
    "/cart",
    "/api/orders/{id}",
    "/search",
];
const PROVIDERS: [&str; 3] = ["stripe", "adyen", "paypal"];
const TERMS: [&str; 8] = [
    "running shoes",
    "rain jacket",
    "espresso machine",
    "usb-c cable",
    "desk lamp",
    "yoga mat",
    "backpack",
    "headphones",
];

/// The (service, instance) sources of a stream of `partitions`
/// partitions: [`SOURCES_PER_PARTITION`] hashing onto each partition,
/// services taking turns so each has as many instances as the others
/// (when `partitions * SOURCES_PER_PARTITION` is a multiple of their
/// number, as for the demo stream). Each slot takes the service's lowest
/// instance number that hashes onto the slot's partition.
pub fn source_table(partitions: u32) -> Vec<(&'static str, u32)> {
    let mut table = Vec::new();
    let mut next_instance = [1u32; SERVICES.len()];
    for p in 0..partitions {
        for k in 0..SOURCES_PER_PARTITION {
            let s = (p as usize * SOURCES_PER_PARTITION + k) % SERVICES.len();
            let service = SERVICES[s];
            // Expected `partitions` tries; instances skipped here are used
            // by no one, and every instance number is used at most once.
            let instance = (next_instance[s]..)
                .find(|i| {
                    !table.contains(&(service, *i))
                        && partition_for_source(&format!("{service}-{i}"), partitions) == p
                })
                .expect("some instance number hashes onto every partition");
            if instance == next_instance[s] {
                next_instance[s] += 1;
            }
            table.push((service, instance));
        }
    }
    table
}

/// Makes entries; deterministic for a given seed.
#[derive(Debug)]
pub struct EntryGenerator {
    rng: StdRng,
    sources: Vec<(&'static str, u32)>,
}

impl EntryGenerator {
    pub fn new(seed: u64) -> EntryGenerator {
        EntryGenerator {
            rng: StdRng::seed_from_u64(seed),
            sources: source_table(super::PARTITIONS),
        }
    }

    /// Every source the generator uses.
    #[cfg(test)]
    pub fn sources() -> Vec<String> {
        source_table(super::PARTITIONS)
            .iter()
            .map(|(s, i)| format!("{s}-{i}"))
            .collect()
    }

    /// `count` entries stamped `timestamp_us` (the producer's clock).
    pub fn batch(&mut self, count: usize, timestamp_us: i64) -> Vec<NewEntry> {
        (0..count).map(|_| self.entry(timestamp_us)).collect()
    }

    fn level(&mut self) -> Level {
        // Per mille: 100 DEBUG, 785 INFO, 85 WARN, 28 ERROR, 2 FATAL.
        match self.rng.random_range(0..1000u32) {
            0..100 => Level::Debug,
            100..885 => Level::Info,
            885..970 => Level::Warn,
            970..998 => Level::Error,
            _ => Level::Fatal,
        }
    }

    pub fn entry(&mut self, timestamp_us: i64) -> NewEntry {
        let (service, instance) = self.sources[self.rng.random_range(0..self.sources.len())];
        let level = self.level();
        let mut attributes = BTreeMap::new();
        let region = REGIONS[(instance % 2) as usize];
        attributes.insert("region".to_string(), region.to_string());
        attributes.insert(
            "host".to_string(),
            format!("ip-10-0-{}-{}", instance, 10 + instance * 7),
        );
        let mut trace = String::with_capacity(16);
        let _ = write!(trace, "{:016x}", self.rng.random::<u64>());
        attributes.insert("trace_id".to_string(), trace);
        let message = self.message(service, level, &mut attributes);
        NewEntry {
            timestamp: Some(timestamp_us),
            level: Some(level),
            source: format!("{service}-{instance}"),
            message,
            attributes,
        }
    }

    fn message(
        &mut self,
        service: &str,
        level: Level,
        attrs: &mut BTreeMap<String, String>,
    ) -> String {
        let r = &mut self.rng;
        let id: u32 = r.random_range(10_000..99_999);
        let ms: u32 = match level {
            Level::Warn => r.random_range(800..5_000),
            _ => r.random_range(1..120),
        };
        let mut attr = |k: &str, v: String| {
            attrs.insert(k.to_string(), v);
        };
        match (service, level) {
            ("web", _) => {
                let path = PATHS[r.random_range(0..PATHS.len())].replace("{id}", &id.to_string());
                let method = if path.starts_with("/api") && r.random_bool(0.3) {
                    "POST"
                } else {
                    "GET"
                };
                let status = match level {
                    Level::Error | Level::Fatal => 503,
                    Level::Warn => 429,
                    _ if r.random_bool(0.05) => 404,
                    _ => 200,
                };
                attr("method", method.to_string());
                attr("path", path.clone());
                attr("status", status.to_string());
                attr("duration_ms", ms.to_string());
                attr(
                    "client_ip",
                    format!("203.0.113.{}", r.random_range(1..255u8)),
                );
                format!("{method} {path} {status} {ms} ms")
            }
            ("checkout", Level::Error | Level::Fatal) => {
                attr("order_id", id.to_string());
                format!("order {id} failed: payment declined (card expired)")
            }
            ("checkout", Level::Warn) => {
                attr("order_id", id.to_string());
                format!("order {id}: inventory reservation took {ms} ms")
            }
            ("checkout", _) => {
                let items = r.random_range(1..6u32);
                let cents = r.random_range(500..40_000u32);
                attr("order_id", id.to_string());
                attr("items", items.to_string());
                format!(
                    "order {id} placed: {items} items, total {}.{:02} EUR",
                    cents / 100,
                    cents % 100
                )
            }
            ("payments", lvl) => {
                let provider = PROVIDERS[r.random_range(0..PROVIDERS.len())];
                attr("provider", provider.to_string());
                attr("charge_id", format!("ch_{id}"));
                match lvl {
                    Level::Fatal => format!("{provider} credentials rejected: payments halted"),
                    Level::Error => format!("charge ch_{id} failed: {provider} returned 502"),
                    Level::Warn => {
                        format!("retrying charge ch_{id} after {provider} timeout ({ms} ms)")
                    }
                    _ => format!("charge ch_{id} authorized via {provider} in {ms} ms"),
                }
            }
            ("search", lvl) => {
                let term = TERMS[r.random_range(0..TERMS.len())];
                let hits = r.random_range(0..500u32);
                attr("hits", hits.to_string());
                attr("duration_ms", ms.to_string());
                match lvl {
                    Level::Error | Level::Fatal => {
                        format!("query {term:?} failed: index shard 3 unavailable")
                    }
                    Level::Warn => format!("slow query {term:?}: {hits} hits in {ms} ms"),
                    _ => format!("query {term:?}: {hits} hits in {ms} ms"),
                }
            }
            ("auth", lvl) => {
                let user = r.random_range(1_000..50_000u32);
                attr("user_id", user.to_string());
                match lvl {
                    Level::Error | Level::Fatal => {
                        format!("token refresh for user {user} failed: signing key unavailable")
                    }
                    Level::Warn => format!("failed sign-in for user {user}: wrong password"),
                    Level::Debug => format!("session for user {user} extended by 30 min"),
                    _ => format!("user {user} signed in"),
                }
            }
            (_, lvl) => {
                let sku = r.random_range(100..999u32);
                let stock = r.random_range(0..200u32);
                attr("sku", format!("sku-{sku}"));
                match lvl {
                    Level::Error | Level::Fatal => {
                        "database connection pool exhausted (64/64 in use)".to_string()
                    }
                    Level::Warn => format!("sku-{sku} low on stock: {stock} left"),
                    _ => format!("stock of sku-{sku} now {stock}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::partition_for_source;
    use std::collections::BTreeSet;

    #[test]
    fn every_partition_gets_the_same_sources_and_an_even_share_of_entries() {
        let partitions = super::super::PARTITIONS;
        let sources = EntryGenerator::sources();
        let unique: BTreeSet<&String> = sources.iter().collect();
        assert_eq!(unique.len(), sources.len(), "{sources:?}");
        let mut per_partition = vec![0usize; partitions as usize];
        for s in &sources {
            per_partition[partition_for_source(s, partitions) as usize] += 1;
        }
        assert!(
            per_partition.iter().all(|n| *n == SOURCES_PER_PARTITION),
            "{per_partition:?}"
        );
        for service in SERVICES {
            let n = sources
                .iter()
                .filter(|s| s.rsplit_once('-').unwrap().0 == service)
                .count();
            assert_eq!(n, sources.len() / SERVICES.len(), "{service}");
        }

        let mut entries = vec![0u32; partitions as usize];
        for e in EntryGenerator::new(11).batch(60_000, 1) {
            entries[partition_for_source(&e.source, partitions) as usize] += 1;
        }
        let (min, max) = (entries.iter().min().unwrap(), entries.iter().max().unwrap());
        // 10,000 expected each; the old fixed names gave about 6× between
        // the busiest and the idlest.
        assert!(f64::from(*max) / f64::from(*min) < 1.1, "{entries:?}");
    }

    #[test]
    fn entries_vary_and_are_valid() {
        let mut g = EntryGenerator::new(7);
        let batch = g.batch(5_000, 1_700_000_000_000_000);
        let levels: BTreeSet<_> = batch.iter().filter_map(|e| e.level).collect();
        let services: BTreeSet<_> = batch
            .iter()
            .map(|e| e.source.rsplit_once('-').unwrap().0)
            .collect();
        assert!(levels.len() >= 5, "{levels:?}");
        assert_eq!(services.len(), SERVICES.len());
        let sources = EntryGenerator::sources();
        for e in &batch {
            assert!(sources.contains(&e.source), "{}", e.source);
            assert!(!e.message.is_empty());
            assert!(e.attributes.contains_key("trace_id"));
            // Entries are sent as JSON and must survive it unchanged.
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(&serde_json::from_str::<NewEntry>(&json).unwrap(), e);
        }
        let errors = batch
            .iter()
            .filter(|e| e.level >= Some(Level::Error))
            .count();
        assert!((50..300).contains(&errors), "{errors} errors of 5,000");
    }

    #[test]
    fn the_same_seed_gives_the_same_entries() {
        let a = EntryGenerator::new(3).batch(20, 1);
        let b = EntryGenerator::new(3).batch(20, 1);
        assert_eq!(a, b);
    }
}

//! Realistic log entries for the demo: a small shop's services, each run as
//! a few instances, logging requests, orders, payments, searches, sign-ins
//! and stock changes, mostly at INFO with a realistic trickle of DEBUG,
//! WARN, ERROR and the odd FATAL.
//!
//! The source is `service-instance` (e.g. `checkout-2`) rather than the bare
//! service: the source picks the partition, and six services alone could
//! hash onto fewer than six partitions, leaving some of the demo stream
//! idle. A unit test checks that the sources cover every partition of the
//! demo stream.

use std::collections::BTreeMap;
use std::fmt::Write;

use cairn_types::{Level, NewEntry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICES: [&str; 6] = ["web", "checkout", "payments", "search", "auth", "inventory"];
const INSTANCES: u32 = 3;
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

/// Makes entries; deterministic for a given seed.
#[derive(Debug)]
pub struct EntryGenerator {
    rng: StdRng,
}

impl EntryGenerator {
    pub fn new(seed: u64) -> EntryGenerator {
        EntryGenerator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Every source the generator uses.
    #[cfg(test)]
    pub fn sources() -> Vec<String> {
        SERVICES
            .iter()
            .flat_map(|s| (1..=INSTANCES).map(move |i| format!("{s}-{i}")))
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
        let service = SERVICES[self.rng.random_range(0..SERVICES.len())];
        let instance = self.rng.random_range(1..=INSTANCES);
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
    fn sources_cover_every_partition_of_the_demo_stream() {
        let sources = EntryGenerator::sources();
        let partitions: BTreeSet<u32> = sources
            .iter()
            .map(|s| partition_for_source(s, super::super::PARTITIONS))
            .collect();
        assert_eq!(partitions.len(), super::super::PARTITIONS as usize);
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

//! Writing metric families whose samples Cairn computes itself: a
//! family's type, name and help, and its samples with their labels
//! (counters, gauges, and histograms in fixed latency buckets). Shared by
//! `/metrics` (`exposition`) and the figures other modules export
//! (`retention`), and by the node's own families (`encode_family`).

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::MetricType;

use crate::histogram::HistogramSnapshot;

/// Upper bounds of exported latency buckets, in seconds: 5 µs to 10 s.
pub(crate) const BUCKETS_SECONDS: [f64; 21] = [
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

/// A sample's labels: names are fixed, values from bounded sets.
pub type Labels = Vec<(&'static str, String)>;

/// A metric family with a fixed type whose samples we write ourselves.
#[derive(Debug)]
pub struct Samples<'a, V> {
    metric_type: MetricType,
    samples: &'a [(Labels, V)],
}

/// Plain numbers: counters and gauges, integer or float.
pub trait Scalar: EncodeCounterValue + EncodeGaugeValue {}
impl Scalar for u64 {}
impl Scalar for f64 {}

impl<V: Scalar> EncodeMetric for Samples<'_, V> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        for (labels, v) in self.samples {
            let mut e = encoder.encode_family(labels)?;
            match self.metric_type {
                MetricType::Counter => e.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                _ => e.encode_gauge(v)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.metric_type
    }
}

impl EncodeMetric for Samples<'_, HistogramSnapshot> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let bounds_ns: Vec<u64> = BUCKETS_SECONDS
            .iter()
            .map(|s| {
                if s.is_finite() {
                    (s * 1e9) as u64
                } else {
                    u64::MAX
                }
            })
            .collect();
        for (labels, h) in self.samples {
            let cumulative = h.cumulative_counts(&bounds_ns);
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = BUCKETS_SECONDS
                .iter()
                .zip(cumulative)
                .map(|(bound, c)| {
                    let in_bucket = c - previous;
                    previous = c;
                    (*bound, in_bucket)
                })
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum().as_secs_f64(), h.count(), &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes one metric family of plain samples (counters, gauges or
/// histograms); nothing when `samples` is empty. Other crates' collectors
/// (the monitor's) use it too, so every family is encoded one way.
pub fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: &[(Labels, V)],
) -> Result<(), std::fmt::Error>
where
    for<'a> Samples<'a, V>: EncodeMetric,
{
    if samples.is_empty() {
        return Ok(());
    }
    let metric = Samples {
        metric_type,
        samples,
    };
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

//! Deterministic synthetic data in the raw schema, so a fresh clone can run
//! everything without real data. The conversion rate is a known function of the
//! device and a few attributes ([`true_rate`]); conversions are binomial draws.

use std::io::{self, Write};

use super::schema::{Device, attribute_name};
use crate::rng::SplitMix64;

/// Attribute columns in the real data.
pub const ATTRIBUTES: usize = 160;
/// Weeks each keyword × device row is repeated over, as in the real data.
const WEEKS: [i64; 2] = [31, 32];

/// What to generate: keywords `first_entity..first_entity + keywords`.
#[derive(Clone, Copy, Debug)]
pub struct SynthSpec {
    pub first_entity: i64,
    pub keywords: usize,
    pub attributes: usize,
    pub seed: u64,
}

/// The conversion rate the data is drawn from: a device base rate, raised by
/// att1 and by att7 with att12 together, lowered by att3.
pub fn true_rate(attributes: &[u8], device: Device) -> f64 {
    let base: f64 = match device {
        Device::Computer => 0.06,
        Device::Smartphone => 0.035,
        Device::Tablet => 0.045,
    };
    let has = |n: usize| attributes.get(n - 1).is_some_and(|&v| v == 1);
    let mut rate = base;
    if has(1) {
        rate *= 1.8;
    }
    if has(3) {
        rate *= 0.5;
    }
    if has(7) && has(12) {
        rate *= 2.0;
    }
    rate.min(1.0)
}

/// The rate after the drift of [`write_week`]: every rate is raised two and a
/// half times and att1 lowers it instead of raising it, so a model of the old
/// data is clearly wrong on the new.
pub fn drifted_rate(attributes: &[u8], device: Device) -> f64 {
    let rate = true_rate(attributes, device);
    let rate = if attributes.first() == Some(&1) { rate / 1.8 * 0.5 } else { rate };
    (rate * 2.5).min(1.0)
}

/// One keyword's attributes and devices, fixed by (seed, entity) alone so that
/// any range of keywords comes out the same whatever else is generated.
struct Keyword {
    entity: i64,
    attributes: Vec<u8>,
    devices: Vec<Device>,
    rng: SplitMix64,
}

impl Keyword {
    fn new(spec: &SynthSpec, entity: i64) -> Self {
        let mut rng = SplitMix64::new(spec.seed ^ (entity as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Prevalences fall from 0.5 for att1 to about 0.02, like the real data's sparse attributes.
        let attributes =
            (0..spec.attributes).map(|j| u8::from(rng.next_f64() < 0.5 / (1.0 + j as f64 / 8.0))).collect();
        let devices = Device::ALL
            .into_iter()
            .zip([0.95, 0.7, 0.4])
            .filter_map(|(d, p)| (rng.next_f64() < p).then_some(d))
            .collect();
        Keyword { entity, attributes, devices, rng }
    }

    /// Clicks in one week: heavy-tailed, often small, sometimes zero.
    fn clicks(&mut self) -> u64 {
        let u = self.rng.next_f64();
        (2.0 * (-(1.0 - u).ln()).powf(1.6) * 8.0).floor() as u64
    }

    fn conversions(&mut self, clicks: u64, rate: f64) -> u64 {
        (0..clicks).filter(|_| self.rng.next_f64() < rate).count() as u64
    }
}

fn write_header(out: &mut impl Write, spec: &SynthSpec, outcomes: bool) -> io::Result<()> {
    write!(out, "entity_id")?;
    for j in 1..=spec.attributes {
        write!(out, ",{}", attribute_name(j as u32))?;
    }
    writeln!(out, ",device,week{}", if outcomes { ",Clicks,Conversions" } else { "" })
}

fn write_attributes(out: &mut impl Write, attributes: &[u8]) -> io::Result<()> {
    for &v in attributes {
        out.write_all(if v == 1 { b",1" } else { b",0" })?;
    }
    Ok(())
}

/// Training-schema CSV: one row per keyword × device × week. Returns the rows written.
pub fn write_training(spec: &SynthSpec, mut out: impl Write) -> io::Result<u64> {
    write_header(&mut out, spec, true)?;
    let mut rows = 0;
    for entity in spec.first_entity..spec.first_entity + spec.keywords as i64 {
        let mut keyword = Keyword::new(spec, entity);
        for device in keyword.devices.clone() {
            let rate = true_rate(&keyword.attributes, device);
            for week in WEEKS {
                let clicks = keyword.clicks();
                let conversions = keyword.conversions(clicks, rate);
                write!(out, "{}", keyword.entity)?;
                write_attributes(&mut out, &keyword.attributes)?;
                writeln!(out, ",{device},{week},{clicks},{conversions}")?;
                rows += 1;
            }
        }
    }
    Ok(rows)
}

/// Prediction-input CSV: one row per keyword × device, with `week` and no
/// outcomes. Returns the rows written.
pub fn write_prediction_input(spec: &SynthSpec, mut out: impl Write) -> io::Result<u64> {
    write_header(&mut out, spec, false)?;
    let mut rows = 0;
    for entity in spec.first_entity..spec.first_entity + spec.keywords as i64 {
        let keyword = Keyword::new(spec, entity);
        for device in &keyword.devices {
            write!(out, "{}", keyword.entity)?;
            write_attributes(&mut out, &keyword.attributes)?;
            writeln!(out, ",{device},{}", WEEKS[1] + 1)?;
            rows += 1;
        }
    }
    Ok(rows)
}

/// Training-schema CSV of one week: one row per keyword × device, clicks and
/// conversions drawn afresh for that week, at [`drifted_rate`] when `drifted`
/// and [`true_rate`] otherwise. Returns the rows written.
pub fn write_week(spec: &SynthSpec, week: i64, drifted: bool, mut out: impl Write) -> io::Result<u64> {
    write_header(&mut out, spec, true)?;
    let mut rows = 0;
    for entity in spec.first_entity..spec.first_entity + spec.keywords as i64 {
        let mut keyword = Keyword::new(spec, entity);
        // Each week its own draws, the same whichever other weeks are written.
        keyword.rng = SplitMix64::new(keyword.rng.next_u64() ^ (week as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        for device in keyword.devices.clone() {
            let rate = if drifted {
                drifted_rate(&keyword.attributes, device)
            } else {
                true_rate(&keyword.attributes, device)
            };
            let clicks = keyword.clicks();
            let conversions = keyword.conversions(clicks, rate);
            write!(out, "{}", keyword.entity)?;
            write_attributes(&mut out, &keyword.attributes)?;
            writeln!(out, ",{device},{week},{clicks},{conversions}")?;
            rows += 1;
        }
    }
    Ok(rows)
}

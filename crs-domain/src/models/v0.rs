//! v0, the baseline: the click-weighted conversion rate of each device. Every
//! other version must beat it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FitError, ModelVersion, ParamError, Predictor, Progress, TrainingSet};
use crate::data::Device;
use crate::features::Features;

#[derive(Debug)]
pub struct V0;

/// v0 has no hyperparameters; its params.yaml must be empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRates {
    /// Rate over all training clicks, for devices training never saw.
    pub global: f64,
    pub by_device: BTreeMap<Device, f64>,
}

impl DeviceRates {
    pub fn fit(devices: &[Device], clicks: &[f64], conversions: &[f64]) -> Self {
        let mut sums: BTreeMap<Device, (f64, f64)> = BTreeMap::new();
        for ((&device, &n), &k) in devices.iter().zip(clicks).zip(conversions) {
            let entry = sums.entry(device).or_default();
            entry.0 += n;
            entry.1 += k;
        }
        let (n, k) = sums.values().fold((0.0, 0.0), |(n, k), (dn, dk)| (n + dn, k + dk));
        DeviceRates {
            global: if n > 0.0 { k / n } else { 0.0 },
            by_device: sums.into_iter().filter(|(_, (n, _))| *n > 0.0).map(|(d, (n, k))| (d, k / n)).collect(),
        }
    }

    pub fn rate(&self, device: Device) -> f64 {
        self.by_device.get(&device).copied().unwrap_or(self.global)
    }
}

impl Predictor for DeviceRates {
    fn predict(&self, features: &Features) -> Vec<f64> {
        features.devices.iter().map(|&d| self.rate(d)).collect()
    }

    /// Only the device, which is not a matrix column.
    fn used_features(&self) -> Vec<usize> {
        Vec::new()
    }

    fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.by_device.len() * size_of::<(Device, f64)>()
    }
}

impl ModelVersion for V0 {
    const NAME: &'static str = "v0";
    const SUMMARY: &'static str = "baseline: click-weighted conversion rate per device";
    type Params = Params;
    type Fitted = DeviceRates;

    fn check(_: &Params) -> Result<(), ParamError> {
        Ok(())
    }

    fn fit(_: &Params, data: &TrainingSet, _: &mut dyn FnMut(Progress)) -> Result<DeviceRates, FitError> {
        Ok(DeviceRates::fit(&data.features.devices, &data.clicks, &data.conversions))
    }

    fn validate(rates: &DeviceRates, _width: usize) -> Result<(), String> {
        let is_rate = |r: f64| (0.0..=1.0).contains(&r);
        if !is_rate(rates.global) {
            return Err(format!("global rate {} is not in [0, 1]", rates.global));
        }
        match rates.by_device.iter().find(|(_, r)| !is_rate(**r)) {
            Some((device, rate)) => Err(format!("rate of {device} {rate} is not in [0, 1]")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_click_weighted_per_device() {
        let devices = [Device::Computer, Device::Computer, Device::Tablet];
        let rates = DeviceRates::fit(&devices, &[10.0, 30.0, 10.0], &[1.0, 1.0, 5.0]);
        assert!((rates.rate(Device::Computer) - 0.05).abs() < 1e-12);
        assert!((rates.rate(Device::Tablet) - 0.5).abs() < 1e-12);
        assert!((rates.rate(Device::Smartphone) - 7.0 / 50.0).abs() < 1e-12);
    }
}
